"""Pretrained weights: staged files load with no network, bad files give one line, missing weights fail fast."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys

import pytest
import torch

from farm.errors import ModelError
from farm.render import weights
from farm.render.biggan import build_tiny_biggan
from farm.render.models import load_models
from farm.spec import ModelsSpec

from conftest import EXAMPLE, ROOT

TINY_CONFIG = {"embed_dim": 64, "quick_gelu": True,
               "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture
def no_network(monkeypatch):
    """Record, and refuse, every connection or name lookup that is not loopback."""
    attempts = []
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not host.startswith(("127.", "::1", "/")) and host != "localhost":
            attempts.append(host)
            raise OSError("network refused by the test")
        return real_connect(sock, address)

    def lookup(host, *args, **kwargs):
        if host not in ("localhost", None) and not str(host).startswith(("127.", "::1")):
            attempts.append(host)
            raise socket.gaierror("name lookup refused by the test")
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return attempts


@pytest.fixture
def staged(tmp_path):
    """A CLIP weights file and a BigGAN folder, random weights saved in each library's own format."""
    import open_clip

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "farm-test-tiny.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(configs)
    clip = open_clip.create_model("farm-test-tiny", pretrained=None)
    clip_file = tmp_path / "clip-farm-test-tiny.pt"
    torch.save(clip.state_dict(), clip_file)
    biggan = build_tiny_biggan(128)
    folder = tmp_path / "biggan-staged"
    folder.mkdir()
    (folder / "config.json").write_text(biggan.config.to_json_string())
    torch.save(biggan.state_dict(), folder / "pytorch_model.bin")
    spec = ModelsSpec(clip="farm-test-tiny", clip_pretrained=str(clip_file), biggan=str(folder))
    return spec, clip, biggan


def test_staged_weights_load_with_no_network_call(staged, no_network):
    spec, clip, biggan = staged
    from farm.render.biggan import fold_spectral_norm

    models = load_models(spec, 128, torch.device("cpu"))
    assert no_network == []
    fold_spectral_norm(biggan.eval())  # as loading does: weight_orig / sigma, once
    for mine, theirs in ((models.clip, clip), (models.biggan, biggan)):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()):
            assert torch.equal(a, b)
    lines, complete = weights.report(spec)
    assert complete and all("present at" in line for line in lines)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_truncated_clip_file_gives_one_line_naming_it(staged):
    spec, _, _ = staged
    path = spec.clip_pretrained
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(ModelError) as exc:
        load_models(spec, 128, torch.device("cpu"))
    assert one_line(exc).startswith(f"models.clip_pretrained: {path} does not hold farm-test-tiny weights")


def test_clip_file_of_another_model_gives_one_line_naming_it(staged, tmp_path):
    spec, _, biggan = staged
    wrong = tmp_path / "wrong.pt"
    torch.save(biggan.state_dict(), wrong)
    with pytest.raises(ModelError) as exc:
        load_models(dataclasses.replace(spec, clip_pretrained=str(wrong)), 128, torch.device("cpu"))
    assert one_line(exc).startswith(f"models.clip_pretrained: {wrong} does not hold farm-test-tiny weights")


@pytest.mark.parametrize("damage", ["truncated", "other model"])
def test_bad_biggan_weights_give_one_line_naming_the_file(staged, damage):
    spec, clip, _ = staged
    path = f"{spec.biggan}/pytorch_model.bin"
    if damage == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    else:  # the library's own loader would take these silently (strict=False)
        torch.save(clip.state_dict(), path)
    with pytest.raises(ModelError) as exc:
        load_models(spec, 128, torch.device("cpu"))
    assert one_line(exc).startswith(f"models.biggan: {path} does not hold the weights of this BigGAN")


def test_missing_staged_file_is_named(staged, tmp_path):
    spec, _, _ = staged
    gone = dataclasses.replace(spec, clip_pretrained=str(tmp_path / "nowhere.pt"))
    with pytest.raises(ModelError, match=r"^models\.clip_pretrained: no weights file at .*nowhere\.pt$"):
        load_models(gone, 128, torch.device("cpu"))
    with pytest.raises(ModelError, match=r"^models\.clip_pretrained: no weights file at .*nowhere\.pt$"):
        weights.preflight(gone, "draft")


