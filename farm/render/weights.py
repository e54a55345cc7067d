"""Where pretrained weights are, getting them, and failing fast when they cannot be had.

A spec names CLIP weights by an open_clip tag ("openai") or a staged file, and BigGAN
by a published name ("biggan-deep-256") or a staged folder (config.json +
pytorch_model.bin). Tags and names resolve to the libraries' own caches (the Hugging
Face hub cache for open_clip, pytorch-pretrained-biggan's cache for BigGAN), so weights
fetched once, by ``farm weights fetch`` or by a first render, are found again without
the network.

A machine that cannot reach the hosts learns so in seconds: a render that lacks weights
looks in the caches first, then asks whether the host answers at all (a TCP connect
with a short deadline; none with ``HF_HUB_OFFLINE=1``), and otherwise stops with one
line saying what to run or stage, instead of the libraries' minutes of silent retries.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from farm.errors import ModelError, first_line
from farm.spec import PRETRAINED_BIGGAN, ModelsSpec

# How long a render waits to learn whether a weights host answers at all.
REACH_TIMEOUT_S = 3.0
BIGGAN_FILES = ("config.json", "pytorch_model.bin")


@dataclass
class Weights:
    """One set of weights a spec needs: where it is (or would be), and whether it is there."""

    field: str  # the spec field that names it: models.clip_pretrained or models.biggan
    name: str  # what the user wrote
    kind: str  # "tag" (open_clip), "file", "published" (BigGAN), "folder", "builtin"
    path: Optional[Path]  # the file or folder on this machine, when there is one
    source: str = ""  # where it comes from when it is fetched

    @property
    def present(self) -> bool:
        if self.kind == "builtin":
            return True
        return self.path is not None and self.path.exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` (name lookup included)."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return False
    result: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # a hung name lookup is left behind
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


# --- CLIP --------------------------------------------------------------------------------------


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def clip_weights(spec: ModelsSpec) -> Weights:
    tag = spec.clip_pretrained
    if spec.clip in ("tiny", "toy") or not tag:
        return Weights("models.clip_pretrained", str(tag), "builtin", None)
    if _looks_like_path(tag):
        return Weights("models.clip_pretrained", tag, "file", Path(tag).expanduser())
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    if spec.clip not in open_clip.list_models():
        raise ModelError(f"models.clip: {spec.clip!r} is not an open_clip model (see open_clip.list_models())")
    cfg = get_pretrained_cfg(spec.clip, tag)
    if not cfg:
        tags = ", ".join(t for m, t in open_clip.list_pretrained() if m == spec.clip) or "none"
        raise ModelError(f"models.clip_pretrained: {tag!r} is not an open_clip tag of {spec.clip} (its tags: {tags})")
    repo, filename = _hub_id(cfg)
    if repo:
        return Weights("models.clip_pretrained", tag, "tag", _hub_cached(repo, filename, spec.cache_dir),
                       source=f"{hf_endpoint()}/{repo}")
    url = cfg["url"]
    folder = Path(spec.cache_dir or Path.home() / ".cache" / "clip")
    return Weights("models.clip_pretrained", tag, "tag", folder / os.path.basename(url), source=url)


def _hub_id(cfg: dict) -> tuple[str, list[str]]:
    from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

    hub = cfg.get("hf_hub", "")
    if not hub:
        return "", []
    repo, filename = os.path.split(hub)
    filename = filename or HF_WEIGHTS_NAME
    return repo, [*_get_safe_alternatives(filename), filename]


def _hub_cached(repo: str, filenames: list[str], cache_dir: Optional[str]) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


def fetch_clip(spec: ModelsSpec) -> Path:
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    try:
        return Path(download_pretrained(get_pretrained_cfg(spec.clip, spec.clip_pretrained), cache_dir=spec.cache_dir))
    except Exception as exc:
        raise ModelError(f"models.clip_pretrained: could not download {spec.clip_pretrained!r} weights of "
                         f"{spec.clip} ({first_line(exc, with_type=True)})") from exc


# --- BigGAN ------------------------------------------------------------------------------------


def biggan_cache(spec: ModelsSpec) -> Path:
    from pytorch_pretrained_biggan.file_utils import PYTORCH_PRETRAINED_BIGGAN_CACHE

    return Path(spec.cache_dir) if spec.cache_dir else Path(PYTORCH_PRETRAINED_BIGGAN_CACHE)


def biggan_urls(name: str) -> dict[str, str]:
    from pytorch_pretrained_biggan.model import PRETRAINED_CONFIG_ARCHIVE_MAP, PRETRAINED_MODEL_ARCHIVE_MAP

    return {"config.json": PRETRAINED_CONFIG_ARCHIVE_MAP[name], "pytorch_model.bin": PRETRAINED_MODEL_ARCHIVE_MAP[name]}


def biggan_weights(spec: ModelsSpec) -> Weights:
    name = spec.biggan
    if name in ("tiny", "toy"):
        return Weights("models.biggan", name, "builtin", None)
    if name not in PRETRAINED_BIGGAN:
        return Weights("models.biggan", name, "folder", Path(name).expanduser())
    files = biggan_cached_files(spec)
    # Present when both files are cached; the weights file stands for the pair.
    path = files["pytorch_model.bin"] if all(files.values()) else None
    return Weights("models.biggan", name, "published", path, source=biggan_urls(name)["pytorch_model.bin"])


def biggan_cached_files(spec: ModelsSpec) -> dict[str, Optional[Path]]:
    """The library's cache names a download sha256(url)[.sha256(etag)]; find one without asking the host."""
    from pytorch_pretrained_biggan.file_utils import url_to_filename

    cache = biggan_cache(spec)
    found: dict[str, Optional[Path]] = {}
    for role, url in biggan_urls(spec.biggan).items():
        stem = url_to_filename(url)
        hits = (sorted(p for p in cache.glob(stem + "*") if not p.name.endswith(".json") or p.name == stem)
                if cache.is_dir() else [])
        found[role] = hits[0] if hits else None
    return found


