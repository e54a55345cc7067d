"""Where a film's files live in its folder, and how they are written (atomically).

    <film>/
      film.yaml  manifest.json  events.jsonl   the spec, the scenes' records, the runs' progress events
      scenes/NNN/frame_00000.png ...   a scene's frames (and the driver's latents and state)
      scenes/NNN/bridge_00000.png ...  morph bridge frames from scene NNN to the next
      segments/                        encoded pieces (derived: safe to delete), narration audio
      film.mp4  film.srt  film.vtt  contact.png  poster.png
      candidates/candidate_K.yaml      farm film's stories (farm.writing.story)

The driver writes frames, the cutter reads them and writes the film; both take the
names from here. ``film.yaml`` has one writer, :func:`write_film_yaml`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

from farm.errors import InputError
from farm.spec import FilmSpec

SPEC_NAME = "film.yaml"
MANIFEST_NAME = "manifest.json"
FRAME_NAME = "frame_{:05d}.png"
FRAME_PATTERN = "frame_%05d.png"  # the same name as ffmpeg's image2 pattern
BRIDGE_NAME = "bridge_{:05d}.png"
BRIDGE_PATTERN = "bridge_%05d.png"
EVENTS_NAME = "events.jsonl"  # farm.folder.events: every run's progress events, one JSON object a line
VIDEO_NAME = "film.mp4"
SRT_NAME = "film.srt"
VTT_NAME = "film.vtt"
CONTACT_NAME = "contact.png"
POSTER_NAME = "poster.png"
CANDIDATES_DIR = "candidates"


def scene_dir_name(index: int) -> str:
    """``scenes/NNN``: scene ``index``'s folder, relative to the film's (a string: cheap for 1,000 scenes)."""
    return f"scenes/{index:03d}"


def scene_dir(film_dir: Path, index: int) -> Path:
    return Path(film_dir) / scene_dir_name(index)


def frame_path(film_dir: Path, scene: int, frame: int) -> Path:
    return scene_dir(film_dir, scene) / FRAME_NAME.format(frame)


def bridge_path(film_dir: Path, scene: int, frame: int) -> Path:
    """Frame ``frame`` of the morph bridge from scene ``scene`` to the next."""
    return scene_dir(film_dir, scene) / BRIDGE_NAME.format(frame)


def bridge_on_disk(film_dir: Path, scene: int, frames: int) -> bool:
    """Every one of the ``frames`` frames of the morph bridge after scene ``scene`` is on disk."""
    return all(bridge_path(film_dir, scene, i).is_file() for i in range(frames))


def bridge_files(film_dir: Path, scene: int) -> list[Path]:
    """The frames on disk of the morph bridge after scene ``scene``."""
    return sorted(scene_dir(film_dir, scene).glob(BRIDGE_NAME.replace("{:05d}", "*")))


def segments_dir(film_dir: Path) -> Path:
    return Path(film_dir) / "segments"


def film_yaml(spec: FilmSpec, timeline: Optional[dict[str, Any]] = None) -> str:
    """The resolved spec; after a stitch, the timeline every tool follows (ignored when read back).
    Not the ffmpeg binary of this run: a film.yaml never names a program to run."""
    text = dataclasses.replace(spec, video=dataclasses.replace(spec.video, ffmpeg=None)).to_yaml()
    if timeline is not None:
        text += yaml.safe_dump({"timeline": timeline}, sort_keys=False, width=100)
    return text


def write_film_yaml(film_dir: Path, spec: FilmSpec, timeline: Optional[dict[str, Any]] = None) -> Path:
    """The film's resolved spec into its folder (before rendering, and again with the timeline after a stitch)."""
    path = Path(film_dir) / SPEC_NAME
    atomic_write(path, film_yaml(spec, timeline))
    return path


def temp_beside(path: Path) -> Path:
    """A name for ``path``'s file while it is made (ffmpeg's output before its rename): hidden,
    this process's own, and ending as ``path`` does, so a tool that reads the format from the
    name reads the right one."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def is_temporary(name: str) -> bool:
    """A file being made (``temp_beside``'s and ``atomic_write``'s names): never published, never read as done."""
    return name.startswith(".") and ".tmp" in name


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half,
    even after a crash of the machine: the new file is flushed to disk before it is renamed into
    place, and the rename is flushed with its folder. The file's mode follows the umask, as a file
    ``open`` makes (a temporary file starts private)."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{path}: cannot be written ({exc.strerror})") from exc
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{path}: cannot be written ({exc.strerror})") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def umask() -> int:
    """This process's umask, read without changing it (Linux says it in /proc; elsewhere it is
    set and set back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform or file system where a folder cannot be opened: the rename stands unsynced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
