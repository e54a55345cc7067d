"""Frames -> per-scene segments -> one H.264 film with subtitles, through ffmpeg.

The ffmpeg binary is, in order: the one the spec names (``video.ffmpeg``), the
static build shipped by imageio-ffmpeg, or ``ffmpeg`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import ffmpeg

from farm.errors import StitchError
from farm.spec import FilmSpec


def find_ffmpeg(configured: str | None = None) -> str:
    if configured:
        path = shutil.which(configured) or (configured if os.access(configured, os.X_OK) else None)
        if not path:
            raise StitchError(f"video.ffmpeg: {configured} is not an executable ffmpeg")
        return path
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        pass
    path = shutil.which("ffmpeg")
    if not path:
        raise StitchError("no ffmpeg found: install imageio-ffmpeg, put ffmpeg on PATH, or set video.ffmpeg")
    return path


def _run(stream, exe: str, what: str) -> None:
    try:
        stream.run(cmd=exe, capture_stdout=True, capture_stderr=True, overwrite_output=True)
    except ffmpeg.Error as exc:
        lines = [line for line in (exc.stderr or b"").decode(errors="replace").splitlines() if line.strip()]
        raise StitchError(f"ffmpeg failed on {what}: {lines[-1] if lines else 'no message'}") from exc
    except OSError as exc:
        raise StitchError(f"ffmpeg could not run ({exe}): {exc.strerror}") from exc


def encode_segment(frames_dir: Path, pattern: str, frames: int, fps: int, crf: int, out: Path, exe: str) -> Path:
    """A scene's PNG frames -> ``out`` (H.264, yuv420p, exactly ``frames`` frames at ``fps``)."""
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    stream = (
        ffmpeg.input(str(frames_dir / pattern), framerate=fps, start_number=0)
        .output(str(tmp), vcodec="libx264", pix_fmt="yuv420p", crf=crf, r=fps, frames=frames,
                preset="veryfast", movflags="+faststart", an=None)
    )
    _run(stream, exe, f"segment {out}")
    os.replace(tmp, out)
    return out


def srt_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def scene_times(spec: FilmSpec) -> list[tuple[float, float]]:
    """Each scene's (start, end) on the film's timeline, in seconds, from its frame count."""
    times, start = [], 0
    for frames in spec.frames_per_scene():
        times.append((start / spec.video.fps, (start + frames) / spec.video.fps))
        start += frames
    return times


def make_srt(spec: FilmSpec) -> str:
    blocks = []
    for number, (scene, (start, end)) in enumerate(zip(spec.scenes, scene_times(spec)), start=1):
        text = "\n".join(line.strip() for line in scene.narration.strip().splitlines() if line.strip())
        blocks.append(f"{number}\n{srt_time(start)} --> {srt_time(end)}\n{text}\n")
    return "\n".join(blocks)


def join_segments(segments: Sequence[Path], srt: Path | None, out: Path, exe: str) -> Path:
    """Concatenate segments (stream copy, no re-encode) and add ``srt`` as a soft subtitle track."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out.parent, delete=False) as listing:
        for segment in segments:
            escaped = str(segment.resolve()).replace("'", "'\\''")
            listing.write(f"file '{escaped}'\n")
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        video = ffmpeg.input(listing.name, f="concat", safe=0)
        if srt is not None:
            subs = ffmpeg.input(str(srt))
            stream = ffmpeg.output(video["v"], subs["s"], str(tmp), c="copy", **{"c:s": "mov_text"},
                                   movflags="+faststart", **{"metadata:s:s:0": "language=eng"})
        else:
            stream = ffmpeg.output(video["v"], str(tmp), c="copy", movflags="+faststart")
        _run(stream, exe, f"film {out}")
        os.replace(tmp, out)
    finally:
        Path(listing.name).unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out
