"""The manifest: one typed record per scene, read and written here and nowhere else.

``manifest.json`` in a film's folder says, for every scene, its state, its attempts,
the frames written (a hash each) and the node that rendered each run of frames, its
timings; for the film, the nodes avoided and why. The driver changes a record only
through its methods (``started``, ``frame_written``, ``lost``, ``failed``, ``finished``),
so a state change is one call with a name.

    pending ──started──▶ running ──finished──▶ done
       ▲                    │
       └───lost / failed────┘ (failed past its retries: failed)
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from farm.errors import InputError

SceneState = Literal["pending", "running", "done", "failed"]


@dataclass
class FrameRange:
    """Frames ``first``..``last`` of a scene, written in a row from one node's worker."""

    first: int
    last: int
    node: Optional[str]


@dataclass
class SceneRecord:
    index: int
    frames_expected: int
    state: SceneState = "pending"
    attempts: int = 0  # the scene's renders started (a worker lost under it does not count)
    anchor_attempts: int = 0
    failures: list[str] = field(default_factory=list)  # errors of the scene's own code, oldest first
    stalls: list[str] = field(default_factory=list)  # where and after how long its stream hung (dispatch.stall_seconds)
    hashes: dict[str, str] = field(default_factory=dict)  # frame index (as text) -> sha256 prefix of its PNG
    seconds: Optional[float] = None  # the render that finished the scene
    worker: Optional[str] = None  # where it last ran
    state_frame: Optional[int] = None  # the frame the kept renderer state continues after
    ranges: list[FrameRange] = field(default_factory=list)

    @property
    def frames_written(self) -> int:
        return len(self.hashes)

    def has_hash(self, frame: int) -> bool:
        return str(frame) in self.hashes

    # --- state changes --------------------------------------------------------------------------

    def started(self, worker: str) -> None:
        self.state, self.worker = "running", worker
        self.attempts += 1

    def anchor_started(self) -> None:
        self.anchor_attempts += 1

    def lost(self) -> None:
        """Its worker or node died: back to the queue, the attempt not spent."""
        self.state = "pending"
        self.attempts -= 1

    def anchor_lost(self) -> None:
        self.anchor_attempts -= 1

    def failed(self, message: str, final: bool) -> None:
        """Its own code raised ``message``: retried (pending) or, past its retries, failed."""
        self.failures.append(message)
        self.state = "failed" if final else "pending"

    def anchor_failed(self, message: str) -> None:
        """Its anchor's code raised: kept with the scene's failures (the scene's own state is its own)."""
        self.failures.append(message)

    def finished(self, seconds: float) -> None:
        self.state, self.seconds = "done", round(seconds, 3)
        self.state_frame = None

    def interrupted(self) -> None:
        """The run stopped while the scene was running: it is pending for the next one."""
        if self.state == "running":
            self.state = "pending"

    def frame_written(self, frame: int, digest: str, node: Optional[str]) -> None:
        self.hashes[str(frame)] = digest
        last = self.ranges[-1] if self.ranges else None
        if last is not None and last.node == node and last.last == frame - 1:
            last.last = frame
        else:
            self.ranges.append(FrameRange(frame, frame, node))

    # --- as JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        # Field by field, as dataclasses.asdict would, but without its deep copy of every frame's
        # hash (a 7,200-frame film took 250 ms a manifest save, every 2 s while it renders).
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(failures=list(self.failures), stalls=list(self.stalls), hashes=dict(self.hashes),
                   ranges=[{"first": r.first, "last": r.last, "node": r.node} for r in self.ranges],
                   frames_written=self.frames_written)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], index: int) -> "SceneRecord":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("index", index)
        values.setdefault("frames_expected", 0)
        values["ranges"] = [FrameRange(r["first"], r["last"], r.get("node")) for r in values.get("ranges", [])]
        return cls(**values)


@dataclass
class BadNode:
    node: str
    host: str
    reason: str


@dataclass
class Manifest:
    film: str
    scenes: list[SceneRecord]
    created: float = field(default_factory=time.time)
    bad_nodes: list[BadNode] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # spec fields a --rerender-changed run found changed
    updated: Optional[float] = None

    @classmethod
    def new(cls, film: str, frames_per_scene: list[int]) -> "Manifest":
        return cls(film, [SceneRecord(i, n) for i, n in enumerate(frames_per_scene)])

    @property
    def frames_done(self) -> int:
        return sum(s.frames_written for s in self.scenes)

    @property
    def scenes_done(self) -> int:
        return sum(s.state == "done" for s in self.scenes)

    def interrupted(self) -> None:
        for scene in self.scenes:
            scene.interrupted()

    def to_json(self) -> str:
        self.updated = time.time()
        data = {"film": self.film, "created": self.created, "scenes": [s.to_dict() for s in self.scenes],
                "bad_nodes": [dataclasses.asdict(b) for b in self.bad_nodes], "changed": self.changed,
                "updated": self.updated}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str) -> "Manifest":
        """A manifest read back; ``where`` names the file in the one-line error."""
        try:
            data = json.loads(text)
            return cls(film=data.get("film", ""), created=data.get("created", time.time()),
                       scenes=[SceneRecord.from_dict(s, i) for i, s in enumerate(data.get("scenes", []))],
                       bad_nodes=[BadNode(b["node"], b.get("host", "?"), b.get("reason", "")) for b in
                                  data.get("bad_nodes", [])],
                       changed=list(data.get("changed", [])), updated=data.get("updated"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{where}: cannot be read ({exc}); move it away to start this film over") from exc
