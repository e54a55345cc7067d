"""farm story and farm plan against a loopback OpenAI-protocol server; the offline planner;
film folder names and any language."""

from __future__ import annotations

import json

import pytest
import yaml

from farm.spec import MAX_SCENE_SECONDS, MIN_SCENE_SECONDS, reading_seconds, slugify, spec_from_dict
from farm.writing.llm import LLMClient
from farm.writing.plan import CLIP_MAX_TOKENS, clip_token_count, split_sentences
from farm.writing.scenes import SCENES_SCHEMA, chunk_story, plan_scenes
from farm.writing.story import Candidate, choose

from openai_server import chat_answer, error, error_line, farm, llm_args


def story_file(tmp_path, server, text=None, **llm):
    data = {"title": "Yeti Tardigrade", "story": {"phrase": "Yeti Tardigrade", "text": text or server.story},
            "llm": {"base_url": server.url, "model": "fake", "retry_wait": 0.001, **llm}}
    path = tmp_path / "film.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# --- farm story ---------------------------------------------------------------------------------


def test_story_writes_numbered_candidates_and_the_chosen_spec(tmp_path, capsys, server):
    out = tmp_path / "yeti.yaml"
    code, stdout, err = farm(capsys, "story", "Yeti Tardigrade", "--candidates", "3", "--pick", "2", "--out", str(out),
                             *llm_args(server.url, seed=40, temperature=0.7), "--set", "render.preset=tiny")
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert [r["body"]["seed"] for r in server.requests] == [40, 41, 42]
    folder = tmp_path / "yeti.candidates"
    saved = [yaml.safe_load((folder / f"candidate_{k}.yaml").read_text()) for k in (1, 2, 3)]
    assert [s["text"].endswith(f"(take {40 + k})") for k, s in enumerate(saved)] == [True] * 3
    assert [s["candidate"] for s in saved] == [1, 2, 3] and saved[0]["llm"]["model"] == "fake"
    assert "[1]" in err and "[3]" in err and "(take 42)" in err  # shown
    spec = yaml.safe_load(out.read_text())
    assert spec["title"] == "Yeti Tardigrade"
    assert spec["story"] == {"phrase": "Yeti Tardigrade", "text": saved[1]["text"], "candidate": 2}
    assert spec["llm"]["model"] == "fake" and spec["llm"]["seed"] == 41 and spec["llm"]["temperature"] == 0.7
    assert spec["llm"]["base_url"] == server.url and spec["render"] == {"preset": "tiny"}
    # The story asked for: the phrase, in its own language.
    body = server.requests[0]["body"]
    assert body["messages"][1]["content"] == "The seed phrase: Yeti Tardigrade"
    assert "in the language of the seed phrase" in body["messages"][0]["content"]
    assert spec_from_dict(spec).story.text == saved[1]["text"]


def test_the_models_text_reaches_the_terminal_without_control_sequences(tmp_path, capsys, server):
    nasty = "A yeti \x1b]0;owned\x07wakes\x1b[2J\x1b[1A in the \x9b31m snow\x08."
    server.script(chat_answer(nasty), chat_answer(nasty))
    out = tmp_path / "yeti.yaml"
    code, _, err = farm(capsys, "story", "Yeti", "--candidates", "2", "--pick", "1", "--out", str(out),
                        *llm_args(server.url))
    assert code == 0, err
    assert "A yeti wakes in the 31m snow." in err, repr(err)  # shown, less what a terminal would obey
    assert not any(c in err for c in "\x1b\x07\x9b\r\x08"), repr(err)
    # The same for an error the server words.
    server.script(error(400, "bad \x1b[31mred\x1b[0m request"))
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "other.yaml"), *llm_args(server.url))
    assert code == 2 and "bad red request" in error_line(err) and "\x1b" not in err


def test_story_does_not_replace_a_spec_without_force(tmp_path, capsys, server):
    out = tmp_path / "yeti.yaml"
    out.write_text("title: Mine\n# my notes\n")
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(out), *llm_args(server.url))
    assert code == 2 and f"{out}: exists; farm story replaces it only with --force" in error_line(err)
    assert out.read_text() == "title: Mine\n# my notes\n" and not server.requests  # nothing asked, nothing changed
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(out), "--force", *llm_args(server.url))
    assert code == 0, err
    assert yaml.safe_load(out.read_text())["title"] == "Yeti"


