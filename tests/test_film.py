"""farm/film.py, the pipeline: a spec rendered through a real local Ray cluster into frames on disk
and a playable film (render_film), and a seed phrase made a film end to end (make_film, farm film):
stories from a loopback OpenAI-protocol server, scenes, the render, then again without any LLM."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
import yaml
from PIL import Image

from farm.driver.jobs import plan_jobs
from farm.errors import OutputConflictError
from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, run_farm, tiny_film
from openai_server import FakeOpenAI, chat_answer, free_port


def decode(path):
    """The film's frames, its video stream, its duration in seconds and its subtitle track count."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return decode_video(path), stream, float(container.duration) / 1e6, len(container.streams.subtitles)


def scene_frames(film_dir, scene):
    return sorted((film_dir / "scenes" / f"{scene:03d}").glob("frame_*.png"))


@pytest.fixture(scope="module")
def keyframe_film(ray_cluster, tmp_path_factory):
    data = tiny_film("Keyframe Film", scenes=3, duration=1.0, fps=4)
    data["scenes"][1]["duration"] = 1.5
    spec = spec_from_dict(data)
    out = tmp_path_factory.mktemp("films")
    messages = []
    result = render_film(spec, out=out, progress=messages.append)
    return spec, out, result, messages


def test_film_has_every_frame_of_every_scene(keyframe_film):
    spec, out, result, _ = keyframe_film
    expected = sum(round(s.seconds * spec.video.fps) for s in spec.scenes)
    assert expected == 4 + 6 + 4
    frames, stream, duration, subtitles = decode(result.video)
    assert len(frames) == result.frames == expected
    assert stream.codec_context.pix_fmt == "yuv420p" and (stream.width, stream.height) == (128, 128)
    assert stream.average_rate == spec.video.fps
    assert duration == pytest.approx(expected / spec.video.fps, abs=0.01)
    assert subtitles == 1


def test_frames_on_disk_match_the_film(keyframe_film):
    spec, out, result, _ = keyframe_film
    film_frames, *_ = decode(result.video)
    on_disk = [p for scene in range(3) for p in scene_frames(result.path, scene)]
    assert [len(scene_frames(result.path, s)) for s in range(3)] == [4, 6, 4]
    # The video is the PNG frames, in order (H.264 is lossy: compare loosely).
    for index in (0, 5, 13):
        png = np.asarray(Image.open(on_disk[index]).convert("RGB"), dtype=float)
        assert np.abs(png - film_frames[index]).mean() < 12


def test_manifest_and_resolved_spec_are_saved(keyframe_film):
    spec, out, result, _ = keyframe_film
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert [s["state"] for s in manifest["scenes"]] == ["done"] * 3
    assert [s["frames_written"] for s in manifest["scenes"]] == [4, 6, 4]
    assert all(s["attempts"] == 1 and not s["failures"] for s in manifest["scenes"])
    saved = yaml.safe_load((result.path / "film.yaml").read_text())
    assert saved.pop("timeline")["frames"] == result.frames  # appended by the cutting
    assert saved == spec.to_dict()


def test_subtitles_sit_on_the_timeline(keyframe_film):
    _, _, result, _ = keyframe_film
    srt = result.subtitles.read_text()
    assert "00:00:00,000 --> 00:00:01,000" in srt
    assert "00:00:01,000 --> 00:00:02,500" in srt
    assert "00:00:02,500 --> 00:00:03,500" in srt


def test_keyframe_mode_renders_anchors_first(keyframe_film):
    spec, _, result, messages = keyframe_film
    jobs = plan_jobs(spec)
    assert [j.key for j in jobs if j.kind == "anchor"] == [("anchor", 0), ("anchor", 1)]
    assert [j.start_from for j in jobs if j.kind == "scene"] == [None, ("anchor", 0), ("anchor", 1)]
    for k in (0, 1):
        assert (result.path / "scenes" / f"{k:03d}" / "anchor_latents.npz").is_file()