def fetch_biggan(spec: ModelsSpec) -> dict[str, Path]:
    from pytorch_pretrained_biggan.file_utils import cached_path

    try:
        return {role: Path(cached_path(url, cache_dir=str(biggan_cache(spec))))
                for role, url in biggan_urls(spec.biggan).items()}
    except Exception as exc:
        raise ModelError(f"models.biggan: could not download {spec.biggan} "
                         f"({first_line(exc, with_type=True)})") from exc


# --- what the commands and the loader use ---------------------------------------------------------


def needed(spec: ModelsSpec) -> list[Weights]:
    return [clip_weights(spec), biggan_weights(spec)]


def ensure_reachable(weights: Weights, preset: str) -> None:
    """Before a download: one line, fast, when the host cannot be reached."""
    what = f"the {weights.name!r} weights" + (" of CLIP" if weights.field.endswith("clip_pretrained") else "")
    advice = (f"run `farm weights fetch --preset {preset}` where there is internet, or stage them "
              f"(`farm weights fetch --preset {preset} --to DIR` elsewhere, then copy DIR here) and point "
              f"{weights.field} at the staged {'file' if weights.field.endswith('clip_pretrained') else 'folder'}")
    if offline():
        raise ModelError(f"{weights.field}: {what} are not on this machine and HF_HUB_OFFLINE is set; {advice}")
    if not reachable(weights.source):
        host = urlsplit(weights.source).hostname
        raise ModelError(f"{weights.field}: {what} are not on this machine and {host} cannot be reached; {advice}")


def fetch(spec: ModelsSpec, preset: str, to: Optional[Path] = None) -> list[tuple[Weights, Path]]:
    """Download what ``spec`` needs into the libraries' caches, and copy it to ``to`` when given."""
    fetched = []
    for weights in needed(spec):
        if weights.kind in ("builtin", "file", "folder"):
            if not weights.present:
                raise ModelError(f"{weights.field}: {weights.name} is a staged {weights.kind} that does not exist; "
                                 "farm fetches only published weights (an open_clip tag, biggan-deep-128/256/512)")
            fetched.append((weights, weights.path) if weights.path else (weights, Path(weights.name)))
            continue
        if not weights.present:
            ensure_reachable(weights, preset)
        if weights.field == "models.clip_pretrained":
            path = weights.path if weights.present else fetch_clip(spec)
            if to is not None:
                to.mkdir(parents=True, exist_ok=True)
                target = to / f"clip-{spec.clip}-{spec.clip_pretrained}{path.suffix}"
                shutil.copyfile(path, target)
                path = target
        else:
            files = biggan_cached_files(spec) if weights.present else fetch_biggan(spec)
            path = files["pytorch_model.bin"]
            if to is not None:
                folder = to / spec.biggan
                folder.mkdir(parents=True, exist_ok=True)
                for role, source in files.items():
                    shutil.copyfile(source, folder / role)
                path = folder
        fetched.append((weights, path))
    return fetched


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith("~") or value.endswith((".pt", ".bin", ".safetensors", ".pth"))


def spec_models(spec_path: Optional[str], preset: Optional[str], overrides: list[str]) -> tuple[ModelsSpec, str]:
    """The models section (and preset) of a film spec file, or of a preset alone."""
    from farm.spec import load_spec, spec_from_dict

    if spec_path:
        spec = load_spec(spec_path, preset=preset, overrides=overrides)
    else:
        spec = spec_from_dict({"title": "weights", "scenes": [{"narration": "weights"}]}, preset=preset or "draft",
                              overrides=overrides)
    return spec.models, spec.render.preset


def report(spec: ModelsSpec) -> tuple[list[str], bool]:
    """One line per set of weights: present or missing, and where; and whether all are present.
    Looks only at this machine: no network."""
    lines, complete = [], True
    for weights in needed(spec):
        label = f"{weights.field}: {weights.name}"
        if weights.kind == "builtin":
            lines.append(f"{label}: built in (no weights to load)")
        elif weights.present:
            lines.append(f"{label}: present at {weights.path}")
        else:
            complete = False
            where = f" (looked at {weights.path})" if weights.path else ""
            origin = f"; fetched from {weights.source}" if weights.source else ""
            lines.append(f"{label}: missing{where}{origin}")
    return lines, complete


def preflight(spec: ModelsSpec, preset: str) -> None:
    """Before starting workers on this machine: fail in seconds on weights that are neither here
    nor reachable, rather than after the cluster and the workers have started."""
    for weights in needed(spec):
        if weights.present or weights.kind == "builtin":
            continue
        if weights.kind == "file":
            raise ModelError(f"{weights.field}: no weights file at {weights.path}")
        if weights.kind == "folder":
            raise ModelError(f"{weights.field}: no BigGAN folder at {weights.path} (a folder holding "
                             f"{' and '.join(BIGGAN_FILES)}, or one of {', '.join(PRETRAINED_BIGGAN)})")
        ensure_reachable(weights, preset)
