"""Morph bridges: BigGAN frames along the way from one scene's last latents to the next one's first.

A bridge is a job of its own: as soon as both of its scenes are rendered (and so both
latents are known) the dispatcher gives it to an idle worker and waits for it with the
frame streams. A bridge whose worker dies or hangs is asked again of another worker, as
a scene is (see farm.driver.dispatch). Its frames go into the first scene's folder
(``bridge_00000.png`` ...), and the driver calls back once they are on disk.
"""

from __future__ import annotations

from typing import Any, Callable

from farm.driver.latents import LatentBook
from farm.driver.store import FilmStore
from farm.errors import RenderError
from farm.folder.layout import bridge_files, bridge_on_disk, bridge_path
from farm.spec import FilmSpec


class Bridges:
    def __init__(self, spec: FilmSpec, store: FilmStore, latents: LatentBook, frames: int,
                 on_bridge: Callable[[int], None]) -> None:
        """``frames``: frames per bridge, 0 when the film has no morphs."""
        self.spec, self.store, self.latents = spec, store, latents
        self.frames = frames
        self.on_bridge = on_bridge
        self.asked: set[int] = set()  # bridges after these scenes are on a worker now

    def on_disk(self, k: int) -> bool:
        return bridge_on_disk(self.store.path, k, self.frames)

    def forget(self, k: int) -> None:
        """The bridge after scene k is stale (one of its scenes is rendered again)."""
        for path in bridge_files(self.store.path, k):
            self.store.remove(path)

    def missing(self) -> list[int]:
        if not self.frames:
            return []
        return [k for k in range(len(self.spec.scenes) - 1) if k not in self.asked and not self.on_disk(k)]

    def known(self, key: tuple[str, int]) -> bool:
        return key in self.latents or (self.store.scene_complete(key[1]) and self.latents.get(key) is not None)

    def ready(self) -> list[int]:
        """The missing bridges whose two scenes' latents are known: ready to ask of a worker."""
        return [k for k in self.missing() if self.known(("scene", k)) and self.known(("first", k + 1))]

    def ask(self, k: int, actor: Any) -> Any:
        """Ask ``actor`` for the bridge after scene k; its answer's reference."""
        self.asked.add(k)
        start, end = self.latents.get(("scene", k)), self.latents.get(("first", k + 1))
        return actor.bridge.remote(start, end, self.frames, self.spec.render)

    def again(self, k: int) -> None:
        """The bridge after scene k was lost with its worker: ready to ask of another."""
        self.asked.discard(k)

    def write(self, k: int, pngs: list[bytes]) -> None:
        self.asked.discard(k)
        for i, png in enumerate(pngs):
            self.store.put(bridge_path(self.store.path, k, i), png)
        self.on_bridge(k)

    def check_done(self) -> None:
        """Every bridge is on disk, or one says why it cannot be made."""
        if self.missing():
            raise RenderError(f"the morph after scene {self.missing()[0] + 1} has no latents to start from; "
                              "remove that scene's folder to render it again")
