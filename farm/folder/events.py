"""The film's progress events on disk: ``events.jsonl`` in its folder, one JSON object a line.

``farm render`` (``farm.film.render_film``) appends every event its reporter emits
(farm.driver.progress: ``film``, ``frames``, ``scene``, ``worker``, ``node``,
``autoscaler``), framed by a ``run`` event when the run starts (``state: started``, with
the driver's ``pid`` and ``host``) and one when it ends (``finished``, ``stopped`` or
``failed``, with the error's line). Readers (``farm serve``) follow the file by offset;
a line still being written (no newline yet) is left for the next read.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from farm.folder.layout import EVENTS_NAME


class EventLog:
    """Appends events to a film folder's ``events.jsonl`` (one writer: the film's driver)."""

    def __init__(self, film_dir: Path) -> None:
        self.path = Path(film_dir) / EVENTS_NAME
        self.broken = False

    def append(self, event: dict[str, Any]) -> None:
        if self.broken:
            return
        line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
        except OSError:
            self.broken = True  # progress on disk is for watching: a full disk must not stop the render

    def run_started(self) -> None:
        self.append({"event": "run", "state": "started", "time": round(time.time(), 3), "pid": os.getpid(),
                     "host": socket.gethostname()})

    def run_ended(self, state: str, error: str = "") -> None:
        event: dict[str, Any] = {"event": "run", "state": state, "time": round(time.time(), 3)}
        if error:
            event["error"] = error
        self.append(event)


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The whole lines of ``path`` from byte ``offset`` on, as events, and the offset after them.

    A line that is not a JSON object is skipped; a missing file is no events.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end
