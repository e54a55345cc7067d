"""The latents kept between jobs: where a job starts from, and where a morph bridge runs between.

Each is kept on disk in the film store too (``scenes/NNN/<kind>_latents.npz``), so a
later run starts where this one stopped. The driver moves them; it does not look inside.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from farm.driver.store import FilmStore

Key = tuple[str, int]  # ("anchor" | "scene" | "first", scene index)


class LatentBook:
    def __init__(self, store: FilmStore) -> None:
        self.store = store
        self.known: dict[Key, dict[str, np.ndarray]] = {}

    def save(self, key: Key, arrays: dict[str, np.ndarray], later: bool = False) -> None:
        """Known at once; on disk at once, or with ``later`` once the store settles."""
        self.store.write_arrays(key[1], f"{key[0]}_latents", arrays, later)
        self.known[key] = arrays

    def get(self, key: Key) -> Optional[dict[str, np.ndarray]]:
        """The latents of ``key``, from this run or read back from the store; None when there are none."""
        if key not in self.known:
            arrays = self.store.read_arrays(key[1], f"{key[0]}_latents")
            if arrays is None:
                return None
            self.known[key] = arrays
        return self.known[key]

    def __contains__(self, key: Key) -> bool:
        return key in self.known
