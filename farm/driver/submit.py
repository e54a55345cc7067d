"""Ray Jobs: a film rendered on a cluster as a job (``farm submit``, ``status``, ``logs``, ``stop``).

``submit`` resolves the spec here (preset and ``--set`` applied, so what runs is
what ``farm check`` shows), and hands Ray a runtime_env holding that resolved
spec (the working_dir) and this farm package (py_modules); the job's entrypoint
is ``python -m farm.cli render film.yaml --address auto``. Nothing about the
client's paths is baked in. API keys are not sent: a job that needs one gets
it from the cluster's environment. The job's metadata names the film only.

The dashboard's job server listens on 127.0.0.1:8265 unless the cluster was
started otherwise; reach a remote one through an ssh tunnel or
``kubectl port-forward`` (docs/OPERATIONS.md).
"""

from __future__ import annotations

import shlex
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlparse

import farm
from farm.errors import ClusterError, InputError, first_line
from farm.folder.layout import SPEC_NAME
from farm.spec import FilmSpec

DEFAULT_OUT = "~/farm-films"


def client(address: str):
    """A JobSubmissionClient for the dashboard at ``address``; one line when nobody answers."""
    from ray.job_submission import JobSubmissionClient

    url = address if "://" in address else f"http://{address}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"--address: {address!r} is not a dashboard address (http://HOST:8265)")
    try:
        socket.create_connection((parsed.hostname, parsed.port or 8265), timeout=5).close()
    except OSError as exc:
        raise ClusterError(f"--address: no Ray dashboard answers at {url} ({exc.strerror or exc})") from exc
    use_token_if_any()
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # ConnectionError, RuntimeError: Ray's own words, one line
        raise ClusterError(f"--address: cannot use the Ray job server at {url} ({first_line(exc)})") from exc


def use_token_if_any() -> None:
    """Send Ray's token (``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) when there
    is one, as ``ray job submit`` does: clusters started with token authentication refuse requests without."""
    import logging

    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:  # a Ray without token authentication
        return
    logging.getLogger(setup.__name__).setLevel(logging.ERROR)
    setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def submit(spec: FilmSpec, address: str, out: str = DEFAULT_OUT, extra: tuple[str, ...] = ()) -> str:
    """Submit ``spec`` as a Ray Job; returns its id."""
    jobs = client(address)
    package = Path(farm.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="farm-job-") as folder:
        (Path(folder) / SPEC_NAME).write_text(spec.to_yaml(), encoding="utf-8")
        try:
            return jobs.submit_job(
                entrypoint=job_entrypoint(out, extra),
                runtime_env={"working_dir": folder, "py_modules": [str(package)],
                             "env_vars": {"PYTHONUNBUFFERED": "1"}},
                metadata={"farm_film": spec.slug, "farm_version": farm.__version__},
            )
        except Exception as exc:
            raise ClusterError(f"--address: the job server at {address} refused the job ({first_line(exc)})") from exc


def job_entrypoint(out: str, extra: tuple[str, ...] = ()) -> str:
    """The job's shell command: every argument quoted; a leading ``~/`` of ``out`` left outside the
    quotes, so it expands to the home folder on the cluster, in the job's shell, and nothing else does."""
    where = "~/" + shlex.quote(out[2:]) if out.startswith("~/") else shlex.quote(out)
    return " ".join(["python -m farm.cli render", SPEC_NAME, "--address auto --progress plain",
                     "--out", where, *map(shlex.quote, extra)])


def known(jobs, job_id: str) -> Any:
    """The job's info; a job id the cluster does not know is one line."""
    try:
        return jobs.get_job_info(job_id)
    except Exception as exc:
        raise InputError(f"JOB: no job {job_id!r} on this cluster ({first_line(exc)})") from exc


def status(address: str, job_id: Optional[str] = None) -> list[dict[str, Any]]:
    """One job's status, or every farm job's (newest last)."""
    jobs = client(address)
    infos = [known(jobs, job_id)] if job_id else [
        j for j in jobs.list_jobs() if (j.metadata or {}).get("farm_film")]
    infos.sort(key=lambda j: j.start_time or 0)
    return [{"job": j.submission_id or j.job_id,
             "status": str(j.status.value if hasattr(j.status, "value") else j.status),
             "film": (j.metadata or {}).get("farm_film", "?"), "message": j.message or ""} for j in infos]


def logs(address: str, job_id: str, follow: bool = False) -> Iterator[str]:
    """The job's output so far; with ``follow``, until the job ends."""
    jobs = client(address)
    known(jobs, job_id)
    if not follow:
        yield jobs.get_job_logs(job_id)
        return
    import asyncio

    stream = jobs.tail_job_logs(job_id)
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.close()


def stop(address: str, job_id: str, wait_s: float = 30.0) -> str:
    """Ask the job to stop; returns its status once it has (or after ``wait_s``)."""
    jobs = client(address)
    known(jobs, job_id)
    jobs.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    while True:
        state = str(jobs.get_job_status(job_id).value)
        if state in ("STOPPED", "SUCCEEDED", "FAILED") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)
