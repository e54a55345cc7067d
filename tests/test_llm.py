"""The openai client against a loopback server speaking the OpenAI protocol: every failure
gets one line naming the cause and what to do, exit 2, and no file written or changed."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from farm.errors import LLMError
from farm.spec import LLMSpec
from farm.writing.llm import BadAnswer, LLMClient, parse_json

from openai_server import FakeOpenAI, Scripted, chat_answer, error, error_line, farm, free_port, llm_args

KEY = "sk-test-SECRET-4242-abcdef"


# --- farm story: each failure of the server or the model ----------------------------------------

FAILURES = [
    ("403", [error(403, "You are not allowed to sample from this model")], {},
     r"may not use this model or endpoint \(403: You are not allowed.*\); use a key that may, or another llm.model"),
    ("unknown model", [], {"model": "no-such-model"},
     r"not found \(404: The model `no-such-model` does not exist.\): the server has no model 'no-such-model'"),
    ("429 every time", [error(429, "Rate limit reached", headers={"retry-after-ms": "1"})] * 4, {},
     r"rate limited \(429: Rate limit reached\) after 4 attempts; wait a while and run again"),
    ("quota", [error(429, "You exceeded your current quota", "insufficient_quota")], {},
     r"the account's quota is used up"),
    ("retry-after too long", [error(429, "slow down", headers={"retry-after": "3600"})], {},
     r"rate limited \(429: slow down\), and the server asks to wait 3600 s \(more than llm.max_retry_wait=60\)"),
    ("500 every time", [error(500, "boom")] * 4, {},
     r"the server failed \(500: boom\) after 4 attempts; run again later"),
    ("timeout", [Scripted(delay=1.5, body={})] * 2, {"timeout": 0.3, "retries": 1},
     r"no answer within llm.timeout=0.3 s after 2 attempts; raise llm.timeout"),
    ("body not JSON", [Scripted(raw=b"<html>gateway</html>")], {},
     r"the server's answer is not JSON .*it usually ends in /v1"),
    ("no choices", [Scripted(body={"object": "chat.completion", "choices": []})], {},
     r"the server's answer holds no choices"),
    ("length", [chat_answer("Once upon a", finish_reason="length")], {},
     r"the answer was cut off at llm.max_tokens=1500 tokens; raise llm.max_tokens"),
    ("refusal", [chat_answer(None, refusal="I can't help with that.")], {},
     r"the model refused \(I can't help with that.\); change the seed phrase"),
    ("content filter", [chat_answer("", finish_reason="content_filter")], {}, r"the model refused \(content filter\)"),
    ("empty", [chat_answer("   ")], {}, r"the model gave an empty answer"),
    ("400", [error(400, "max_tokens is too large")], {},
     r"the server refused the request \(400: max_tokens is too large\); check the llm settings"),
]


@pytest.mark.parametrize("name,answers,settings,message", FAILURES, ids=[f[0] for f in FAILURES])
def test_story_failure_is_one_line_and_writes_nothing(tmp_path, capsys, server, name, answers, settings, message):
    server.script(*answers)
    out = tmp_path / "film.yaml"
    code, stdout, err = farm(capsys, "story", "Yeti Tardigrade", "--out", str(out), *llm_args(server.url, **settings))
    assert code == 2
    line = error_line(err)
    assert line.startswith(f"farm: error: llm ({server.url}, model ")
    assert re.search(message, line), line
    assert not out.exists() and not (tmp_path / "film.candidates").exists()
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_not_retried(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "f.yaml"), *llm_args(url))
    assert code == 2
    assert "cannot connect" in error_line(err) and "start the server, or set llm.base_url" in err
    assert "retrying" not in err
    assert list(tmp_path.iterdir()) == []


def test_rate_limit_waits_as_the_server_says_then_succeeds(tmp_path, capsys, server):
    server.script(error(429, "slow down", headers={"retry-after-ms": "150"}), error(503, "warming up"))
    out = tmp_path / "film.yaml"
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(out), *llm_args(server.url))
    assert code == 0, err
    assert "rate limited (429: slow down); retrying in 0.15 s (2 of 4)" in err
    assert "server unavailable (503: warming up); retrying in 0.002 s (3 of 4)" in err  # 0.001 doubled
    assert len(server.requests) == 3
    assert yaml.safe_load(out.read_text())["story"]["text"].startswith("In a drop of meltwater")


def test_retry_after_is_honoured_in_time(server):
    """The client waits what the server asks (200 ms, not its own 1 ms), between the refused request
    and the next one: the wait is recorded with the requests made so far, and never slept."""
    waits = []
    server.script(error(429, "wait", headers={"retry-after-ms": "200"}))
    client = LLMClient(LLMSpec(base_url=server.url, model="fake", retry_wait=0.001), environ={},
                       sleep=lambda seconds: waits.append((seconds, len(server.requests))))
    assert client.ask("s", "u", 0.5).startswith("In a drop")
    assert waits == [(0.2, 1)] and len(server.requests) == 2


# --- keys ---------------------------------------------------------------------------------------


def test_wrong_key_message_never_repeats_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAI(key="sk-the-right-one") as server:
        code, out, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "f.yaml"), *llm_args(server.url))
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"  # it was sent ...
    assert code == 2
    line = error_line(err)
    assert "the server refused the API key (401: Incorrect API key provided: ***.); set $OPENAI_API_KEY" in line
    assert KEY not in err + out  # ... and never shown
    assert list(tmp_path.iterdir()) == []


def test_no_key_says_which_variable_to_set(tmp_path, capsys):
    with FakeOpenAI(key="sk-the-right-one") as server:
        code, _, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "f.yaml"),
                            *llm_args(server.url, api_key_env="MY_LLM_KEY"))
    assert code == 2 and "no key was sent: set $MY_LLM_KEY" in error_line(err)


def test_key_reaches_the_server_and_no_file_or_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FARM_TEST_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    with FakeOpenAI(key=KEY) as server:
        args = llm_args(server.url, api_key_env="FARM_TEST_KEY", candidates=2)
        code, out, err = farm(capsys, "story", "Yeti Tardigrade", "--pick", "2", *args)
        assert code == 0, err
        # The written spec names the server; the user trusts it (else the key would stay home).
        code2, out2, err2 = farm(capsys, "plan", "yeti-tardigrade.yaml", "--out", "planned.yaml",
                                 "--trust-spec-endpoints")
        assert code2 == 0, err2
        assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests)
        assert len(server.requests) == 3  # two stories, one plan
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"yeti-tardigrade.yaml", "planned.yaml", "candidate_1.yaml", "candidate_2.yaml"}
    for path in files:
        assert KEY not in path.read_text(encoding="utf-8"), path
    assert KEY not in out + err + out2 + err2
    saved = yaml.safe_load((tmp_path / "planned.yaml").read_text())
    assert saved["llm"]["api_key_env"] == "FARM_TEST_KEY" and saved["story"]["candidate"] == 2


def test_password_in_the_url_is_not_saved(tmp_path, capsys, server):
    url = server.url.replace("http://", "http://user:hunter2@")
    out = tmp_path / "f.yaml"
    code, stdout, err = farm(capsys, "story", "Yeti", "--out", str(out), *llm_args(url))
    assert code == 0, err
    assert "authorization" in server.requests[0]["headers"]
    assert "hunter2" not in out.read_text() + err + stdout
    assert yaml.safe_load(out.read_text())["llm"]["base_url"] == server.url


# --- JSON answers -------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ('{"scenes": []}', {"scenes": []}),
    ('Sure!\n```json\n{"a": [1, 2]}\n```\nHope that helps.', {"a": [1, 2]}),
    ('Here you go: {"a": "b"} -- enjoy', {"a": "b"}),
    ('```\n[{"x": 1}]\n```', [{"x": 1}]),
])
def test_tolerant_json(text, expected):
    assert parse_json(text) == expected


def test_not_json_at_all():
    with pytest.raises(BadAnswer, match="not valid JSON"):
        parse_json("I'd rather tell you a story about a yeti.")


def test_base_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    client = LLMClient(LLMSpec(model="fake"))
    assert client.ask("s", "u", 0.1).startswith("In a drop")
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_chat_request_carries_the_settings(server):
    client = LLMClient(LLMSpec(base_url=server.url, model="fake", temperature=0.3, max_tokens=77, seed=5), environ={})
    client.ask("system words", "user words", 0.3)
    body = server.requests[0]["body"]
    assert body["model"] == "fake" and body["temperature"] == 0.3 and body["max_tokens"] == 77 and body["seed"] == 5
    assert body["messages"] == [{"role": "system", "content": "system words"},
                                {"role": "user", "content": "user words"}]


def test_an_llm_error_ends_the_command_with_its_one_line_and_exit_2(capsys, monkeypatch):
    """Wherever under a command an LLMError comes from, farm prints it as its error line and exits 2."""
    def fails(*args, **kwargs):
        raise LLMError("llm (http://127.0.0.1:9/v1, model fake): the server failed (500: boom)")

    monkeypatch.setattr("farm.writing.steps.write_story", fails)
    assert farm(capsys, "story", "Yeti") == (
        2, "", "farm: error: llm (http://127.0.0.1:9/v1, model fake): the server failed (500: boom)\n")


def test_bad_llm_settings_name_the_field(capsys, tmp_path):
    for setting, field in [("llm.retries=-1", "llm.retries"), ("llm.timeout=0", "llm.timeout"),
                           ("llm.base_url=localhost:8000", "llm.base_url"), ("llm.candidates=0", "llm.candidates"),
                           ("llm.structured=yaml", "llm.structured"), ("llm.api_key_env=sk-123", "llm.api_key_env")]:
        code, _, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "f.yaml"), "--set", setting)
        assert code == 2 and error_line(err).startswith(f"farm: error: {field}: "), err
    assert list(tmp_path.iterdir()) == []


def test_nothing_configured_says_how_to_configure(capsys, tmp_path):
    code, _, err = farm(capsys, "story", "Yeti", "--out", str(tmp_path / "f.yaml"))
    assert code == 2
    assert "no LLM configured to write a story: set $OPENAI_API_KEY for OpenAI, or llm.base_url" in error_line(err)



# --- where the key goes -------------------------------------------------------------------------


def spec_naming(tmp_path, url, **video):
    data = {"title": "Yeti", "story": {"text": "A yeti wakes. It sleeps."}, "llm": {"base_url": url, "model": "fake",
                                                                                     "retry_wait": 0.001},
            "video": video}
    path = tmp_path / "film.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_key_goes_only_to_a_server_the_user_names(tmp_path, capsys, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("FARM_TRUSTED_ENDPOINTS", raising=False)
    sent = lambda: [r["headers"].get("authorization") for r in server.requests]  # noqa: E731
    # A server only the spec file names gets no key, and farm says so.
    code, _, err = farm(capsys, "plan", str(spec_naming(tmp_path, server.url)), "--out", str(tmp_path / "a.yaml"))
    assert code == 0, err
    assert sent() and f"Bearer {KEY}" not in sent() and "$OPENAI_API_KEY is not sent to" in err
    # Named by the user: on the command line, in the environment, or the spec trusted by a flag.
    for how, extra in (("--set", ["--set", f"llm.base_url={server.url}"]), ("trust", ["--trust-spec-endpoints"]),
                       ("env", [])):
        server.requests.clear()
        with monkeypatch.context() as env:
            if how == "env":
                env.setenv("FARM_TRUSTED_ENDPOINTS", f"https://elsewhere.example/v1,{server.url}")
            code, _, err = farm(capsys, "plan", str(spec_naming(tmp_path, server.url)), "--out",
                                str(tmp_path / f"{how}.yaml"), *extra)
        assert code == 0, err
        assert set(sent()) == {f"Bearer {KEY}"}, how
    assert "FARM_TRUST_SPEC_ENDPOINTS" not in os.environ and "FARM_TRUSTED_ENDPOINTS" not in os.environ


def test_a_spec_file_holds_no_secret_in_its_urls(tmp_path, capsys):
    for url, said in (("http://user:hunter2@127.0.0.1:9/v1", "a user:password"),
                      ("http://127.0.0.1:9/v1?api_key=hunter2", "a 'api_key' parameter")):
        code, _, err = farm(capsys, "plan", str(spec_naming(tmp_path, url)))
        assert code == 2 and error_line(err).startswith(f"farm: error: llm.base_url: holds {said}"), err
        assert "hunter2" not in err
        code, _, err = farm(capsys, "plan", str(spec_naming(tmp_path, "http://127.0.0.1:9/v1", speech_base_url=url)))
        assert code == 2 and error_line(err).startswith(f"farm: error: video.speech_base_url: holds {said}"), err


def test_a_local_clusters_workers_get_no_api_keys():
    import shutil
    import subprocess
    import sys
    import tempfile

    script = ("import os, ray\n"
              "from farm.driver.cluster import connect\n"
              "os.environ['OPENAI_API_KEY'] = 'sk-driver'\n"
              "connect(None)\n"
              "print(ray.get(ray.remote(lambda: repr(os.environ.get('OPENAI_API_KEY'))).remote()))\n"
              "print(os.environ['OPENAI_API_KEY'])\n"
              "ray.shutdown()\n")
    temp = tempfile.mkdtemp(prefix="farmkey", dir="/tmp")  # short: Ray's socket paths have a limit
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, RAY_TMPDIR=temp))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-2:] == ["None", "sk-driver"]  # the worker has none; the driver keeps it