def test_without_a_terminal_there_is_no_prompt_then_pick_uses_the_saved_ones(tmp_path, capsys, server):
    out = tmp_path / "yeti.yaml"
    args = ["--candidates", "2", "--out", str(out), *llm_args(server.url)]
    code, _, err = farm(capsys, "story", "Yeti", *args)  # pytest's stdin is not a terminal
    assert code == 2
    assert "no terminal to choose a story in: the 2 candidates are saved in" in error_line(err)
    assert "--pick K (1 to 2)" in err
    assert not out.exists() and len(server.requests) == 2
    code, _, err = farm(capsys, "story", "Yeti", "--pick", "2", *args)
    assert code == 0, err
    assert len(server.requests) == 2  # no new request: the saved candidate 2 was taken
    assert yaml.safe_load(out.read_text())["story"]["candidate"] == 2
    code, _, err = farm(capsys, "story", "Yeti", "--pick", "3", "--force", *args)
    assert code == 2 and "--pick 3: there are 2 candidate(s)" in error_line(err)


def test_choose_at_a_terminal_asks_until_the_answer_is_a_candidate(tmp_path):
    candidates = [Candidate(k, "p", f"story {k}", {}) for k in (1, 2, 3)]
    answers = iter(["", "7", "two", "3\n"])
    questions = []
    chosen = choose(candidates, None, lambda q: (questions.append(q), next(answers))[1], tmp_path)
    assert chosen.number == 3 and questions[0] == "Which story (1-3)? " and len(questions) == 4


def test_language_and_length_settings_reach_the_prompt(tmp_path, capsys, server):
    code, _, err = farm(capsys, "story", "Yeti Tardigrade", "--out", str(tmp_path / "f.yaml"),
                        *llm_args(server.url, language="français", story_words=99))
    assert code == 0, err
    system = server.requests[0]["body"]["messages"][0]["content"]
    assert "Write in français." in system and "a short story of 99 words or fewer" in system


def test_completions_endpoint_completes_the_phrase(tmp_path, capsys, server):
    out = tmp_path / "f.yaml"
    code, _, err = farm(capsys, "story", "Yeti Tardigrade", "--out", str(out),
                        *llm_args(server.url, endpoint="completions"))
    assert code == 0, err
    request = server.requests[0]
    assert request["path"] == "/v1/completions" and request["body"]["prompt"] == "Yeti Tardigrade\n\n"
    assert yaml.safe_load(out.read_text())["story"]["text"] == server.story
    # And its plan: a plain-text answer with a code fence and chatter around the JSON.
    code, _, err = farm(capsys, "plan", str(out))
    assert code == 0, err
    assert server.requests[-1]["body"]["prompt"].endswith("JSON:\n")
    assert len(yaml.safe_load(out.read_text())["scenes"]) == 4


# --- farm plan ----------------------------------------------------------------------------------


