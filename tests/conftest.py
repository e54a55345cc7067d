"""Shared fixtures: tiny film specs, and one real local Ray cluster per test module that asks."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# The loopback OpenAI-protocol server's fixtures, for every module; its autouse clean_env keeps
# this machine's OpenAI variables away from every test (and the commands they run).
pytest_plugins = ["openai_server"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "yeti_tardigrade.yaml"


def tiny_film(title: str = "Tiny Test Film", scenes: int = 3, duration: float = 1.0, fps: int = 4,
              video: dict | None = None, **render) -> dict:
    """A film spec (as a mapping) that renders in seconds with the tiny preset.

    Plain cuts and no narration unless ``video`` asks (so frame counts are the scenes' sum);
    tests of transitions and narration set them. One render worker unless ``workers`` says
    otherwise (0: as many as the cluster holds), kept loaded for the module's next film
    (``dispatch.keep_workers``): each worker is a process that imports torch, open_clip and
    BigGAN, seconds a test that is not about workers need not wait for.
    """
    prompts = ["a hairy tardigrade in the snow", "a frozen valley at night", "a ball of white fur sleeping",
               "a moss leaf on a glacier", "snow falling like stars"]
    return {
        "title": title,
        "seed": 7,
        "scenes": [{"narration": f"Scene {i + 1}: {prompts[i % len(prompts)]}.", "prompt": prompts[i % len(prompts)],
                    "duration": duration} for i in range(scenes)],
        "video": {"fps": fps, "transition": "cut", "narration": "none", **(video or {})},
        "render": {"preset": "tiny", "cutouts": 2, "warmup_steps": 1, "anchor_steps": 2, "workers": 1, **render},
        "dispatch": {"keep_workers": True},
    }


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster with pinned resources and a private temp dir, shared by a module."""
    import ray

    temp = tempfile.mkdtemp(prefix="farmray", dir="/tmp")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def decode_video(path):
    """Every frame of a film's video stream, decoded with PyAV, as (H, W, 3) arrays."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def run_farm(*args: str, cwd: Path | None = None, timeout: float = 300):
    """Run the real ``farm`` console script of this environment."""
    import subprocess

    farm = Path(sys.executable).with_name("farm")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([str(farm), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# Nodes that die are noticed in about a second instead of half a minute.
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "300",
    "RAY_health_check_timeout_ms": "300",
    "RAY_health_check_failure_threshold": "3",
}


@contextlib.contextmanager
def logical_cluster(prefix: str, nodes: list[dict]):
    """A ray.cluster_utils.Cluster: a head node for the driver (no CPU) and one worker node per
    ``add_node`` keyword set, health checks shortened; yields (cluster, worker nodes)."""
    import ray
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in HEALTH_CHECK}
    os.environ.update(HEALTH_CHECK)
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "temp_dir": temp, "include_dashboard": False})
    workers = [cluster.add_node(**node) for node in nodes]
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback (a real HTTP server, in a thread): yields its ``host:port``."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_store(s3_server, monkeypatch, request):
    """A fresh bucket on the loopback S3 server, fake credentials in the environment (for this
    process and the commands it runs): yields the film store URI ``s3://BUCKET/films?...``."""
    import re

    import pyarrow.fs as pafs

    for key, value in {"AWS_ACCESS_KEY_ID": "farm-test", "AWS_SECRET_ACCESS_KEY": "farm-test-secret",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    query = f"endpoint_override={s3_server}&scheme=http"
    fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}?{query}&allow_bucket_creation=true")
    fs.create_dir(bucket)
    return f"s3://{bucket}/films?{query}"


# The longest modules first: `scripts/test` hands whole modules to two processes (--dist loadfile)
# in collection order, and a long module collected last (test_toy.py, alphabetically) left one
# process rendering alone at the end while the other had nothing to do.
LONGEST_FIRST = ("test_cluster.py", "test_toy.py", "test_cli.py", "test_film.py", "test_serve.py", "test_store.py",
                 "test_submit.py", "test_stitch.py", "test_llm.py", "test_dispatch.py", "test_batch.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module keeps its order
