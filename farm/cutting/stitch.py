"""``farm stitch``: stitch a film already rendered again, with other video settings, rendering nothing.

Only ``video.*`` settings may change, and not ``video.fps`` or ``video.size``
(the frames were rendered for them). Frames are only read. Scenes whose new
narration is longer than their slot hold their last frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from farm.cutting.film import FilmCutter, StitchResult, plan_cut
from farm.cutting.layout import BRIDGE_NAME, FRAME_NAME, scene_dir
from farm.cutting.timeline import transition_frames
from farm.cutting.tools import find_ffmpeg
from farm.errors import InputError, SpecError
from farm.spec import FilmSpec, spec_from_dict

FIXED = {"video.fps", "video.size"}


def load_film(film_dir: Path, overrides: Sequence[str]) -> FilmSpec:
    spec_file = film_dir / "film.yaml"
    if not spec_file.is_file():
        raise InputError(f"{film_dir}: not a rendered film folder (no film.yaml)")
    try:
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{spec_file}: cannot be read ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{spec_file}: not a film spec")
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith("video."):
            raise SpecError(key or "--set", "farm stitch changes only video.* settings; "
                                            "render again (farm render) to change anything else")
        if key in FIXED:
            raise SpecError(key, "the frames were rendered for this value; render the film again to change it")
    return spec_from_dict(data, overrides=overrides)


def check_frames(spec: FilmSpec, film_dir: Path) -> None:
    for k, count in enumerate(spec.frames_per_scene()):
        for f in range(count):
            path = scene_dir(film_dir, k) / FRAME_NAME.format(f)
            if not path.is_file():
                raise InputError(f"{path}: missing; the film is not fully rendered (run farm render first)")


def bridges_on_disk(spec: FilmSpec, film_dir: Path) -> bool:
    t = transition_frames(spec.video.fps, spec.video.transition_seconds)
    return all((scene_dir(film_dir, k) / BRIDGE_NAME.format(i)).is_file()
               for k in range(len(spec.scenes) - 1) for i in range(t))


def stitch_film(film_dir: str | Path, overrides: Sequence[str] = (),
                progress: Optional[Callable[[str], None]] = None) -> StitchResult:
    """Stitch ``film_dir`` again with ``overrides`` applied to its video settings."""
    say = progress or (lambda message: None)
    film_dir = Path(film_dir)
    spec = load_film(film_dir, overrides)
    check_frames(spec, film_dir)
    exe = find_ffmpeg(spec.video.ffmpeg)
    plan = plan_cut(spec, exe, say, film_dir=film_dir, bridges=bridges_on_disk(spec, film_dir), hold_to_fit=True)
    cutter = FilmCutter(plan, film_dir, exe, say)
    try:
        for k in range(len(spec.scenes)):
            cutter.bridge_ready(k)
            cutter.scene_ready(k)
        return cutter.finish()
    except BaseException:
        cutter.close()
        raise
