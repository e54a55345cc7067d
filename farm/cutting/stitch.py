"""``farm stitch``: stitch a film already rendered again, with other video settings, rendering nothing.

Only the ``video.*`` settings that do not change frames may change (farm.changes:
not ``video.fps`` or ``video.size``, the frames were rendered for them). Frames are
only read. Scenes whose new narration is longer than their slot hold their last frame.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from farm.changes import restitchable
from farm.cutting.film import FilmCutter, StitchResult, plan_cut
from farm.cutting.timeline import transition_frames
from farm.cutting.tools import find_ffmpeg
from farm.errors import InputError, SpecError
from farm.folder.layout import SPEC_NAME, VIDEO_NAME, bridge_on_disk, frame_path, write_film_yaml
from farm.folder.lock import folder_lock, store_lock
from farm.folder.remote import Remote, cache_for, is_uri, split_film_uri
from farm.spec import FilmSpec, spec_from_dict


def load_film(film_dir: Path, overrides: Sequence[str]) -> FilmSpec:
    spec_file = film_dir / SPEC_NAME
    if not spec_file.is_file():
        raise InputError(f"{film_dir}: not a rendered film folder (no film.yaml)")
    try:
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{spec_file}: cannot be read ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{spec_file}: not a film spec")
    if isinstance(data.get("video"), dict):
        data["video"].pop("ffmpeg", None)  # a film.yaml names no program to run (an old one may): --set does
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not key.startswith("video."):
            raise SpecError(key or "--set", "farm stitch changes only video.* settings; "
                                            "render again (farm render) to change anything else")
        if not restitchable(key):
            raise SpecError(key, "the frames were rendered for this value; render the film again to change it")
    return spec_from_dict(data, overrides=overrides)


def check_frames(spec: FilmSpec, film_dir: Path) -> None:
    for k, count in enumerate(spec.frames_per_scene()):
        for f in range(count):
            path = frame_path(film_dir, k, f)
            if not path.is_file():
                raise InputError(f"{path}: missing; the film is not fully rendered (run farm render first)")


def bridges_on_disk(spec: FilmSpec, film_dir: Path) -> bool:
    t = transition_frames(spec.video.fps, spec.video.transition_seconds)
    return all(bridge_on_disk(film_dir, k, t) for k in range(len(spec.scenes) - 1))


def stitch_film(film_dir: str | Path, overrides: Sequence[str] = (),
                progress: Optional[Callable[[str], None]] = None) -> StitchResult:
    """Stitch ``film_dir`` again with ``overrides`` applied to its video settings. ``film_dir`` may be
    a film in a film store (``s3://bucket/films/my-film``): stitched in a local copy, what it makes
    written back, the store's lock held."""
    say = progress or (lambda message: None)
    if is_uri(film_dir):
        return _stitch_stored(str(film_dir), overrides, say)
    film_dir = Path(film_dir)
    if not (film_dir / SPEC_NAME).is_file():  # said before a lock is made beside a folder that is none
        raise InputError(f"{film_dir}: not a rendered film folder (no film.yaml)")
    with folder_lock(film_dir, "farm stitch"):  # one run per film folder
        spec = load_film(film_dir, overrides)
        check_frames(spec, film_dir)
        exe = find_ffmpeg(spec.video.ffmpeg)
        plan = plan_cut(spec, exe, say, film_dir=film_dir, bridges=bridges_on_disk(spec, film_dir), hold_to_fit=True)
        cutter = FilmCutter(plan, film_dir, exe, say)
        try:
            for k in range(len(spec.scenes)):
                cutter.bridge_ready(k)
                cutter.scene_ready(k)
            stitched = cutter.finish()
        except BaseException:
            cutter.close()
            raise
        write_film_yaml(film_dir, spec, stitched.timeline.to_dict())
        return stitched


def _stitch_stored(uri: str, overrides: Sequence[str], say: Callable[[str], None]) -> StitchResult:
    root, slug = split_film_uri(uri)
    remote = Remote(root)
    local = cache_for(remote.uri + remote.query) / slug
    with folder_lock(local, "farm stitch", f"{remote.uri}/{slug}"), store_lock(remote, slug, "farm stitch", say):
        if not remote.pull(slug, local):
            raise InputError(f"{remote.uri}/{slug}: not a rendered film (nothing there)")
        started = time.time()
        stitched = stitch_film(local, overrides, say)
        remote.publish_since(local.parent, local, started)
        say(f"film stored: {remote.uri}/{slug}/{VIDEO_NAME}")
        return stitched
