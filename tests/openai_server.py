"""An HTTP server on loopback that speaks the OpenAI protocol, for the real ``openai`` client.

It answers /v1/chat/completions (plain, and with response_format json_schema or
json_object), /v1/completions and /v1/models the way a small model would, and can
be told to answer the next requests in a given way: an error status with a body and
headers, a delay, a body that is not JSON, a refusal, a cut-off answer, any content.
Every request is kept (path, headers, JSON body) for tests to look at.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import pytest

STORY = ("In a drop of meltwater on a glacier, a tardigrade wakes. Its legs are covered in long white fur, "
         "thick as a yeti's coat. Snow falls above it like a slow storm of stars. It climbs onto a moss leaf "
         "and looks out over the frozen valley.")

@dataclass
class Scripted:
    """One scripted answer: status, JSON (or raw) body, headers, a delay before answering."""
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: Optional[bytes] = None

def error(status: int, message: str, code: Optional[str] = None, headers: Optional[dict] = None) -> Scripted:
    return Scripted(status=status, body={"error": {"message": message, "type": "error", "code": code}},
                    headers=headers or {})

def chat_answer(content: Optional[str], finish_reason: str = "stop", refusal: Optional[str] = None,
                model: str = "fake") -> Scripted:
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return Scripted(body={"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                          "model": model, "choices": [{"index": 0, "message": message,
                                                       "finish_reason": finish_reason}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

def completion_answer(text: str, finish_reason: str = "stop", model: str = "fake") -> Scripted:
    return Scripted(body={"id": "cmpl-1", "object": "text_completion", "created": int(time.time()), "model": model,
                          "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}]})

def scenes_for(text: str) -> list[dict[str, str]]:
    """What a well-behaved model makes of a story chunk: a scene per sentence."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?。])\s*", text) if s.strip()]
    return [{"narration": s, "prompt": f"a painting of {s[:80].rstrip('.。')}, soft light"} for s in sentences]

class FakeOpenAI:
    def __init__(self, models: tuple[str, ...] = ("fake",), key: Optional[str] = None) -> None:
        self.models = models
        self.key = key
        self.queue: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.story = STORY
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, *answers: Scripted) -> None:
        with self.lock:
            self.queue.extend(answers)

    # --- the default answers of a small, obliging model --------------------------------------

    def answer(self, path: str, headers: dict[str, str], body: Any) -> Scripted:
        if self.key is not None and headers.get("authorization") != f"Bearer {self.key}":
            given = headers.get("authorization", "").removeprefix("Bearer ")
            # Like OpenAI, the message quotes the key it was given: farm must not repeat it.
            return error(401, f"Incorrect API key provided: {given}.", "invalid_api_key")
        if path == "/v1/models":
            return Scripted(body={"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                               "owned_by": "farm"} for m in self.models]})
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return error(404, f"no route {path}")
        if not isinstance(body, dict) or body.get("model") not in self.models:
            model = body.get("model") if isinstance(body, dict) else None
            return error(404, f"The model `{model}` does not exist.", "model_not_found")
        if path == "/v1/completions":
            prompt = body["prompt"]
            if prompt.endswith("JSON:\n"):
                chunk = prompt.split("The story text to split into scenes:\n", 1)[1].rsplit("\n\nJSON:", 1)[0]
                return completion_answer("Sure! Here are the scenes:\n```json\n"
                                         + json.dumps({"scenes": scenes_for(chunk)}) + "\n```\nEnjoy.")
            return completion_answer(" " + self.story)
        system = body["messages"][0]["content"]
        user = body["messages"][-1]["content"] if body["messages"][-1]["role"] == "user" else ""
        if "turn a short story into the scenes" in system:
            chunk = body["messages"][1]["content"].split("The story text to split into scenes:\n", 1)[1]
            content = json.dumps({"scenes": scenes_for(chunk)}, ensure_ascii=False)
            if body.get("response_format") is None:
                content = f"Here is the plan:\n```json\n{content}\n```"
            return chat_answer(content)
        if "shorten picture descriptions" in system:
            return chat_answer(" ".join(user.split()[:12]))
        seed = body.get("seed")
        return chat_answer(self.story + (f" (take {seed})" if seed is not None else ""))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self, body: Any) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": headers, "body": body})
                    scripted = fake.queue.pop(0) if fake.queue else None
                answer = scripted or fake.answer(self.path, headers, body)
                if answer.delay:
                    time.sleep(answer.delay)
                payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def do_GET(self) -> None:
                self._serve(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                self._serve(body)

        return Handler


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- pytest helpers shared by the LLM tests ----------------------------------------------------


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def llm_args(url: str, **settings) -> list[str]:
    values = {"base_url": url, "model": "fake", "retry_wait": 0.001, "timeout": 5, "candidates": 1, **settings}
    args = []
    for key, value in values.items():
        args += ["--set", f"llm.{key}={value}"]
    return args


def farm(capsys, *args: str) -> tuple[int, str, str]:
    from farm.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    last = err.strip().splitlines()[-1]
    assert last.startswith("farm: error: "), err
    return last