def test_rendering_again_keeps_what_is_rendered(keyframe_film, ray_cluster):
    spec, out, result, _ = keyframe_film
    before = {p: p.stat().st_mtime_ns for p in result.path.rglob("frame_*.png")}
    again = render_film(spec, out=out)
    assert again.scenes_rendered == 0
    assert {p: p.stat().st_mtime_ns for p in result.path.rglob("frame_*.png")} == before
    # A scene that lost a frame is rendered again, and only that scene, to the same pixels.
    lost = scene_frames(result.path, 1)[2]
    lost_bytes = lost.read_bytes()
    lost.unlink()
    # While this process renders, the folder is its own: a second run, of any command, stops in
    # one line naming this one and touches nothing.
    others = []

    def meanwhile(event):
        if event["event"] == "frames" and not others:
            files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
            others.append(run_farm("render", str(result.path / "film.yaml"), "--out", str(out)))
            others.append(run_farm("stitch", str(result.path)))
            others.append(run_farm("render", str(result.path / "film.yaml"), "--out", str(out), "--resume"))
            assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files

    third = render_film(spec, out=out, events=meanwhile)
    assert len(others) == 3
    for other in others:
        lines = other.stderr.strip().splitlines()
        assert other.returncode == 2 and len(lines) == 1, other.stderr
        assert lines[0].startswith(f"farm: error: {result.path}: farm render (pid {os.getpid()} on "), lines[0]
        assert lines[0].endswith("is using this film folder; wait for it to end, or stop it (one run at a time "
                                 "per film)")
    assert not list(out.glob(".*.lock"))  # gone with its run
    assert third.scenes_rendered == 1
    assert lost.read_bytes() == lost_bytes
    assert scene_frames(result.path, 0)[0].stat().st_mtime_ns == before[scene_frames(result.path, 0)[0]]
    assert len(decode(third.video)[0]) == result.frames


def test_keyframe_scene_starts_from_the_anchor_before_it(keyframe_film):
    """Scene k's frames are exactly what the bare renderer makes from anchor k-1's saved latents."""
    import torch

    from farm.driver.jobs import job_arguments
    from farm.render.bigsleep import Latents, render_scene
    from farm.render.models import load_models

    spec, out, result, _ = keyframe_film
    torch.set_num_threads(1)
    models = load_models(spec.models, spec.video.size, torch.device("cpu"))
    jobs = {job.key: job for job in plan_jobs(spec)}
    assert jobs[("scene", 2)].start_from == ("anchor", 1)
    with np.load(result.path / "scenes" / "001" / "anchor_latents.npz") as saved:
        anchor = Latents.from_numpy({k: saved[k] for k in saved.files}, models.device)
    settings, prompts, seed, frames = job_arguments(spec, jobs[("scene", 2)], spec.frames_per_scene())
    expected = [f.image for f in render_scene(models, settings, prompts, seed, frames, init=anchor)]
    on_disk = [np.asarray(Image.open(p)) for p in scene_frames(result.path, 2)]
    assert len(on_disk) == len(expected) == 4
    assert all(np.array_equal(a, b) for a, b in zip(on_disk, expected))


def test_a_different_film_in_the_folder_is_refused_and_untouched(keyframe_film):
    spec, out, result, _ = keyframe_film
    snapshot = {p: p.read_bytes() for p in result.path.rglob("*") if p.is_file()}
    other = spec_from_dict(spec.to_dict(), overrides=["scenes.0.prompt=a red balloon"])
    with pytest.raises(OutputConflictError, match=r"already holds a different film \(differs at scenes\[0\]\.prompt\)"):
        render_film(other, out=out)
    assert {p: p.read_bytes() for p in result.path.rglob("*") if p.is_file()} == snapshot


def test_reseed_modes(ray_cluster, tmp_path):
    jumps = {}
    for mode in ("chain", "independent"):
        # ema_start=initial: the first frames stay near the starting latents, which is what makes a
        # chained scene join seamlessly (big-sleep's bias-corrected average jumps to the new trajectory).
        spec = spec_from_dict(tiny_film(f"Mode {mode}", scenes=2, duration=1.0, fps=3),
                              overrides=[f"render.reseed={mode}", "render.ema_start=initial"])
        result = render_film(spec, out=tmp_path)
        assert len(decode(result.video)[0]) == 6
        last_of_first = np.asarray(Image.open(scene_frames(result.path, 0)[-1]), dtype=float)
        first_of_second = np.asarray(Image.open(scene_frames(result.path, 1)[0]), dtype=float)
        jumps[mode] = np.abs(last_of_first - first_of_second).mean()
    # chain: scene 2 starts from scene 1's last latents, a small step; independent: another picture.
    assert jumps["chain"] < jumps["independent"] / 2, jumps


