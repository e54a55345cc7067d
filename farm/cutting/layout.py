"""Where a film's files live in its folder, and how they are written (atomically).

    <film>/
      film.yaml  manifest.json
      scenes/NNN/frame_00000.png ...   a scene's frames (and the driver's latents)
      scenes/NNN/bridge_00000.png ...  morph bridge frames from scene NNN to the next
      segments/                        encoded pieces (derived: safe to delete), narration audio
      film.mp4  film.srt  film.vtt  contact.png  poster.png

The driver's film store uses these names too; this module imports nothing of farm.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# video.* settings that change how frames are joined, not the frames: a film folder may be
# stitched again with other values (farm stitch, or farm render of the same film).
JOIN_SETTINGS = frozenset({"transition", "transition_seconds", "subtitles", "codec", "crf", "preset", "pix_fmt",
                           "narration", "voice", "speech_model", "speech_base_url", "speech_api_key_env"})

FRAME_NAME = "frame_{:05d}.png"
FRAME_PATTERN = "frame_%05d.png"  # the same name as ffmpeg's image2 pattern
BRIDGE_NAME = "bridge_{:05d}.png"
BRIDGE_PATTERN = "bridge_%05d.png"


def scene_dir(film_dir: Path, index: int) -> Path:
    return Path(film_dir) / "scenes" / f"{index:03d}"


def segments_dir(film_dir: Path) -> Path:
    return Path(film_dir) / "segments"


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
