"""The film store: a film's folder on local disk, its resolved spec and its manifest.

    out/<film>/
      film.yaml        resolved spec (everything needed to reproduce)
      manifest.json    scene states, attempts, frame counts, hashes, timings
      scenes/NNN/      frames (PNG) and the segment video
      film.mp4  film.srt

Every write is atomic (a temporary file, then a rename), so an interrupted run
never leaves half a frame or half a manifest behind.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import yaml

from farm.cutting.layout import FRAME_NAME, JOIN_SETTINGS, atomic_write, scene_dir
from farm.errors import InputError, OutputConflictError
from farm.spec import FilmSpec

# Settings that change how a film is rendered, not what it looks like: a film may be
# continued with other values for them.
EXECUTION_ONLY = {
    "render": {"workers", "cpus_per_worker", "gpus_per_worker", "retries"},
    "video": {"ffmpeg", *JOIN_SETTINGS},
    "models": {"cache_dir"},
}


def look(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved spec that decides what the film looks like."""
    out = json.loads(json.dumps(spec_dict))
    out.pop("timeline", None)  # derived from the rest by farm.cutting
    # The LLM wrote the story and the scenes; once they are in the spec, how it was reached
    # (server, model, timeouts) does not change a frame.
    out.pop("llm", None)
    for section, keys in EXECUTION_ONLY.items():
        for key in keys:
            out.get(section, {}).pop(key, None)
    return out


class FilmStore:
    def __init__(self, root: str | Path, spec: FilmSpec, same_as: tuple[FilmSpec, ...] = ()) -> None:
        """``same_as``: earlier forms of ``spec`` a folder may hold (the plan before narration
        lengthened scenes to fit their speech) that are the same film."""
        self.root = Path(root)
        self.spec = spec
        self.same_as = same_as
        self.path = self.root / spec.slug
        self.manifest_path = self.path / "manifest.json"
        self.manifest: dict[str, Any] = {}

    # --- opening ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create the film's folder, or reopen one that holds this same film.

        A folder holding a different film, or files that are not a film, is left untouched.
        """
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"{self.root}: the output path exists and is not a folder")
        if self.path.exists():
            self._check_same_film()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot create the film folder ({exc.strerror})") from exc
        atomic_write(self.path / "film.yaml", self.spec.to_yaml().encode())
        self.manifest = self._read_manifest() or self._new_manifest()
        self.save_manifest()

    def _check_same_film(self) -> None:
        spec_file = self.path / "film.yaml"
        if not self.path.is_dir():
            raise OutputConflictError(f"{self.path}: exists and is not a folder; choose another --out")
        if not spec_file.is_file():
            if any(self.path.iterdir()):
                raise OutputConflictError(f"{self.path}: holds files but no film.yaml; choose another --out or empty it")
            return
        try:
            existing = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise OutputConflictError(f"{spec_file}: cannot be read ({exc}); choose another --out") from exc
        if not isinstance(existing, dict) or all(look(existing) != look(s.to_dict()) for s in (self.spec, *self.same_as)):
            field = first_difference(existing if isinstance(existing, dict) else {}, self.spec.to_dict())
            raise OutputConflictError(
                f"{self.path}: already holds a different film (differs at {field}); "
                "choose another --out, or remove that folder to render it again")

    def _new_manifest(self) -> dict[str, Any]:
        counts = self.spec.frames_per_scene()
        return {
            "film": self.spec.slug,
            "created": time.time(),
            "scenes": [
                {"index": i, "state": "pending", "frames_expected": n, "frames_written": 0,
                 "attempts": 0, "anchor_attempts": 0, "failures": [], "hashes": {}, "seconds": None, "worker": None}
                for i, n in enumerate(counts)
            ],
        }

    def _read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{self.manifest_path}: cannot be read ({exc}); move it away to start this film over") from exc
        if len(manifest.get("scenes", [])) != len(self.spec.scenes):
            raise InputError(f"{self.manifest_path}: does not match the film's scenes; move it away to start over")
        return manifest

    def save_manifest(self) -> None:
        self.manifest["updated"] = time.time()
        atomic_write(self.manifest_path, json.dumps(self.manifest, indent=1).encode())

    # --- scenes and frames -----------------------------------------------------------------

    def scene_dir(self, index: int) -> Path:
        return scene_dir(self.path, index)

    def frame_path(self, scene: int, frame: int) -> Path:
        return self.scene_dir(scene) / FRAME_NAME.format(frame)

    def scene_entry(self, index: int) -> dict[str, Any]:
        return self.manifest["scenes"][index]

    def write_frame(self, scene: int, frame: int, png: bytes) -> None:
        atomic_write(self.frame_path(scene, frame), png)
        entry = self.scene_entry(scene)
        entry["hashes"][str(frame)] = hashlib.sha256(png).hexdigest()[:16]
        entry["frames_written"] = len(entry["hashes"])

    def scene_complete(self, index: int) -> bool:
        """Done in the manifest, and every frame still on disk."""
        entry = self.scene_entry(index)
        return entry["state"] == "done" and all(
            self.frame_path(index, f).is_file() for f in range(entry["frames_expected"]))


def first_difference(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    a, b = look(a) if not prefix else a, look(b) if not prefix else b
    for key in list(a) + [k for k in b if k not in a]:
        where = f"{prefix}.{key}" if prefix else str(key)
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            if va != vb:
                return first_difference(va, vb, where)
        elif va != vb:
            return where
    return "?"
