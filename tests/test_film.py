"""farm film, end to end: seed phrase -> stories from a loopback OpenAI-protocol server ->
scenes -> Ray render on the tiny preset -> film.mp4, then again without any LLM."""

from __future__ import annotations

import yaml

from conftest import decode_video, run_farm
from openai_server import FakeOpenAI, chat_answer, clean_env, free_port  # noqa: F401

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
