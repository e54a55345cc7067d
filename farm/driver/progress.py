"""Progress reporters: what a person or a program sees while a film renders.

The film run emits events (dicts with an ``event`` key):

    film        once at the start: film, path, scenes, frames_total, frames_done, changed
    frames      one per batch of frames written: scene, first, last, count, frames_done,
                frames_total, scenes_done, scenes_running, workers, fps, eta_s
    scene       started | resumed | done | lost | failed, with scene (from 0) and details
    worker      ready | dropped, with node, host and the pool's size; ready with timings (seconds
                of the worker's start: torch_s, imports_s of the model libraries, build_s)
    node        avoided, with node, host and reason
    autoscaler  bundles asked of the autoscaler (0: request withdrawn)

``TerminalProgress`` draws them with tqdm (a bar of frames, and a status line of
scenes, workers, frames per second and ETA); ``JsonProgress`` writes one JSON
object per line; both take the one-line messages too.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any, Callable, Optional

from farm.errors import printable


class Reporter:
    """What the driver tells: one-line messages for a person (``say``) and events for a program (``emit``)."""

    def __init__(self, say: Optional[Callable[[str], None]] = None,
                 events: Optional[Callable[[dict[str, Any]], None]] = None) -> None:
        self.say = say or (lambda message: None)
        self.events = events

    def emit(self, event: str, **fields: Any) -> None:
        if self.events is not None:
            self.events({"event": event, "time": round(time.time(), 3), **fields})


class JsonProgress:
    """``--progress json``: one JSON object per line (events, and messages as {"event": "message"})."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream or sys.stdout

    def event(self, event: dict[str, Any]) -> None:
        self.stream.write(json.dumps(event, separators=(",", ":")) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.event({"event": "message", "time": round(time.time(), 3), "text": text})

    def close(self) -> None:
        pass


class TerminalProgress:
    """A live bar in a terminal (tqdm on stderr); messages print above it."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None
        self.scenes = (0, 0, 0)  # done, running, total
        self.workers = 0

    def event(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        kind = event["event"]
        if kind == "film":
            self.scenes = (0, 0, event["scenes"])
            self.bar = tqdm(total=event["frames_total"], initial=event["frames_done"], unit="frame",
                            file=self.stream, dynamic_ncols=True, desc=event["film"], smoothing=0.1)
        elif kind == "worker":
            self.workers = event["workers"]
        elif kind == "frames" and self.bar is not None:
            self.scenes = (event["scenes_done"], event["scenes_running"], self.scenes[2])
            self.bar.update(event["frames_done"] - self.bar.n)
        elif kind == "scene" and event["state"] == "done":
            self.scenes = (event["scenes_done"], max(0, self.scenes[1] - 1), self.scenes[2])
        if self.bar is not None:
            done, running, total = self.scenes
            self.bar.set_postfix_str(f"scenes {done}/{total} ({running} running), {self.workers} workers",
                                     refresh=True)

    def message(self, text: str) -> None:
        from tqdm import tqdm

        if self.bar is not None:
            tqdm.write(printable(text), file=self.stream)
        else:
            print(printable(text), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PlainProgress:
    """Messages only, one per line on stderr (not a terminal: a log file, a CI job)."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream or sys.stderr

    def event(self, event: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        print(printable(text), file=self.stream, flush=True)

    def close(self) -> None:
        pass


def reporter(mode: str, quiet: bool = False):
    """The reporter for ``--progress auto|bar|plain|json`` (auto: a bar in a terminal, else plain)."""
    if quiet:
        return None
    if mode == "json":
        return JsonProgress()
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return TerminalProgress()
    return PlainProgress()
