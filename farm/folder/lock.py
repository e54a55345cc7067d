"""One run per film folder: ``render``, ``film``, ``stitch`` and resume hold the folder's lock.

The lock is an OS file lock (``flock``) on ``.<film>.lock`` beside the film's folder in OUT, so it
can be taken before the folder exists and is never one of the film's files; it is removed when
its run ends. The kernel lets go of the lock when its process ends, however it ends (a killed
driver leaves at most a file, no lock). The file names its holder (command, pid, host, since)
for the one line a second run stops with, before it has written anything. A process may take a
lock it holds again (``farm film`` holds it, then renders). A folder on a network file system
that does not carry flock is not locked across machines.

A film store URI's film (``s3://``, ``gs://``, ``file://``; farm.folder.remote) has a lock object
beside it in the store, ``.<film>.lock.json`` (:func:`store_lock`): its holder (command, pid, host,
since), a token of its own and a heartbeat, rewritten every ``HEARTBEAT_SECONDS`` while the run
goes on. An object store has no flock, and pyarrow no conditional write, so the lock is taken by
writing it and reading it back ``SETTLE_SECONDS`` later: of two runs that wrote it at once, the one
whose token is there holds it, the other stops. A run that ends removes its lock; one that is
killed leaves it, and its heartbeat stops: a lock whose heartbeat is older than
``STALE_SECONDS`` (10 minutes; the machines' clocks are assumed to agree within a minute or two)
is stale, and the next run takes it over, saying so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from farm.errors import InputError
from farm.folder.remote import Remote

_HELD: dict[Path, int] = {}  # lock file -> how many times this process holds it


def lock_path(film_dir: Path) -> Path:
    film_dir = Path(film_dir)
    return film_dir.parent / f".{film_dir.name}.lock"


@contextmanager
def folder_lock(film_dir: str | Path, command: str, name: Optional[str] = None) -> Iterator[None]:
    """Hold the film folder ``film_dir``'s lock for ``command`` (e.g. "farm render"); a folder held
    by another process is one line naming the holder (InputError), and the film as ``name`` says
    (a film store's URI for its local copy; default: ``film_dir``)."""
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
        fd = _take(path, name or film_dir)
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


# --- the lock of a film in a film store (an object beside it) ---------------------------------

STALE_SECONDS = 600.0  # a remote lock whose heartbeat is older than this is stale: taken over
HEARTBEAT_SECONDS = 60.0  # how often a run rewrites its lock's heartbeat
SETTLE_SECONDS = 1.0  # written, then read back this much later: the token there holds the lock
_HELD_REMOTE: dict[str, int] = {}  # lock object -> how many times this process holds it


def store_lock_name(slug: str) -> str:
    return f".{slug}.lock.json"


@contextmanager
def store_lock(remote: Remote, slug: str, command: str,
               say: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold the lock of the film ``slug`` in the film store ``remote`` for ``command``: a film held
    by a run elsewhere (a lock whose heartbeat is fresh) is one line naming the holder
    (InputError), before anything is written; a stale one is taken over, and ``say`` is told."""
    name = store_lock_name(slug)
    key = f"{remote.uri}{remote.query}/{name}"
    if key in _HELD_REMOTE:
        _HELD_REMOTE[key] += 1
        try:
            yield
        finally:
            _HELD_REMOTE[key] -= 1
        return
    film = remote.film_uri(slug).partition("?")[0]
    lock = _read_lock(remote, name)
    if lock is not None:
        age = time.time() - _number(lock.get("heartbeat"))
        if age <= STALE_SECONDS:
            raise InputError(_busy(film, lock, age))
        if say:
            say(f"{film}: the lock of {_who(lock)} is stale (no heartbeat for {age / 60:.0f} minutes, "
                f"more than {STALE_SECONDS / 60:.0f}); taking it over")
    token = uuid.uuid4().hex
    holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": token}
    _write_lock(remote, name, holder)
    time.sleep(SETTLE_SECONDS)
    back = _read_lock(remote, name)
    if back is None or back.get("token") != token:  # another run wrote it after this one: it holds it
        raise InputError(_busy(film, back, 0.0) if back else f"{film}: another run removed this film's lock "
                         "as it was taken; try again (one run at a time per film)")
    _HELD_REMOTE[key] = 1
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(remote, name, holder, stop, say), daemon=True,
                            name=f"farm lock heartbeat {slug}")
    beat.start()
    try:
        yield
    finally:
        del _HELD_REMOTE[key]
        stop.set()
        beat.join()
        try:
            now = _read_lock(remote, name)
            if now is not None and now.get("token") == token:  # a lock taken over is its new holder's
                remote.delete(name)
        except InputError:
            pass  # the store is gone: the lock goes stale


def _heartbeat(remote: Remote, name: str, holder: dict, stop: threading.Event,
               say: Optional[Callable[[str], None]]) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            now = _read_lock(remote, name)
            if now is None or now.get("token") != holder["token"]:
                if say:
                    say(f"{remote.uri}/{name}: this run's lock was taken over by {_who(now) if now else 'no one'} "
                        "(its heartbeat was stale); two runs may now write this film")
                return
            _write_lock(remote, name, holder)
        except InputError:
            pass  # the store did not answer this time; the next heartbeat tries again


def _write_lock(remote: Remote, name: str, holder: dict) -> None:
    holder["heartbeat"] = time.time()
    holder["heartbeat_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(holder["heartbeat"]))
    remote.put(name, json.dumps(holder).encode())


def _read_lock(remote: Remote, name: str) -> Optional[dict]:
    data = remote.read(name)
    if data is None:
        return None
    try:
        lock = json.loads(data)
    except ValueError:
        lock = None
    return lock if isinstance(lock, dict) else {}  # a lock that is not one: stale (no heartbeat)


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def _who(lock: dict) -> str:
    try:
        return f"{lock['command']} (pid {lock['pid']} on {lock['host']}, since {lock['since']})"
    except (KeyError, TypeError):
        return "another run"


def _busy(film: str, lock: dict, age: float) -> str:
    return (f"{film}: {_who(lock)} is using this film (its lock's heartbeat is {age:.0f} s old; a lock is stale "
            f"after {STALE_SECONDS / 60:.0f} minutes without one); wait for it to end, or stop it "
            "(one run at a time per film)")
