"""A film rendered end to end with the default video settings, then `farm stitch` with others."""

from __future__ import annotations

import hashlib

import av
import pytest
import yaml

from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, run_farm, tiny_film


def frame_hashes(film_dir):
    return {p.relative_to(film_dir): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(film_dir.glob("scenes/*/frame_*.png"))}


@pytest.fixture(scope="module")
def default_film(ray_cluster, tmp_path_factory):
    data = tiny_film("Default Cut", scenes=2, duration=1.0, fps=4)
    data["video"] = {"fps": 4}  # the defaults: crossfade, soft subtitles, narration auto
    out = tmp_path_factory.mktemp("films")
    spec = spec_from_dict(data)
    # As farm film leaves it: the planned spec saved before rendering, before narration
    # lengthens its scenes (the same film, not a different one).
    (out / spec.slug).mkdir()
    (out / spec.slug / "film.yaml").write_text(spec.to_yaml())
    messages = []
    result = render_film(spec, out=out, progress=messages.append)
    return result, messages


def test_default_film_has_crossfades_subtitles_narration_and_pictures(default_film):
    result, messages = default_film
    film = yaml.safe_load((result.path / "film.yaml").read_text())
    timeline = film["timeline"]
    rendered = [len(list((result.path / "scenes" / f"{k:03d}").glob("frame_*.png"))) for k in range(2)]
    # narration (espeak-ng, installed by scripts/setup) lengthened the 1 s scenes
    assert any("narration: espeak-ng" in m for m in messages)
    assert all(n > 4 for n in rendered) and [s["frames"] for s in timeline["scenes"]] == rendered
    assert timeline["transition"] == "crossfade" and timeline["transition_frames"] == 2
    assert timeline["frames"] == sum(rendered) - 2 == result.frames
    assert [s["first_frame"] for s in timeline["scenes"]] == [0, rendered[0] - 2]
    with av.open(str(result.video)) as container:
        assert len(container.streams.subtitles) == 1 and len(container.streams.audio) == 1
    assert len(decode_video(result.video)) == timeline["frames"]
    for name in ("film.srt", "film.vtt", "contact.png", "poster.png"):
        assert (result.path / name).is_file(), name
    second = rendered[0] - 2
    assert f"00:00:{second // 4:02d},{second % 4 * 250:03d}" in (result.path / "film.srt").read_text()


def test_farm_stitch_with_other_settings_leaves_the_frames_untouched(default_film):
    result, _ = default_film
    before = frame_hashes(result.path)
    done = run_farm("stitch", str(result.path), "--set", "video.transition=cut", "--set", "video.narration=none",
                    "--set", "video.subtitles=burn", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(result.path / "film.mp4")
    assert frame_hashes(result.path) == before
    with av.open(str(result.video)) as container:
        assert len(container.streams.subtitles) == 0 and len(container.streams.audio) == 0
    assert len(decode_video(result.video)) == len(before)  # a cut: every frame once
    film = yaml.safe_load((result.path / "film.yaml").read_text())
    assert film["video"]["transition"] == "cut" and film["timeline"]["frames"] == len(before)


def test_farm_stitch_bad_input_is_one_line(default_film, tmp_path):
    result, _ = default_film
    before = frame_hashes(result.path)
    for args, words in [(["--set", "render.cutouts=3"], "render.cutouts: farm stitch changes only video"),
                        (["--set", "video.transition=wipe"], "video.transition: 'wipe' is not one of"),
                        (["--set", "video.fps=8"], "video.fps: the frames were rendered for this value")]:
        done = run_farm("stitch", str(result.path), *args)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("farm: error: ") and words in done.stderr
    missing = run_farm("stitch", str(tmp_path))
    assert missing.returncode == 2 and "not a rendered film folder" in missing.stderr
    assert frame_hashes(result.path) == before
    # a film with a frame gone: named, nothing written
    lost = sorted(result.path.glob("scenes/001/frame_*.png"))[1]
    data = lost.read_bytes()
    lost.unlink()
    try:
        film_before = (result.path / "film.mp4").read_bytes()
        done = run_farm("stitch", str(result.path))
        assert done.returncode == 2 and f"{lost}: missing" in done.stderr
        assert (result.path / "film.mp4").read_bytes() == film_before
    finally:
        lost.write_bytes(data)


def test_a_full_disk_is_one_line_and_the_film_stays_as_it_was(default_film):
    """The disk refuses every write past a few kilobytes (RLIMIT_FSIZE in the child, the kernel's own
    refusal, as a full disk refuses): farm stitch stops in one line naming the file, and the film,
    its frames and its film.yaml are the ones it had."""
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    result, _ = default_film
    keep = {name: (result.path / name).read_bytes() for name in ("film.mp4", "film.yaml", "film.srt")}
    frames = frame_hashes(result.path)

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as ENOSPC does
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    farm = Path(sys.executable).with_name("farm")
    done = subprocess.run([str(farm), "stitch", str(result.path), "--set", "video.transition=cut", "--quiet"],
                          preexec_fn=small_disk, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("farm: error: ") and "Traceback" not in done.stderr
    assert str(result.path) in done.stderr  # names the file it could not write
    assert {name: (result.path / name).read_bytes() for name in keep} == keep
    assert frame_hashes(result.path) == frames
    assert not [p for p in result.path.rglob("*") if ".tmp" in p.name]  # no half-written file left


def test_morph_film_gets_bridge_frames_from_a_worker(ray_cluster, tmp_path):
    data = tiny_film("Morph Film", scenes=2, duration=1.0, fps=4, video={"transition": "morph"})
    messages = []
    result = render_film(spec_from_dict(data), out=tmp_path, progress=messages.append)
    bridges = sorted((result.path / "scenes" / "000").glob("bridge_*.png"))
    assert len(bridges) == 2 and not list((result.path / "scenes" / "001").glob("bridge_*.png"))
    frames = decode_video(result.video)
    assert len(frames) == result.frames == 4 + 2 + 4
    import numpy as np
    from PIL import Image

    last = np.asarray(Image.open(result.path / "scenes" / "000" / "frame_00003.png").convert("RGB"), dtype=float)
    first = np.asarray(Image.open(bridges[0]).convert("RGB"), dtype=float)
    assert np.abs(last - first).mean() < 1.0  # a morph starts at the image of scene 1's last latents
    assert np.abs(frames[4] - first).mean() < 12  # and sits between the scenes in the film
    assert not any("using crossfade" in m for m in messages)
