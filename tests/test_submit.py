"""farm submit / status / logs / stop against a real Ray head node with its dashboard.

The test starts the head with ``ray start --head --block`` (its own temp dir and
ports, dashboard on 127.0.0.1) in a process group of its own, and stops it by
that group's id: never ``ray stop``, which would stop every Ray on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import decode_video, run_farm, tiny_film


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="farmjob", dir="/tmp")
    ports = {name: free_port() for name in ("port", "dashboard-port", "ray-client-server-port",
                                             "node-manager-port", "object-manager-port",
                                             "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                             "metrics-export-port", "runtime-env-agent-port")}
    ray_bin = Path(sys.executable).with_name("ray")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    command = [str(ray_bin), "start", "--head", "--block", "--temp-dir", temp, "--num-cpus", "1", "--num-gpus", "0",
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
               *[f"--{name}={port}" for name, port in ports.items()]]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start --head exited with {process.returncode}")
            try:
                import urllib.error
                import urllib.request

                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:  # 401: it answers, and asks for Ray's token (~/.ray/auth_token)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the Ray dashboard did not come up in 120 s")
                time.sleep(0.2)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # our own process group only
        try:
            process.wait(timeout=3)  # `ray start --block` takes longer than this to stop its children
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_submitted_film_succeeds_and_its_logs_read_back(head, tmp_path):
    spec = tmp_path / "film.yaml"
    data = tiny_film("Job Film", scenes=1, duration=1, fps=2)
    data["render"]["reseed"] = "independent"
    spec.write_text(yaml.safe_dump(data))
    out = tmp_path / "films"
    submitted = run_farm("submit", str(spec), "--address", head, "--out", str(out))
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job.startswith("raysubmit_")
    followed = run_farm("logs", job, "--follow", "--address", head, timeout=400)
    assert followed.returncode == 0, followed.stderr
    assert "film written:" in followed.stdout
    status = run_farm("status", job, "--address", head)
    assert status.returncode == 0 and status.stdout.split()[:3] == [job, "SUCCEEDED", "job-film"], status.stdout
    listed = run_farm("status", "--address", head)
    assert job in listed.stdout
    logs = run_farm("logs", job, "--address", head)
    assert "film written:" in logs.stdout and str(out / "job-film" / "film.mp4") in logs.stdout
    assert len(decode_video(out / "job-film" / "film.mp4")) == 2
    # A job that has ended is not stopped again; its status says so.
    stopped = run_farm("stop", job, "--address", head)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "SUCCEEDED"


def test_bad_job_ids_and_dashboards_are_one_line(head, tmp_path):
    for args in (["status", "raysubmit_nosuchjob"], ["logs", "raysubmit_nosuchjob"], ["stop", "raysubmit_nosuchjob"]):
        result = run_farm(*args, "--address", head)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "no job 'raysubmit_nosuchjob'" in result.stderr
    port = free_port()
    result = run_farm("status", "--address", f"http://127.0.0.1:{port}")
    assert result.returncode == 2 and result.stderr.startswith("farm: error: --address: no Ray dashboard answers")


def test_the_jobs_out_folder_is_one_argument_to_its_shell_with_only_a_leading_tilde_expanded(tmp_path):
    from farm.driver.submit import job_entrypoint

    home = tmp_path / "home"
    home.mkdir()
    for out, meant in (("~/farm-films", home / "farm-films"), ("~/a;touch pwned", home / "a;touch pwned"),
                       ("~/$(touch pwned) x", home / "$(touch pwned) x"), ("/films/~/b c", Path("/films/~/b c"))):
        command = job_entrypoint(out, ("--set", "title=a b"))
        assert command.startswith("python -m farm.cli render ")
        # What the job's shell makes of the command's arguments.
        shown = subprocess.run(["bash", "-c", "printf '%s\\n' " + command.removeprefix("python -m farm.cli ")],
                               capture_output=True, text=True, cwd=tmp_path,
                               env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        args = shown.stdout.splitlines()
        assert args[args.index("--out") + 1] == str(meant) and args[-2:] == ["--set", "title=a b"], args
        assert not (tmp_path / "pwned").exists()
