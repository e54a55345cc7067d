"""Joining a Ray cluster, or starting a local one."""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

from farm.errors import ClusterError, first_line
from farm.keys import secret_names


def connect(address: Optional[str]) -> bool:
    """Join a Ray cluster, or start a local one; True when this call connected (so we disconnect).

    ``ray.shutdown()`` afterwards stops a local cluster we started, and only
    disconnects from one we joined.
    """
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


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on: Ray itself keeps retrying for minutes."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", "ray://...": Ray's own resolution
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"--address: no Ray cluster answers at {address} ({exc.strerror or exc})") from exc
