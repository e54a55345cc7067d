"""Scene seeds, derived and never global (no torch here: the driver derives them too)."""

from __future__ import annotations

import hashlib


def derive_seed(film_seed: int, scene_index: int, rendering_pass: int = 0) -> int:
    """Scene seeds are derived, never global: the same (film, scene, pass) gives the same seed anywhere."""
    digest = hashlib.sha256(f"farm:{film_seed}:{scene_index}:{rendering_pass}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
