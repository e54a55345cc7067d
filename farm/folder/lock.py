"""One run per film folder: ``render``, ``film``, ``stitch`` and resume hold the folder's lock.

The lock is an OS file lock (``flock``) on ``.<film>.lock`` beside the film's folder in OUT, so it
can be taken before the folder exists and is never one of the film's files; it is removed when
its run ends. The kernel lets go of the lock when its process ends, however it ends (a killed
driver leaves at most a file, no lock). The file names its holder (command, pid, host, since)
for the one line a second run stops with, before it has written anything. A process may take a
lock it holds again (``farm film`` holds it, then renders). Local folders only: a film store
URI's remote copy is not locked (docs/OPERATIONS.md), nor is a folder on a network file system
that does not carry flock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from farm.errors import InputError

_HELD: dict[Path, int] = {}  # lock file -> how many times this process holds it


def lock_path(film_dir: Path) -> Path:
    film_dir = Path(film_dir)
    return film_dir.parent / f".{film_dir.name}.lock"


@contextmanager
def folder_lock(film_dir: str | Path, command: str) -> Iterator[None]:
    """Hold the film folder ``film_dir``'s lock for ``command`` (e.g. "farm render"); a folder held
    by another process is one line naming the holder (InputError)."""
    path = lock_path(Path(film_dir)).absolute()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    made, folder = [], path.parent  # the folders the lock makes, deepest first
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _take(path, film_dir)
    except OSError as exc:
        _tidy(made)
        raise InputError(f"{path}: the film folder's lock cannot be made ({exc.strerror})") from exc
    except BaseException:
        _tidy(made)
        raise
    try:
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _HELD[path] = 1
        try:
            yield
        finally:
            del _HELD[path]
            # Gone while still held, so that a run that opened it meanwhile sees it was removed
            # (_take) and takes a new one; OUT keeps only films.
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing lets go of the lock
        _tidy(made)


def _take(path: Path, film_dir: str | Path) -> int:
    """The lock file, opened and locked: the one at ``path`` now (its last holder may have removed
    the one this process opened before it could lock it)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(f"{film_dir}: {holder} is using this film folder; wait for it to end, or stop "
                             "it (one run at a time per film)") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.ftruncate(fd, 0)
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _tidy(made: list[Path]) -> None:
    """Remove OUT again if the lock made it and nothing was put in it (a run that stopped at once)."""
    for folder in made:
        try:
            folder.rmdir()
        except OSError:
            pass


def _holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{data['command']} (pid {data['pid']} on {data['host']}, since {data['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another run"  # it has the lock and has not yet said who it is