def test_reachable_asks_only_the_host_it_is_given():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    assert weights.reachable(f"http://127.0.0.1:{port}/x", timeout=2)
    server.close()
    assert not weights.reachable(f"http://127.0.0.1:{port}/x", timeout=2)


def test_unreachable_hub_fails_in_one_line_without_downloading(tmp_path, monkeypatch, no_network):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = ModelsSpec(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ModelError) as exc:
        load_models(spec, 256, torch.device("cpu"), preset="draft")
    message = one_line(exc)
    assert message.startswith("models.clip_pretrained: the 'openai' weights of CLIP are not on this machine and "
                              "127.0.0.1 cannot be reached")
    assert "farm weights fetch --preset draft" in message
    assert no_network == []


def hub_cache_entry(cache, repo, filename, content: bytes):
    """A file in the Hugging Face hub cache layout (models--org--name/snapshots/REV/FILE, refs/main)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / filename).write_bytes(content)
    return snapshot / filename


def offline_env(tmp_path):
    import os

    return dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"),
                PYTORCH_PRETRAINED_BIGGAN_CACHE=str(tmp_path / "biggan"), PYTHONPATH=str(ROOT))


# One process for a test's farm commands: the libraries read their cache settings from the
# environment when imported, so the commands run in a process of the offline environment; one
# process for all of them (each gets its own stdout and stderr) pays torch's and open_clip's
# imports once, not once a command.
RUNNER = """
import contextlib, io, json, sys
from farm.cli import main
for line in sys.stdin:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(json.loads(line))
    print(json.dumps({"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), flush=True)
"""


@pytest.fixture
def farm(tmp_path):
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], env=offline_env(tmp_path), cwd=tmp_path, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(*args):
        runner.stdin.write(json.dumps(list(args)) + "\n")
        runner.stdin.flush()
        line = runner.stdout.readline()
        assert line, f"the farm process ended (exit {runner.wait()})"
        return subprocess.CompletedProcess(args, **json.loads(line))

    yield run
    runner.stdin.close()
    runner.wait(timeout=60)


def test_offline_render_without_weights_says_what_to_do_and_writes_nothing(tmp_path, farm):
    result = farm("render", str(EXAMPLE), "--preset", "draft", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("farm: error: models.clip_pretrained: the 'openai' weights")
    assert "farm weights fetch --preset draft" in lines[0]
    assert not (tmp_path / "out").exists()


def test_weights_check_and_fetch_to_a_folder_from_the_caches(tmp_path, farm):
    from pytorch_pretrained_biggan.file_utils import url_to_filename

    check = farm("weights", "check", "--preset", "draft")
    assert check.returncode == 1 and check.stdout.count(": missing") == 2
    # What a first download leaves in the libraries' caches.
    hub_cache_entry(tmp_path / "hub", "timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin", b"clip")
    (tmp_path / "biggan").mkdir()
    for role, url in weights.biggan_urls("biggan-deep-256").items():
        (tmp_path / "biggan" / (url_to_filename(url) + ".etag")).write_bytes(role.encode())
    check = farm("weights", "check", "--preset", "draft")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("present at") == 2
    fetched = farm("weights", "fetch", "--preset", "draft", "--to", str(tmp_path / "stage"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "stage" / "clip-ViT-B-32-quickgelu-openai.bin").read_bytes() == b"clip"
    assert (tmp_path / "stage" / "biggan-deep-256" / "config.json").read_bytes() == b"config.json"
    assert (tmp_path / "stage" / "biggan-deep-256" / "pytorch_model.bin").read_bytes() == b"pytorch_model.bin"
    staged = farm("weights", "check", "--preset", "draft",
                  "--set", f"models.clip_pretrained={tmp_path / 'stage' / 'clip-ViT-B-32-quickgelu-openai.bin'}",
                  "--set", f"models.biggan={tmp_path / 'stage' / 'biggan-deep-256'}")
    assert staged.returncode == 0 and staged.stdout.count("present at") == 2
