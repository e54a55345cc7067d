"""The ffmpeg binary: finding it, and running it with an argument list (never a shell).

Paths reach ffmpeg as separate arguments with a ``file:`` prefix, so a name
with spaces, quotes, colons or percent signs is only ever a file name. Filter
graphs never contain a user's text or path: files a filter reads are given
safe names in a private working folder (see segments.py).

Every run has a timeout scaled to its work (``ffmpeg_timeout``), generous: an
ffmpeg that hangs (a stuck pipe, a file system that stopped answering) is
killed and its piece is one line, not a film that never ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Sequence

from farm.errors import StitchError

STDERR_TAIL = 3  # lines of ffmpeg's own words kept in an error
# ffmpeg's timeout: a base for starting and small files, and so much more per frame encoded or MB read.
FFMPEG_BASE_S = 600.0
FFMPEG_PER_FRAME_S = 2.0  # an h265 "slow" encode on a busy CPU does tens of frames a second
FFMPEG_PER_MB_S = 1.0  # stream copy and audio: a slow disk reads more than 1 MB a second


def ffmpeg_timeout(frames: int = 0, megabytes: float = 0.0) -> float:
    """Seconds an ffmpeg run that encodes ``frames`` frames or reads ``megabytes`` MB may take."""
    return FFMPEG_BASE_S + FFMPEG_PER_FRAME_S * frames + FFMPEG_PER_MB_S * megabytes


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
               stdin: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run ffmpeg; its stdout, or a one-line StitchError with the tail of its stderr.

    ``timeout``: seconds before ffmpeg is killed (a StitchError saying so); None: ``ffmpeg_timeout()``.
    """
    command = [exe, "-hide_banner", "-loglevel", "error", "-y", *args]
    feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    timeout = ffmpeg_timeout() if timeout is None else timeout
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=timeout, **feed)
    except subprocess.TimeoutExpired as exc:
        raise StitchError(f"ffmpeg timed out on {what}: no result after {timeout:g}s, stopped "
                          "(a hung ffmpeg, or a far slower machine or disk than expected)") from exc
    except OSError as exc:
        raise StitchError(f"ffmpeg could not run ({exe}): {exc.strerror or exc}") from exc
    if done.returncode != 0:
        output = args[-1][len("file:"):] if args and str(args[-1]).startswith("file:") else None
        into = f" writing {output}" if output else ""
        raise StitchError(f"ffmpeg failed on {what}{into} ({exit_words(done.returncode)}): "
                          f"{stderr_tail(done.stderr)}")
    return done.stdout


def exit_words(code: int) -> str:
    """An exit status as words: ``exit 1``, or the signal that ended it (``killed by SIGXFSZ: ...``)."""
    if code >= 0:
        return f"exit {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        return f"killed by signal {-code}"
    why = {"SIGXFSZ": ": the file grew past what the disk or the file size limit allows",
           "SIGKILL": ": out of memory, or stopped from outside"}.get(name, "")
    return f"killed by {name}{why}"

