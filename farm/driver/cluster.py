"""Joining a Ray cluster, or starting a local one; in the background, while the driver plans."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

from farm.errors import ClusterError, first_line
from farm.keys import secret_names

# Connections begun by start_in_background, by address, until connect takes them.
_STARTING: dict[Optional[str], "ClusterStart"] = {}


def start_in_background(address: Optional[str]) -> "ClusterStart":
    """Begin ``connect(address)`` now, in a thread; the next ``connect(address)`` takes it over.
    The caller closes it when done, which disconnects only a connection nobody took."""
    start = ClusterStart(address)
    _STARTING[address] = start
    return start


def connect(address: Optional[str]) -> bool:
    """Join a Ray cluster, or start a local one; True when this call connected (so we disconnect).

    ``ray.shutdown()`` afterwards stops a local cluster we started, and only
    disconnects from one we joined. A connection begun by :func:`start_in_background` for
    the same address is waited for and taken over.
    """
    started = _STARTING.pop(address, None)
    if started is not None:
        return started.result()
    return _connect(address)


def _connect(address: Optional[str]) -> bool:
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            return True
        # Ray turns token authentication on for the cluster we start, and says so on every
        # start; the notice is not news to a farm user.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # address="local": a new cluster of our own, even where another Ray runs on this machine.
        # Its processes inherit this one's environment, less the API keys: workers render pictures
        # and need none (farm/keys.py); the driver keeps them.
        hidden = {name: os.environ.pop(name) for name in secret_names(os.environ)}
        try:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        finally:
            os.environ.update(hidden)
        return True
    except ClusterError:
        raise
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: Ray's own words, one line
        reason = first_line(exc)
        if address:
            raise ClusterError(f"--address: cannot join the Ray cluster at {address} ({reason})") from exc
        raise ClusterError(f"cannot start a local Ray cluster ({reason})") from exc


class ClusterStart:
    """``connect(address)`` begun in a background thread, so that Ray's processes start while the
    driver plans the film, its cut and its store (a second or more; many on a loaded machine)
    instead of after.

    ``result()`` waits for it: True when it connected (the caller disconnects), its error if it
    failed. ``close()`` disconnects a connection nobody took (the film needed no render);
    ``abandon()`` gives it up at once (planning failed: the error is not held up by Ray's
    start). ``seconds`` is how long the start took.
    """

    def __init__(self, address: Optional[str]) -> None:
        self.connected = False
        self.error: Optional[BaseException] = None
        self.taken = False
        self.seconds = 0.0
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            # ray.init sets this handler only from the main thread: SIGTERM (a stopped job, a killed
            # run) still ends the driver through SystemExit, so its finally blocks save the manifest.
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        self.address = address
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.abandoned = False
        self.thread = threading.Thread(target=self._start, name="farm-cluster-start", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        started = time.perf_counter()
        # Ray says once that a thread other than the main one cannot set the SIGTERM handler (set above).
        worker_log = logging.getLogger("ray._private.worker")
        level = worker_log.level
        worker_log.setLevel(logging.ERROR)
        try:
            self.connected = _connect(self.address)
        except BaseException as exc:  # ClusterError, or whatever Ray raised: re-raised by result()
            self.error = exc
        finally:
            worker_log.setLevel(level)
            self.seconds = time.perf_counter() - started
            with self.lock:
                self.done.set()
                abandoned = self.abandoned
        if self.connected:
            import ray

            if abandoned:
                ray.shutdown()
                return
            # Ray ties its processes' lives to the thread that started them (Linux's parent-death
            # signal follows the thread): this one lives until the cluster is shut down.
            while ray.is_initialized():
                time.sleep(0.5)

    def result(self) -> bool:
        """Wait for the start; True when it connected. Raises what the start raised."""
        self.done.wait()
        self.taken = True
        if self.error is not None:
            raise self.error
        return self.connected

    def close(self) -> None:
        """Disconnect if the start connected and ``result()`` never handed the connection over
        (waiting for the start to finish first)."""
        if _STARTING.get(self.address) is self:
            del _STARTING[self.address]
        if self.abandoned:
            return
        self.done.wait()
        if self.connected and not self.taken:
            import ray

            ray.shutdown()
        self.taken = True

    def abandon(self) -> None:
        """Give the start up without waiting for it (an error is on its way out): a start still
        under way shuts its cluster down itself once it is up."""
        if _STARTING.get(self.address) is self:
            del _STARTING[self.address]
        with self.lock:
            if not self.done.is_set():
                self.abandoned = True
                return
        self.close()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: Ray itself keeps retrying for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", "ray://...": Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"--address: no Ray cluster answers at {address} ({exc.strerror or exc})") from exc
