"""Morph bridges: BigGAN frames along the way from one scene's last latents to the next one's first.

A bridge is asked of a worker as soon as both of its scenes are rendered (and so both
latents are known), and collected at the end of the run; its frames go into the
first scene's folder (``bridge_00000.png`` ...), and the driver calls back once they
are on disk.
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
        self.asked: dict[int, Any] = {}  # bridge after scene k -> the worker's answer

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

    def request(self, actor: Any) -> None:
        """Queue on ``actor`` every missing bridge whose two scenes' latents are known."""
        for k in self.missing():
            ends = [("scene", k), ("first", k + 1)]
            if all(key in self.latents or (self.store.scene_complete(key[1]) and self.latents.get(key) is not None)
                   for key in ends):
                start, end = (self.latents.get(key) for key in ends)
                self.asked[k] = actor.bridge.remote(start, end, self.frames, self.spec.render)

    def collect(self, actors: list[Any]) -> None:
        """Ask what is still missing of the first of ``actors``, then wait for every bridge and write it."""
        import ray

        if self.missing() and actors:
            self.request(actors[0])
        if self.missing():
            raise RenderError(f"the morph after scene {self.missing()[0] + 1} has no latents to start from; "
                              "remove that scene's folder to render it again")
        for k, ref in sorted(self.asked.items()):
            for i, png in enumerate(ray.get(ref)):
                self.store.put(bridge_path(self.store.path, k, i), png)
            self.on_bridge(k)
        self.asked.clear()
