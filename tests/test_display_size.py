"""video.display_size: the stitcher scales the film for display with a Lanczos filter; the frames
on disk stay as rendered; farm stitch may change it; a wrong value is one line naming the field."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from farm.changes import restitchable
from farm.cutting.film import FilmCutter, plan_cut
from farm.cutting.tools import find_ffmpeg
from farm.errors import SpecError
from farm.folder.layout import frame_path, scene_dir
from farm.spec import spec_from_dict
from farm.toy.world import ToyWorld

from conftest import decode_video, tiny_film


def toy_frames(count: int, seed: int) -> list[np.ndarray]:
    """64-pixel toy pictures, no noise: sharp edges, where the filter shows."""
    return list(ToyWorld(seed, size=64, noise=0.0).batch(count).images)


def cut(film_dir, frames_per_scene: list[list[np.ndarray]], **video):
    data = tiny_film(scenes=len(frames_per_scene))
    data["video"] = {"fps": 4, "size": 64, "narration": "none", "subtitles": "none", "transition": "cut",
                     "crf": 0, "pix_fmt": "yuv444p", **video}
    spec = spec_from_dict(data)
    exe = find_ffmpeg(spec.video.ffmpeg)
    plan = plan_cut(spec, exe, lambda _: None, film_dir=film_dir, bridges=False, hold_to_fit=False)
    for k, frames in enumerate(frames_per_scene):
        scene_dir(film_dir, k).mkdir(parents=True, exist_ok=True)
        for f, image in enumerate(frames):
            Image.fromarray(image).save(frame_path(film_dir, k, f))
    cutter = FilmCutter(plan, film_dir, exe, lambda _: None)
    for k in range(len(frames_per_scene)):
        cutter.scene_ready(k)
    return cutter.finish()


def test_the_film_plays_at_the_display_size_scaled_with_lanczos(tmp_path):
    frames = [toy_frames(4, 1), toy_frames(4, 2)]
    result = cut(tmp_path / "film", frames, display_size=256)
    assert result.checked["size"] == (256, 256)
    shown = decode_video(result.video)
    assert len(shown) == 8 and all(f.shape == (256, 256, 3) for f in shown)
    # The frames on disk stay as rendered.
    for k, scene in enumerate(frames):
        for f, image in enumerate(scene):
            assert np.array_equal(np.asarray(Image.open(frame_path(tmp_path / "film", k, f))), image)
    # Lossless (crf 0, yuv444p): what plays is the frame scaled by a Lanczos filter, not held in blocks.
    # Compared near the edges (where Lanczos and nearest-neighbour scaling differ by more than 8 levels);
    # measured (2026-12-04): at most 1.05 levels from PIL's Lanczos on average, 2.95 with ffmpeg's
    # bicubic instead, 9-23 from nearest-neighbour blocks.
    lanczos, nearest = [], []
    for image, played in zip(frames[0] + frames[1], shown):
        smooth, blocky = (np.asarray(Image.fromarray(image).resize((256, 256), method)).astype(float)
                          for method in (Image.LANCZOS, Image.NEAREST))
        edges = np.abs(smooth - blocky).max(-1) > 8
        lanczos.append(np.abs(played - smooth)[edges].mean())
        nearest.append(np.abs(played - blocky)[edges].mean())
    assert max(lanczos) < 1.5 and 5 * max(lanczos) < min(nearest), (lanczos, nearest)

def test_without_a_display_size_the_film_plays_at_the_frames_size(tmp_path):
    result = cut(tmp_path / "film", [toy_frames(4, 3)])
    assert result.checked["size"] == (64, 64)
    assert decode_video(result.video)[0].shape == (64, 64, 3)


def test_display_size_is_a_join_setting_and_checked():
    assert restitchable("video.display_size")  # farm stitch may change it: no frame changes
    for value in (255, 8, 10_000, "big"):
        with pytest.raises(SpecError, match=r"^video\.display_size: .*"):
            spec_from_dict(tiny_film(video={"display_size": value}))
    assert spec_from_dict(tiny_film(video={"display_size": 512})).video.played_size == 512
    assert spec_from_dict(tiny_film()).video.played_size == spec_from_dict(tiny_film()).video.size