def test_story_without_scenes_is_split_and_rendered(ray_cluster, tmp_path):
    data = tiny_film("From Story", scenes=1, fps=2)
    del data["scenes"]
    data["story"] = {"text": "A yeti tardigrade wakes. It sleeps again."}
    result = render_film(spec_from_dict(data), out=tmp_path)
    saved = yaml.safe_load((result.path / "film.yaml").read_text())
    assert [s["narration"] for s in saved["scenes"]] == ["A yeti tardigrade wakes. It sleeps again."]
    assert saved["scenes"][0]["duration"] == 2.8  # 7 words read at 2.5 words per second
    assert len(decode(result.video)[0]) == result.frames == 6  # 2.8 s at 2 fps, rounded


def test_a_scene_that_keeps_failing_spends_its_retries_and_keeps_the_rest(ray_cluster, tmp_path):
    from farm.errors import RenderError

    spec = spec_from_dict(tiny_film("Failing Scene", scenes=2, duration=1.0, fps=3), overrides=["render.retries=1"])
    result = render_film(spec, out=tmp_path)
    # Corrupt the anchor scene 2 starts from (latents of the wrong shape), and lose one of scene 2's frames.
    np.savez(result.path / "scenes" / "000" / "anchor_latents.npz", z=np.zeros((2, 3), np.float32),
             classes=np.zeros((2, 3), np.float32))
    scene_frames(result.path, 1)[0].unlink()
    kept = {p: p.read_bytes() for p in scene_frames(result.path, 0)}
    with pytest.raises(RenderError, match=r"^scene 2 failed 2 time\(s\); last error: RuntimeError"):
        render_film(spec, out=tmp_path)
    manifest = json.loads((result.path / "manifest.json").read_text())
    second = manifest["scenes"][1]
    # attempts counts every start of the scene, the first (successful) run's included
    assert second["state"] == "failed" and second["attempts"] == 3 and len(second["failures"]) == 2
    assert manifest["scenes"][0]["state"] == "done"
    assert {p: p.read_bytes() for p in scene_frames(result.path, 0)} == kept


# --- farm film PHRASE ---------------------------------------------------------------------------

KEY = "sk-film-SECRET-0123456789"
PHRASE = "ユキタルディグラダ"
STORY = "氷河の雪どけ水の中で、小さなクマムシが目を覚ます。白い毛の脚で、星のように降る雪を見上げる。"


