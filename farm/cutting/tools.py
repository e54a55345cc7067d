"""The ffmpeg binary: finding it, and running it with an argument list (never a shell).

Paths reach ffmpeg as separate arguments with a ``file:`` prefix, so a name
with spaces, quotes, colons or percent signs is only ever a file name. Filter
graphs never contain a user's text or path: files a filter reads are given
safe names in a private working folder (see segments.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from farm.errors import StitchError

STDERR_TAIL = 3  # lines of ffmpeg's own words kept in an error


def find_ffmpeg(configured: str | None = None) -> str:
    """``video.ffmpeg`` (given on the command line), else ``$FARM_FFMPEG``, else imageio-ffmpeg's
    static build, else ``ffmpeg`` on PATH. Never one a spec file or film.yaml names."""
    for where, value in (("video.ffmpeg", configured), ("$FARM_FFMPEG", os.environ.get("FARM_FFMPEG"))):
        if value:
            path = shutil.which(value) or (value if os.access(value, os.X_OK) else None)
            if not path:
                raise StitchError(f"{where}: {value} is not an executable ffmpeg")
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


def file_arg(path: Path) -> str:
    """A path as ffmpeg must read it: a file, whatever characters its name holds."""
    return "file:" + str(Path(path).resolve())


def stderr_tail(stderr: bytes, lines: int = STDERR_TAIL) -> str:
    kept = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) if kept else "no message"


def run_ffmpeg(exe: str, args: Sequence[str], what: str, cwd: Path | None = None,
               stdin: bytes | None = None) -> bytes:
    """Run ffmpeg; its stdout, or a one-line StitchError with the tail of its stderr."""
    command = [exe, "-hide_banner", "-loglevel", "error", "-y", *args]
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, **feed)
    except OSError as exc:
        raise StitchError(f"ffmpeg could not run ({exe}): {exc.strerror or exc}") from exc
    if done.returncode != 0:
        raise StitchError(f"ffmpeg failed on {what} (exit {done.returncode}): {stderr_tail(done.stderr)}")
    return done.stdout
