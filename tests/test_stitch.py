"""Frames -> segments -> film through the real ffmpeg binary; subtitles on the timeline."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from farm.cutting.stitch import encode_segment, find_ffmpeg, join_segments, make_srt, scene_times, srt_time
from farm.errors import StitchError
from farm.spec import spec_from_dict

from conftest import tiny_film


def test_srt_time_format():
    assert srt_time(0) == "00:00:00,000"
    assert srt_time(5.25) == "00:00:05,250"
    assert srt_time(3723.5) == "01:02:03,500"


def test_srt_places_each_narration_at_its_scene():
    data = tiny_film(scenes=3, fps=12)
    data["scenes"][0]["duration"] = 2.5
    data["scenes"][1]["duration"] = 1
    data["scenes"][2]["duration"] = 4
    spec = spec_from_dict(data)
    assert scene_times(spec) == [(0.0, 2.5), (2.5, 3.5), (3.5, 7.5)]
    blocks = make_srt(spec).strip().split("\n\n")
    assert blocks[0].splitlines() == ["1", "00:00:00,000 --> 00:00:02,500", spec.scenes[0].narration]
    assert blocks[1].splitlines()[1] == "00:00:02,500 --> 00:00:03,500"
    assert blocks[2].splitlines()[1] == "00:00:03,500 --> 00:00:07,500"


def test_srt_timings_follow_the_frame_grid():
    # 1.03 s at 12 fps is 12 frames: the subtitle ends where the scene's frames end.
    data = tiny_film(scenes=2, fps=12, duration=1.03)
    spec = spec_from_dict(data)
    assert spec.frames_per_scene() == [12, 12]
    assert scene_times(spec)[1] == (1.0, 2.0)


def write_frames(folder, count, colour):
    folder.mkdir(parents=True)
    for i in range(count):
        image = np.full((64, 64, 3), colour, np.uint8)
        image[:, : (i * 7) % 64] = 255 - image[:, : (i * 7) % 64]
        Image.fromarray(image).save(folder / f"frame_{i:05d}.png")


def test_segments_join_into_a_film_with_exact_frames_and_subtitles(tmp_path):
    exe = find_ffmpeg()
    write_frames(tmp_path / "a", 7, (200, 30, 30))
    write_frames(tmp_path / "b", 5, (30, 30, 200))
    seg_a = encode_segment(tmp_path / "a", "frame_%05d.png", 7, 6, 18, tmp_path / "a.mp4", exe)
    seg_b = encode_segment(tmp_path / "b", "frame_%05d.png", 5, 6, 18, tmp_path / "b.mp4", exe)
    srt = tmp_path / "film.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,167\nred\n\n2\n00:00:01,167 --> 00:00:02,000\nblue\n")
    film = join_segments([seg_a, seg_b], srt, tmp_path / "film.mp4", exe)
    with av.open(str(film)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.width, video.height) == (64, 64)
        assert video.average_rate == 6
        assert len(container.streams.subtitles) == 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12
    # Red frames first, then blue: the scenes are in order.
    assert frames[0][..., 0].mean() > frames[0][..., 2].mean()
    assert frames[-1][..., 2].mean() > frames[-1][..., 0].mean()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_film_without_subtitle_track(tmp_path):
    exe = find_ffmpeg()
    write_frames(tmp_path / "a", 3, (10, 200, 10))
    seg = encode_segment(tmp_path / "a", "frame_%05d.png", 3, 3, 18, tmp_path / "a.mp4", exe)
    film = join_segments([seg], None, tmp_path / "film.mp4", exe)
    with av.open(str(film)) as container:
        assert len(container.streams.subtitles) == 0


def test_ffmpeg_failure_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StitchError) as info:
        encode_segment(tmp_path / "empty", "frame_%05d.png", 3, 3, 18, tmp_path / "x.mp4", find_ffmpeg())
    assert str(info.value).startswith("ffmpeg failed on segment") and "\n" not in str(info.value)


def test_configured_ffmpeg_must_exist(tmp_path):
    with pytest.raises(StitchError, match="^video.ffmpeg: .* is not an executable ffmpeg"):
        find_ffmpeg(str(tmp_path / "no-ffmpeg"))