def test_film_from_a_phrase_in_japanese_then_again_without_llm(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    settings = ["--set", "llm.model=fake", "--set", "llm.retry_wait=0.001", "--set", "video.fps=2",
                "--set", "render.cutouts=2", "--set", "render.warmup_steps=1", "--set", "render.anchor_steps=2",
                "--set", "render.workers=1", "--set", "video.transition=cut", "--set", "video.narration=none"]
    with FakeOpenAI(key=KEY) as server:
        server.script(chat_answer("The first story, not chosen."), chat_answer(STORY))
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        result = run_farm("film", PHRASE, "--preset", "tiny", "--pick", "2", "--candidates", "2",
                          "--out", str(out), *settings, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        paths = [r["path"] for r in server.requests]
    assert paths == ["/v1/chat/completions"] * 3  # two stories, one plan
    folder = out / PHRASE
    assert result.stdout.strip() == str(folder / "film.mp4")
    # The chosen story and its plan are saved beside the film ...
    spec = yaml.safe_load((folder / "film.yaml").read_text(encoding="utf-8"))
    assert spec["title"] == PHRASE and spec["story"] == {"phrase": PHRASE, "text": STORY, "candidate": 2}
    assert [s["narration"] for s in spec["scenes"]] == ["氷河の雪どけ水の中で、小さなクマムシが目を覚ます。",
                                                        "白い毛の脚で、星のように降る雪を見上げる。"]
    assert all(s["prompt"].startswith("a painting of ") for s in spec["scenes"])
    assert spec["llm"]["base_url"] == server.url and spec["render"]["preset"] == "tiny"
    assert sorted(p.name for p in (folder / "candidates").iterdir()) == ["candidate_1.yaml", "candidate_2.yaml"]
    # Reading time, three kana or kanji to a word at 2.5 words a second: 23 characters are
    # 3.07 -> 3.1 s, 19 are 2.53 -> 2.5 s; at 2 fps that is 6 + 5 frames.
    assert [s["duration"] for s in spec["scenes"]] == [3.1, 2.5]
    frames = decode_video(folder / "film.mp4")
    assert len(frames) == 11 and frames[0].shape == (128, 128, 3)
    srt = (folder / "film.srt").read_text(encoding="utf-8")
    assert "00:00:03,000 --> 00:00:05,500\n白い毛の脚で、星のように降る雪を見上げる。" in srt
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".srt"):
            assert KEY not in path.read_text(encoding="utf-8"), path
    assert KEY not in result.stdout + result.stderr

    # Again, with no server at all: the saved story and plan are enough.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    again = run_farm("film", PHRASE, "--preset", "tiny", "--pick", "2", "--out", str(out), *settings, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "rendering from them (no LLM)" in again.stderr and "every scene is already rendered" in again.stderr
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    render = run_farm("render", str(folder / "film.yaml"), "--out", str(out), cwd=tmp_path)
    assert render.returncode == 0, render.stderr
    assert render.stdout.strip() == str(folder / "film.mp4")


def test_film_without_llm_or_terminal_fails_before_any_folder(tmp_path):
    result = run_farm("film", "Yeti Tardigrade", "--preset", "tiny", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "farm: error: no LLM configured to write a story: set $OPENAI_API_KEY")
    assert not (tmp_path / "out" / "yeti-tardigrade" / "film.yaml").exists()


def test_film_whose_plan_fails_keeps_the_stories_and_writes_no_spec(tmp_path, capsys):
    from openai_server import error_line, farm

    with FakeOpenAI() as server:
        server.script(chat_answer(STORY), chat_answer("Scenes? Here they are: one, two."))
        code, _, err = farm(capsys, "film", PHRASE, "--preset", "tiny", "--out", str(tmp_path / "out"),
                            "--set", f"llm.base_url={server.url}", "--set", "llm.model=fake",
                            "--set", "llm.retries=0", "--set", "llm.candidates=1")
    assert code == 2
    assert "the model's answer was not valid JSON, 1 time(s)" in error_line(err)
    folder = tmp_path / "out" / PHRASE
    assert [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*"))] == [
        "candidates", "candidates/candidate_1.yaml"]


def test_a_keyframe_film_on_one_worker_of_three_places_is_the_film_within_the_batch_tolerance(keyframe_film,
                                                                                               tmp_path):
    """render.scenes_per_worker 3, one worker: the anchors and the first scene share its batch, the
    later scenes join as the anchors leave; every frame is there, and each is the one-scene-per-worker
    film's within tests/test_batch.py's tolerance (the anchors' latents drift a little too)."""
    from test_batch import FRAME_LEVELS

    spec, out, first, _ = keyframe_film
    data = tiny_film("Keyframe Film", scenes=3, duration=1.0, fps=4)
    data["scenes"][1]["duration"] = 1.5
    data["render"]["scenes_per_worker"] = 3
    events = []
    result = render_film(spec_from_dict(data), out=tmp_path, events=events.append)
    assert len(result.workers) == 1
    frames = [e for e in events if e["event"] == "frames"]
    assert max(e["scenes_running"] for e in frames) >= 2  # scenes side by side on the one worker
    for scene in range(3):
        mine, theirs = scene_frames(result.path, scene), scene_frames(first.path, scene)
        assert [p.name for p in mine] == [p.name for p in theirs] and mine
        for a, b in zip(mine, theirs):
            levels = np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int)).max()
            assert levels <= FRAME_LEVELS, (a, levels)