def test_plan_with_json_schema_writes_scenes_in_place(tmp_path, capsys, server):
    path = story_file(tmp_path, server)
    before = yaml.safe_load(path.read_text())
    code, stdout, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    assert stdout.strip() == str(path)
    request = server.requests[0]["body"]
    assert request["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "scenes", "schema": SCENES_SCHEMA, "strict": True}}
    after = yaml.safe_load(path.read_text())
    assert {k: v for k, v in after.items() if k != "scenes"} == before  # the rest is kept
    assert [s["narration"] for s in after["scenes"]] == split_sentences(server.story)
    for scene in after["scenes"]:
        assert scene["prompt"].startswith("a painting of ")
        assert scene["duration"] == reading_seconds(scene["narration"])
    assert [p.name for p in tmp_path.iterdir()] == ["film.yaml"]  # no temporary file left


def test_plan_keeps_the_files_comments_or_says_they_are_gone(tmp_path, capsys, server):
    path = story_file(tmp_path, server)
    path.write_text("# My yeti film: keep this note.\n" + path.read_text() + "video:\n  fps: 8  # slow\n")
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    text = path.read_text()
    assert text.startswith("# My yeti film: keep this note.\n") and "fps: 8  # slow" in text
    assert len(yaml.safe_load(text)["scenes"]) == 4 and "comments are not kept" not in err
    code, _, err = farm(capsys, "plan", str(path), "--force")  # the scenes replaced: written anew
    assert code == 0, err
    assert f"{path}: its comments are not kept" in err and "# My yeti" not in path.read_text()


def test_plan_out_leaves_the_original_alone_and_refuses_to_replan(tmp_path, capsys, server):
    path = story_file(tmp_path, server)
    original = path.read_bytes()
    code, _, err = farm(capsys, "plan", str(path), "--out", str(tmp_path / "planned.yaml"))
    assert code == 0, err
    assert path.read_bytes() == original
    planned = tmp_path / "planned.yaml"
    code, _, err = farm(capsys, "plan", str(planned))
    assert code == 2 and "already has 4 scene(s); run with --force" in error_line(err)
    code, _, err = farm(capsys, "plan", str(planned), "--force")
    assert code == 0, err


def test_server_without_json_mode_is_asked_in_plain_text(tmp_path, capsys, server):
    path = story_file(tmp_path, server)
    server.script(error(400, "Unknown parameter: 'response_format'."))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    assert "does not take response_format json_schema; asking in plain text" in err
    assert server.requests[0]["body"]["response_format"]["type"] == "json_schema"
    assert "response_format" not in server.requests[1]["body"]
    assert len(yaml.safe_load(path.read_text())["scenes"]) == 4


def test_malformed_json_is_asked_again_then_accepted(tmp_path, capsys, server):
    path = story_file(tmp_path, server)
    server.script(chat_answer('{"scenes": [{"narration": "In a drop'))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    assert "the answer was not valid JSON; asking again (2 of 4)" in err
    retry = server.requests[1]["body"]["messages"]
    assert retry[2]["role"] == "assistant" and "That answer was not valid JSON" in retry[3]["content"]


@pytest.mark.parametrize("content,problem", [
    ("the scenes are: one, two", "not valid JSON"),
    ('{"scenes": [{"narration": "A yeti."}]}', 'missing text "prompt" in scenes[0]'),
    ('{"shots": []}', 'not a JSON object with a non-empty "scenes" list'),
    ('{"scenes": ["a yeti"]}', "not a list of scene objects (scenes[0] is str)"),
    # The spec's bounds hold for the model's answer too.
    (json.dumps({"scenes": [{"narration": "yeti " * 500, "prompt": "a yeti"}]}),
     "scenes[0].narration is 2499 characters long (at most 2000)"),
])
def test_bad_json_every_time_fails_and_changes_nothing(tmp_path, capsys, server, content, problem):
    path = story_file(tmp_path, server, retries=1)
    original = path.read_bytes()
    server.script(chat_answer(content), chat_answer(content))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 2
    assert f"the model's answer was {problem}, 2 time(s); try again, raise llm.retries" in error_line(err)
    assert path.read_bytes() == original and [p.name for p in tmp_path.iterdir()] == ["film.yaml"]


@pytest.mark.parametrize("answer,message", [
    (chat_answer('{"scenes": [', finish_reason="length"), "cut off at llm.max_tokens"),
    (chat_answer(None, refusal="I won't."), "the model refused (I won't.)"),
    (error(401, "bad key"), "the server refused the API key (401: bad key); no key was sent: set $OPENAI_API_KEY"),
])
def test_plan_failures_change_nothing(tmp_path, capsys, server, answer, message):
    path = story_file(tmp_path, server)
    original = path.read_bytes()
    server.script(answer)
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 2 and message in error_line(err)
    assert path.read_bytes() == original


def test_long_prompt_is_condensed_by_the_model_not_cut(tmp_path, capsys, server):
    long_prompt = "a yeti " + "with long white fur and tiny claws " * 20
    assert clip_token_count(long_prompt) > CLIP_MAX_TOKENS
    path = story_file(tmp_path, server, text="A yeti sleeps.")
    server.script(chat_answer(json.dumps({"scenes": [{"narration": "A yeti sleeps.", "prompt": long_prompt}]})),
                  chat_answer(long_prompt),  # the first condensing is still too long: asked again
                  chat_answer("a sleeping white-furred yeti tardigrade, moss, soft light"))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    assert f"scene 1: prompt is {clip_token_count(long_prompt)} CLIP tokens" in err
    condense = server.requests[1]["body"]["messages"]
    assert ("shorten picture descriptions" in condense[0]["content"]
            and condense[1]["content"] == " ".join(long_prompt.split()))
    scenes = yaml.safe_load(path.read_text())["scenes"]
    assert scenes == [{"narration": "A yeti sleeps.",
                       "prompt": "a sleeping white-furred yeti tardigrade, moss, soft light",
                       "duration": MIN_SCENE_SECONDS}]


def test_prompt_the_model_cannot_condense_is_an_error(tmp_path, capsys, server):
    long_prompt = "yeti " * 100
    path = story_file(tmp_path, server, text="A yeti sleeps.", retries=1)
    original = path.read_bytes()
    server.script(chat_answer(json.dumps({"scenes": [{"narration": "A yeti sleeps.", "prompt": long_prompt}]})),
                  chat_answer(long_prompt), chat_answer(long_prompt))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 2
    assert error_line(err).startswith("farm: error: scenes[0].prompt: the model's visual prompt is still 100 CLIP "
                                      "tokens after 2 request(s) to condense it (at most 75)")
    assert path.read_bytes() == original


def test_long_story_is_planned_in_chunks_that_keep_the_thread(server):
    sentences = [f"On day {n} the tardigrade crossed glacier number {n}." for n in range(1, 121)]
    spec = spec_from_dict({"title": "Long", "story": {"text": " ".join(sentences)},
                           "llm": {"base_url": server.url, "model": "fake", "chunk_words": 200}})
    scenes = plan_scenes(spec, environ={})
    assert [s.narration for s in scenes] == sentences  # 120 scenes, in order
    assert len(server.requests) == len(chunk_story(spec.story.text, 200)) == 6
    second = server.requests[1]["body"]["messages"][1]["content"]
    assert "This is part 2 of 6 of the story." in second
    first = len(split_sentences(chunk_story(spec.story.text, 200)[0]))
    assert first == 22  # 200 words of nine-word sentences
    assert "The film so far has 22 scenes; the last ones were:" in second
    assert f"- narration: {sentences[21]}" in second and f"- narration: {sentences[18]}" not in second
    assert all(MIN_SCENE_SECONDS <= s.duration <= MAX_SCENE_SECONDS for s in scenes)


# --- offline planner ----------------------------------------------------------------------------


def test_no_llm_configured_plans_offline(tmp_path, capsys):
    story = " ".join(f"Le tardigrade numéro {n} se réveille sous la neige éternelle du glacier." for n in range(150))
    path = tmp_path / "film.yaml"
    path.write_text(yaml.safe_dump({"title": "Le Tardigrade Yéti", "story": {"text": story}}, allow_unicode=True))
    code, _, err = farm(capsys, "plan", str(path))
    assert code == 0, err
    assert "planning offline (no LLM configured)" in err
    scenes = yaml.safe_load(path.read_text(encoding="utf-8"))["scenes"]
    assert len(scenes) == 75  # one twelve-word sentence reads for 4.8 s: two make a scene
    assert " ".join(s["narration"] for s in scenes) == story
    for scene in scenes:
        assert clip_token_count(scene["prompt"]) <= CLIP_MAX_TOKENS
        assert scene["duration"] == 9.6  # 24 words / 2.5 words per second


def test_offline_planner_splits_japanese():
    scenes = plan_scenes(spec_from_dict({"title": "ユキタルディグラダ", "story": {
        "text": "氷河の雪どけ水の中で、小さなクマムシが目を覚ます。その脚は雪男のような白い毛で覆われている。"
                "星のように雪が降る。"}}),
        environ={})
    assert [s.narration for s in scenes] == [
        "氷河の雪どけ水の中で、小さなクマムシが目を覚ます。その脚は雪男のような白い毛で覆われている。",
        "星のように雪が降る。"]
    assert scenes[0].duration == reading_seconds(scenes[0].narration) > MIN_SCENE_SECONDS


@pytest.mark.parametrize("text,seconds", [
    ("one two three", 2.0),     # 1.2 s, raised to the minimum
    ("word " * 11, 4.4),        # 11 / 2.5
    ("word " * 100, 12.0),      # 40 s, lowered to the maximum
])
def test_reading_seconds(text, seconds):
    assert reading_seconds(text) == seconds


def test_reading_seconds_counts_unspaced_scripts_by_characters():
    # 30 kanji/kana = 10 words = 4.0 s at 2.5 words/s (3 characters a word).
    assert reading_seconds("雪" * 30) == 4.0


# --- film folder names --------------------------------------------------------------------------


@pytest.mark.parametrize("title,slug", [
    ("Yeti Tardigrade", "yeti-tardigrade"),
    ("Le Tardigrade Yéti", "le-tardigrade-yeti"),
    ("ユキタルディグラダ", "ユキタルディグラダ"),
    ("Ελληνική Ταινία", "ελληνική-ταινία"),
    ("हिन्दी फ़िल्म", "हिन्दी-फ़िल्म"),
    ("Straße nach Ørsted", "straße-nach-ørsted"),
    ("a/b\\c:d*e?f\"g<h>i|j", "a-b-c-d-e-f-g-h-i-j"),
    ("../../etc/passwd", "etc-passwd"),
    ("Cafe\u0301 Ü", "cafe-u"),  # decomposed input folds the same as composed
])
def test_slugify_keeps_letters_of_any_script(title, slug):
    assert slugify(title) == slug


def test_titles_without_letters_are_refused_and_slugs_are_bounded(capsys, tmp_path):
    assert slugify("???") == "" and len(slugify("yeti " * 100)) <= 80
    from farm.errors import SpecError

    with pytest.raises(SpecError, match="^title: must contain letters or digits"):
        spec_from_dict({"title": "¿?", "story": {"text": "A yeti."}})
    assert spec_from_dict({"title": "ユキタルディグラダ", "story": {"text": "雪。"}}).slug == "ユキタルディグラダ"
    code, _, err = farm(capsys, "story", "!!!", "--out", str(tmp_path / "f.yaml"))
    assert code == 2 and "holds no letters or digits" in error_line(err)


def test_slugs_fit_the_file_system_in_bytes_and_compatibility_forms_are_one(tmp_path):
    title = "\U00020000" * 80  # 80 letters of four bytes each (CJK extension B): 320 bytes
    slug = slugify(title)
    assert slug and len(slug.encode("utf-8")) <= 200 and set(slug) == {"\U00020000"}
    (tmp_path / slug).mkdir()  # the file system takes it (a name of over 255 bytes it refuses)
    assert slugify("ＹＥＴＩ ﬁlm") == "yeti-film"  # full-width letters and a ligature, NFKC


def test_json_schema_answers_in_any_script(server):
    spec = spec_from_dict({"title": "ユキタルディグラダ", "story": {"phrase": "ユキタルディグラダ",
                           "text": "クマムシが目を覚ます。雪が降る。"},
                           "llm": {"base_url": server.url, "model": "fake"}})
    scenes = plan_scenes(spec, client=LLMClient(spec.llm, environ={}), environ={})
    assert [s.narration for s in scenes] == ["クマムシが目を覚ます。", "雪が降る。"]
    assert "ユキタルディグラダ" in server.requests[0]["body"]["messages"][1]["content"]



def test_at_a_terminal_farm_story_asks_which_story(tmp_path, server):
    """The real command on a pseudo-terminal: it shows the candidates and asks."""
    import os
    import pty
    import subprocess
    import sys
    import time
    from pathlib import Path

    master, slave = pty.openpty()
    out = tmp_path / "f.yaml"
    farm_script = Path(sys.executable).with_name("farm")
    proc = subprocess.Popen([str(farm_script), "story", "Yeti", "--candidates", "2", "--out", str(out),
                             *llm_args(server.url, seed=1)], stdin=slave, stderr=slave, stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    while b"Which story (1-2)? " not in seen and time.monotonic() < deadline:
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
    assert b"Which story (1-2)? " in seen, seen.decode(errors="replace")
    assert b"(take 2)" in seen  # the candidates were shown first
    os.write(master, b"2\n")
    stdout, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert stdout.decode().strip() == str(out)
    assert yaml.safe_load(out.read_text())["story"]["candidate"] == 2
