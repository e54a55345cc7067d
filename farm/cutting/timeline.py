"""One timeline for pictures, subtitles and narration: every tool places a scene at the same frame.

The rule, with ``t = round(transition_seconds * fps)`` frames and n scenes:

- ``cut``: scenes follow each other; the film has the sum of their frames.
- ``crossfade``: the last t frames of scene k blend into the first t frames of
  scene k+1 (they overlap), so the film is ``(n-1) * t`` frames shorter.
- ``morph``: t bridge frames are inserted between scene k and scene k+1, so the
  film is ``(n-1) * t`` frames longer.

A scene's *first frame* on the timeline is where its own picture starts (the
start of the crossfade into it); its *slot* runs from there to the next scene's
first frame (the last runs to the end). Its subtitle and its narration live in
its slot. A scene may be *held*: its last frame repeated ``hold`` times, so its
slot fits its speech (``farm stitch`` with narration the render did not plan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from farm.errors import SpecError


@dataclass(frozen=True)
class Timeline:
    fps: int
    transition: str  # cut, crossfade or morph: what the film is made with
    transition_frames: int  # t
    frames: tuple[int, ...]  # frames rendered per scene
    hold: tuple[int, ...] = field(default=())  # last-frame repeats per scene

    def __post_init__(self) -> None:
        if not self.hold:
            object.__setattr__(self, "hold", tuple(0 for _ in self.frames))

    @property
    def scenes(self) -> int:
        return len(self.frames)

    def length(self, k: int) -> int:
        """Scene k's frames as shown: rendered frames plus held copies of its last."""
        return self.frames[k] + self.hold[k]

    @property
    def t(self) -> int:
        return 0 if self.transition == "cut" else self.transition_frames

    def step(self, k: int) -> int:
        """Frames from scene k's first frame to scene k+1's."""
        if self.transition == "crossfade":
            return self.length(k) - self.t
        if self.transition == "morph":
            return self.length(k) + self.t
        return self.length(k)

    def first_frames(self) -> list[int]:
        starts, at = [], 0
        for k in range(self.scenes):
            starts.append(at)
            at += self.step(k)
        return starts

    @property
    def total(self) -> int:
        bonus = {"crossfade": -1, "morph": 1}.get(self.transition, 0) * self.t * (self.scenes - 1)
        return sum(self.length(k) for k in range(self.scenes)) + bonus

    def slots(self) -> list[tuple[int, int]]:
        """Each scene's (first frame, end frame): where its subtitle and narration go."""
        starts = self.first_frames()
        return [(s, starts[k + 1] if k + 1 < self.scenes else self.total) for k, s in enumerate(starts)]

    def seconds(self, frame: int) -> float:
        return frame / self.fps

    @property
    def duration(self) -> float:
        return self.total / self.fps

    def to_dict(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "transition": self.transition,
            "transition_frames": self.t,
            "frames": self.total,
            "seconds": round(self.duration, 6),
            "scenes": [{"first_frame": s, "frames": self.frames[k], "hold": self.hold[k]}
                       for k, s in enumerate(self.first_frames())],
        }


def transition_frames(fps: int, seconds: float) -> int:
    return round(seconds * fps)


def check_transitions(frames: list[int], transition: str, t: int) -> None:
    """A transition longer than a scene is an error naming the scene."""
    if transition == "cut" or t == 0 or len(frames) < 2:
        return
    for k, count in enumerate(frames):
        sides = 1 if transition == "morph" else (k > 0) + (k < len(frames) - 1)
        if count < t * sides:
            what = f"{'two ' if sides == 2 else 'a '}{transition}{'s' if sides == 2 else ''} of {t} frames"
            raise SpecError("video.transition_seconds",
                            f"scene {k + 1} has {count} frames, too short for {what}; "
                            f"shorten the transition or lengthen the scene")


def make_timeline(frames: list[int], fps: int, transition: str, t: int, hold: list[int] | None = None) -> Timeline:
    check_transitions(frames, transition, t)
    return Timeline(fps=fps, transition=transition, transition_frames=t if transition != "cut" else 0,
                    frames=tuple(frames), hold=tuple(hold or [0] * len(frames)))
