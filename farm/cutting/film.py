"""Cutting a film: plan its timeline (narration included), encode pieces as scenes finish, join, check.

Used by the pipeline while rendering (farm.film: ``plan_cut`` before the first frame,
``FilmCutter.scene_ready`` as the driver says each scene is on disk, ``finish`` at the
end) and by ``farm stitch`` on a film already rendered (stitch.py).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from farm.cutting import narration as narr
from farm.cutting.segments import Encoding, Piece, Source, burned_cues, encode_audio, encode_piece, join, piece_key
from farm.cutting.sheet import ContactSheet, poster
from farm.cutting.subtitles import cues, make_ass, make_srt, make_vtt
from farm.cutting.timeline import Timeline, make_timeline, transition_frames
from farm.cutting.verify import verify_film
from farm.folder.layout import (
    BRIDGE_PATTERN,
    CONTACT_NAME,
    FRAME_PATTERN,
    POSTER_NAME,
    SRT_NAME,
    VIDEO_NAME,
    VTT_NAME,
    atomic_write,
    scene_dir,
    segments_dir,
)
from farm.spec import FilmSpec

Say = Callable[[str], None]


@dataclass(frozen=True)
class CutPlan:
    spec: FilmSpec  # scene durations stretched to fit their speech (when rendering)
    timeline: Timeline
    speech: Optional[narr.Speech]

    @property
    def bridge_frames(self) -> int:
        """Frames of each morph bridge the renderer is to make (0: the film has no morphs)."""
        return self.timeline.t if self.timeline.transition == "morph" else 0


@dataclass(frozen=True)
class StitchResult:
    video: Path
    srt: Path
    vtt: Path
    contact: Path
    poster: Path
    timeline: Timeline
    checked: dict


def effective_transition(spec: FilmSpec, bridges: bool, say: Say) -> str:
    if spec.video.transition == "morph" and not bridges:
        say("video.transition: morph needs the renderer's bridge frames, not available here; using crossfade")
        return "crossfade"
    return spec.video.transition


def plan_cut(spec: FilmSpec, exe: str, say: Say, film_dir: Optional[Path] = None, bridges: bool = False,
             hold_to_fit: bool = False) -> CutPlan:
    """The film's timeline, its narration spoken, and each scene made long enough to say it.

    Rendering (``hold_to_fit`` False) lengthens a scene's duration, so more frames
    are rendered; ``farm stitch`` (True) holds the scene's last frame instead.
    """
    video = spec.video
    transition = effective_transition(spec, bridges, say)
    t = transition_frames(video.fps, video.transition_seconds)
    original = spec.frames_per_scene()
    counts = list(original)
    timeline = make_timeline(counts, video.fps, transition, t)
    cache = segments_dir(film_dir) / "narration" if film_dir is not None else None
    speech = narr.synthesize([s.narration for s in spec.scenes], video, exe, say, cache=cache)
    if speech is None:
        return CutPlan(spec, timeline, None)
    hold = [0] * len(counts)
    for k, (start, end) in enumerate(timeline.slots()):
        extra = speech.frames_needed(k, video.fps) - (end - start)
        if extra > 0:
            if hold_to_fit:
                hold[k] = extra
            else:
                counts[k] += extra
    lengthened = sum(n != old for n, old in zip(counts, original)) + sum(map(bool, hold))
    if lengthened:
        spec = dataclasses.replace(spec, scenes=[s if n == old else dataclasses.replace(s, duration=n / video.fps)
                                                 for s, n, old in zip(spec.scenes, counts, original)])
        assert spec.frames_per_scene() == counts
        timeline = make_timeline(counts, video.fps, transition, t, hold)
        how = "holding their last frame" if hold_to_fit else "rendering more frames"
        say(f"narration: {lengthened} scene(s) lengthened to fit their speech ({how})")
    return CutPlan(spec, timeline, speech)


class FilmCutter:
    """Encodes a film's pieces as its scenes complete, then joins, checks and illustrates it."""

    def __init__(self, plan: CutPlan, film_dir: Path, exe: str, say: Say) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.timeline = plan.timeline
        self.film_dir = Path(film_dir)
        self.exe = exe
        self.say = say
        video = self.spec.video
        self.encoding = Encoding(video.fps, video.size, video.played_size, video.codec, video.crf, video.preset,
                                 video.pix_fmt)
        self.cues = cues([s.narration for s in self.spec.scenes], self.timeline)
        self.burn = video.subtitles == "burn"
        self.folder = segments_dir(self.film_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pieces = self.make_pieces()
        self.futures: dict[str, Future] = {}
        self.ready: set[int] = set()
        self.bridges: set[int] = set()
        self.sheet = ContactSheet([s.visual_prompt for s in self.spec.scenes])
        self.thumbnails: dict[int, Future] = {}
        # Two at a time: the last scene's body and the transition into it encode side by side.
        self.encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="farm-cutting")
        self.audio: Optional[Future] = None
        if plan.speech is not None:
            narr.save_clips(plan.speech, [s.narration for s in self.spec.scenes], video, self.folder / "narration")
            self.audio = self.encoder.submit(self.make_audio)

    # --- the pieces ------------------------------------------------------------------------

    def make_pieces(self) -> list[tuple[Piece, tuple[int, ...]]]:
        """Every piece in film order, with the scenes (and bridges, as -1-k) it waits for."""
        tl, n = self.timeline, self.timeline.scenes
        t = tl.t
        out: list[tuple[Piece, tuple[int, ...]]] = []
        at = 0

        def source(k: int, start: int, count: int) -> Source:
            return Source(scene_dir(self.film_dir, k), FRAME_PATTERN, tl.frames[k], start, count)

        for k in range(n):
            length = tl.length(k)
            head = t if tl.transition == "crossfade" and k > 0 else 0
            tail = t if tl.transition == "crossfade" and k < n - 1 else 0
            if k > 0 and t:
                if tl.transition == "crossfade":
                    piece = Piece(f"xfade-{k - 1:03d}-{k:03d}",
                                  (source(k - 1, tl.length(k - 1) - t, t), source(k, 0, t)), t, at)
                    out.append((piece, (k - 1, k)))
                else:  # morph: the bridge frames, rendered into scene k-1's folder
                    bridge = Source(scene_dir(self.film_dir, k - 1), BRIDGE_PATTERN, t, 0, t)
                    out.append((Piece(f"morph-{k - 1:03d}-{k:03d}", (bridge,), t, at), (-k,)))
                at += t
            body = length - head - tail
            if body > 0:
                out.append((Piece(f"body-{k:03d}", (source(k, head, body),), body, at), (k,)))
                at += body
        assert at == tl.total, (at, tl.total)
        return out

    def submit_ready(self) -> None:
        for piece, needs in self.pieces:
            if piece.name in self.futures:
                continue
            if all((k in self.ready) if k >= 0 else (-k - 1 in self.bridges) for k in needs):
                self.futures[piece.name] = self.encoder.submit(self.encode, piece)

    def encode(self, piece: Piece) -> Path:
        burn = burned_cues(piece, self.cues, self.timeline.fps) if self.burn else []
        out = self.folder / f"{piece.name}-{piece_key(piece, self.encoding, burn)}.mp4"
        if out.is_file():
            return out
        return encode_piece(piece, self.encoding, burn, out, self.exe)

    def scene_ready(self, k: int) -> None:
        """Scene k's frames are all on disk: encode what no longer waits."""
        self.ready.add(k)
        self.submit_ready()
        self.thumbnails[k] = self.encoder.submit(self.sheet.add, k, self.middle_frame(k))

    def middle_frame(self, k: int) -> Path:
        return scene_dir(self.film_dir, k) / (FRAME_PATTERN % (self.timeline.frames[k] // 2))

    def bridge_ready(self, k: int) -> None:
        """The morph bridge from scene k to scene k+1 is on disk."""
        self.bridges.add(k)
        self.submit_ready()

    def make_audio(self) -> Path:
        assert self.plan.speech is not None
        samples = narr.track(self.plan.speech, self.timeline)
        wav = self.folder / "narration.wav"
        atomic_write(wav, narr.wav_bytes(samples))
        return encode_audio(wav, self.folder / "narration.m4a", self.exe)

    # --- the film ----------------------------------------------------------------------------

    def finish(self) -> StitchResult:
        """Wait for the pieces, join them, check the film, write subtitles, contact sheet and poster."""
        try:
            missing = [piece.name for piece, _ in self.pieces if piece.name not in self.futures]
            assert not missing, f"pieces never became ready: {missing}"
            files = [self.futures[piece.name].result() for piece, _ in self.pieces]
            # The pictures are drawn while the film is joined and checked.
            pictures = self.encoder.submit(self.illustrate)
            audio = self.audio.result() if self.audio is not None else None
            video = self.join_and_check(files, audio)
            self.film_written_at = time.perf_counter()  # film.mp4 written and checked (benchmarks read it)
            contact, cover = pictures.result()
        finally:
            self.encoder.shutdown(wait=True, cancel_futures=True)
        self.say(f"film written: {video} ({self.timeline.total} frames, {self.timeline.duration:.2f}s, "
                 f"{self.timeline.transition}, subtitles {self.spec.video.subtitles}"
                 f"{', narrated' if audio else ''})")
        return StitchResult(video, self.film_dir / SRT_NAME, self.film_dir / VTT_NAME, contact, cover,
                            self.timeline, self.checked)

    def join_and_check(self, files: list[Path], audio: Optional[Path]) -> Path:
        srt, vtt = self.film_dir / SRT_NAME, self.film_dir / VTT_NAME
        atomic_write(srt, make_srt(self.cues).encode())
        atomic_write(vtt, make_vtt(self.cues).encode())
        soft = None
        if self.spec.video.subtitles == "soft":
            soft = self.folder / "soft.ass"
            atomic_write(soft, make_ass(self.cues, self.spec.video.played_size, burn=False).encode())
        video = join(files, self.film_dir / VIDEO_NAME, self.exe, self.spec.video.codec, audio, soft)
        self.checked = verify_film(video, self.timeline, self.spec.video.played_size, self.spec.video.codec,
                                   audio=audio is not None, subtitles=soft is not None)
        keep = set(files) | {p for p in (audio, soft) if p is not None}
        self.tidy(keep)
        return video

    def tidy(self, keep: set[Path]) -> None:
        """Pieces made for other settings are derived data: keep only this film's."""
        for path in self.folder.glob("*.mp4"):
            if path not in keep:
                path.unlink(missing_ok=True)

    def illustrate(self) -> tuple[Path, Path]:
        tl = self.timeline
        for k in range(tl.scenes):
            self.thumbnails[k].result()
        contact = self.sheet.save(self.film_dir / CONTACT_NAME)
        cover = poster(self.middle_frame(tl.scenes // 2), self.spec.title, self.film_dir / POSTER_NAME)
        return contact, cover

    def close(self) -> None:
        self.encoder.shutdown(wait=False, cancel_futures=True)
