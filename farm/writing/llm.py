"""The LLM client: any OpenAI-compatible server through the ``openai`` package.

One place talks to the server, so one place turns every way it can go wrong into a
one-line :class:`farm.errors.LLMError` saying what happened and what to do:

    401 key refused / 403 not allowed / 404 unknown model or wrong URL / 400 request refused
    429 rate limit, 5xx, timeout        retried (llm.retries) with backoff or the server's Retry-After
    connection refused                   not retried: nothing is listening
    refusal, cut-off (length), empty     not retried: asking again the same way gives the same
    malformed or schema-violating JSON   asked again, told what was wrong (llm.retries)

The API key is read from the environment (``llm.api_key_env``) when the client is made
and kept only in memory; every message that leaves this module has it blanked out.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

from farm.errors import LLMError
from farm.keys import OPENAI_URL, key_may_go
from farm.spec import LLMSpec

# Sent when no key is set: local servers (vLLM, Ollama, llama.cpp) accept anything.
NO_KEY = "no-key"


def base_url(llm: LLMSpec, environ: Mapping[str, str]) -> str:
    """The server farm talks to: llm.base_url, else $OPENAI_BASE_URL, else OpenAI's."""
    return ((llm.base_url or "").strip() or environ.get("OPENAI_BASE_URL", "").strip() or OPENAI_URL).rstrip("/")


def public_url(url: str) -> str:
    """The URL without any user:password part, fit to be shown or saved."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def configured(llm: LLMSpec, environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether an LLM is within reach: a base URL, or an API key in the environment."""
    environ = os.environ if environ is None else environ
    return bool((llm.base_url or "").strip() or environ.get("OPENAI_BASE_URL", "").strip()
                or environ.get(llm.api_key_env, "").strip())


class BadAnswer(ValueError):
    """The model's answer cannot be used as it is; the message says why (for asking again)."""


def parse_json(text: str) -> Any:
    """JSON from a model's answer, tolerating code fences and stray text around it."""
    fenced = re.search(r"```(?:json|JSON)?\s*\n?(.*?)```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    decoder = json.JSONDecoder()
    for body in candidates:
        body = body.strip()
        for start, char in enumerate(body):
            if char in "[{":
                try:
                    return decoder.raw_decode(body, start)[0]
                except ValueError:
                    continue
    raise BadAnswer("not valid JSON")


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: Optional[str]


class LLMClient:
    """Chat and completion requests with farm's retries and error messages.

    ``sleep`` and ``say`` are seams: tests pass their own to keep waits short and
    read the progress lines.
    """

    def __init__(self, llm: LLMSpec, environ: Optional[Mapping[str, str]] = None,
                 say: Optional[Callable[[str], None]] = None, sleep: Callable[[float], None] = time.sleep) -> None:
        from openai import OpenAI

        environ = os.environ if environ is None else environ
        self.llm = llm
        self.url = base_url(llm, environ)
        self.say = say or (lambda message: None)
        self.sleep = sleep
        self._key = environ.get(llm.api_key_env, "").strip()
        if self._key and not key_may_go(self.url, environ):
            # A server only the spec names gets no key (farm/keys.py); a local one needs none.
            self.say(f"llm: ${llm.api_key_env} is not sent to {public_url(self.url)}: only the spec names that "
                     "server (--trust-spec-endpoints, or --set llm.base_url=URL, sends it)")
            self._key = ""
        self.structured = llm.structured
        # The openai client's own retries are off: farm retries, so that waits and messages are its own.
        self._client = OpenAI(api_key=self._key or NO_KEY, base_url=self.url, timeout=llm.timeout, max_retries=0)

    # --- requests --------------------------------------------------------------------------

    def chat(self, messages: list[dict[str, str]], temperature: float,
             response_format: Optional[dict[str, Any]] = None) -> Reply:
        kwargs: dict[str, Any] = {"model": self.llm.model, "messages": messages, "temperature": temperature,
                                  "max_tokens": self.llm.max_tokens}
        if self.llm.seed is not None:
            kwargs["seed"] = self.llm.seed
        if response_format is not None:
            kwargs["response_format"] = response_format
        response = self._request(lambda: self._client.chat.completions.create(**kwargs))
        choice = self._first_choice(response)
        message = getattr(choice, "message", None)
        refusal = getattr(message, "refusal", None)
        if refusal or getattr(choice, "finish_reason", None) == "content_filter":
            reason = self.scrub(" ".join(str(refusal or "content filter").split()))[:160]
            raise LLMError(f"{self.where}: the model refused ({reason}); change the seed phrase or story, "
                           "or use another llm.model")
        return self._reply(getattr(message, "content", None), getattr(choice, "finish_reason", None))

    def complete(self, prompt: str, temperature: float, stop: Optional[list[str]] = None) -> Reply:
        kwargs: dict[str, Any] = {"model": self.llm.model, "prompt": prompt, "temperature": temperature,
                                  "max_tokens": self.llm.max_tokens}
        if self.llm.seed is not None:
            kwargs["seed"] = self.llm.seed
        if stop:
            kwargs["stop"] = stop
        response = self._request(lambda: self._client.completions.create(**kwargs))
        choice = self._first_choice(response)
        return self._reply(getattr(choice, "text", None), getattr(choice, "finish_reason", None))

    def ask(self, system: str, user: str, temperature: float) -> str:
        """Plain text from the configured endpoint (chat, or one completion prompt)."""
        if self.llm.endpoint == "chat":
            return self.chat([{"role": "system", "content": system}, {"role": "user", "content": user}],
                             temperature).text
        return self.complete(f"{system}\n\n{user}\n\n", temperature).text

    def ask_json(self, system: str, user: str, temperature: float, schema: dict[str, Any], name: str,
                 read: Callable[[Any], Any]) -> Any:
        """A JSON answer turned into a value by ``read`` (which raises BadAnswer when it cannot).

        A malformed or schema-violating answer is asked again, with what was wrong,
        up to llm.retries times. A server that refuses the JSON modes (400) is asked
        in plain text and its answer read tolerantly.
        """
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        tries = self.llm.retries + 1
        problem = ""
        for attempt in range(tries):
            text = self._json_text(messages, temperature, schema, name)
            try:
                return read(parse_json(text))
            except BadAnswer as exc:
                problem = str(exc)
            if attempt + 1 < tries:
                self.say(f"llm: the answer was {problem}; asking again ({attempt + 2} of {tries})")
                messages = messages[:2] + [
                    {"role": "assistant", "content": text[:4000]},
                    {"role": "user", "content": f"That answer was {problem}. Answer again with only the JSON "
                                                f"object described, nothing else."}]
        raise LLMError(f"{self.where}: the model's answer was {problem}, {tries} time(s); try again, "
                       "raise llm.retries, or use another llm.model")

    def _json_text(self, messages: list[dict[str, str]], temperature: float, schema: dict[str, Any],
                   name: str) -> str:
        if self.llm.endpoint == "completions":
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\nJSON:\n"
            return self.complete(prompt, temperature).text
        while True:
            if self.structured == "json_schema":
                response_format: Optional[dict[str, Any]] = {
                    "type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
            elif self.structured == "json_object":
                response_format = {"type": "json_object"}
            else:
                response_format = None
            try:
                return self.chat(messages, temperature, response_format).text
            except _RejectedFormat:
                self.say(f"llm: the server does not take response_format {self.structured}; "
                         "asking in plain text instead")
                self.structured = "none"

    def with_seed(self, seed: int) -> "LLMClient":
        """The same client (and connection), sending another sampling seed."""
        import copy
        import dataclasses

        other = copy.copy(self)
        other.llm = dataclasses.replace(self.llm, seed=seed)
        return other

    # --- answers ---------------------------------------------------------------------------

    def _first_choice(self, response: Any) -> Any:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise LLMError(f"{self.where}: the server's answer holds no choices; is llm.base_url the "
                           "OpenAI-compatible API root (it usually ends in /v1)?")
        return choices[0]

    def _reply(self, text: Any, finish_reason: Optional[str]) -> Reply:
        if finish_reason == "length":
            raise LLMError(f"{self.where}: the answer was cut off at llm.max_tokens={self.llm.max_tokens} tokens; "
                           "raise llm.max_tokens (or ask for less: fewer words, a smaller llm.chunk_words)")
        if not isinstance(text, str) or not text.strip():
            raise LLMError(f"{self.where}: the model gave an empty answer; try again or use another llm.model")
        return Reply(text=text.strip(), finish_reason=finish_reason)

    # --- transport: retries and errors -----------------------------------------------------

    @property
    def where(self) -> str:
        return f"llm ({public_url(self.url)}, model {self.llm.model})"

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if len(self._key) >= 4 else text

    def _request(self, call: Callable[[], Any]) -> Any:
        import openai

        tries = self.llm.retries + 1
        for attempt in range(tries):
            try:
                return call()
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                    openai.APIStatusError) as exc:
                if not _transient(exc) or attempt + 1 == tries:
                    raise self._error(exc, tries if _transient(exc) else attempt + 1) from None
                wait = _retry_after(exc)
                if wait is not None and wait > self.llm.max_retry_wait:
                    raise LLMError(f"{self.where}: {self._cause(exc)}, and the server asks to wait {wait:.0f} s "
                                   f"(more than llm.max_retry_wait={self.llm.max_retry_wait:g}); "
                                   "run again later") from None
                if wait is None:
                    wait = self.llm.retry_wait * 2 ** attempt
                self.say(f"llm: {self._cause(exc)}; retrying in {wait:.3g} s ({attempt + 2} of {tries})")
                self.sleep(wait)
            except openai.APIConnectionError as exc:
                raise self._error(exc, attempt + 1) from None
            except openai.APIResponseValidationError as exc:
                raise self._error(exc, attempt + 1) from None
            except ValueError as exc:  # a body that is not JSON at all
                raise LLMError(f"{self.where}: the server's answer is not JSON ({type(exc).__name__}); "
                               "is llm.base_url the OpenAI-compatible API root (it usually ends in /v1)?") from None
        raise AssertionError("unreachable")

    def _cause(self, exc: Exception) -> str:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return f"no answer within llm.timeout={self.llm.timeout:g} s"
        if isinstance(exc, openai.APIStatusError):
            detail = _server_message(exc)
            name = {429: "rate limited", 500: "server error", 502: "bad gateway", 503: "server unavailable",
                    504: "gateway timeout"}.get(exc.status_code, "server error")
            return self.scrub(f"{name} ({exc.status_code}{': ' + detail if detail else ''})")
        return self.scrub(type(exc).__name__)

    def _error(self, exc: Exception, tries: int) -> LLMError:
        import openai

        where = self.where
        after = f" after {tries} attempts" if tries > 1 else ""
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(f"{where}: no answer within llm.timeout={self.llm.timeout:g} s{after}; "
                            "raise llm.timeout, or use a smaller or less busy model")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            why = " ".join(str(cause or exc).split())[:120] or "connection failed"
            return LLMError(self.scrub(f"{where}: cannot connect ({why}); start the server, or set llm.base_url "
                                       "(or $OPENAI_BASE_URL) to where it listens"))
        if isinstance(exc, openai.APIResponseValidationError):
            return LLMError(f"{where}: the server's answer is not an OpenAI-style response; is llm.base_url "
                            "the OpenAI-compatible API root (it usually ends in /v1)?")
        assert isinstance(exc, openai.APIStatusError)
        status = exc.status_code
        detail = _server_message(exc)
        said = self.scrub(f" ({status}{': ' + detail if detail else ''})")
        env = f"${self.llm.api_key_env}"
        if status == 401:
            todo = f"set {env} to a valid key" if self._key else f"no key was sent: set {env}"
            return LLMError(f"{where}: the server refused the API key{said}; {todo}")
        if status == 403:
            return LLMError(f"{where}: the API key may not use this model or endpoint{said}; use a key that may, "
                            "or another llm.model")
        if status == 404:
            return LLMError(f"{where}: not found{said}: the server has no model {self.llm.model!r} or no "
                            f"{self.llm.endpoint} endpoint; set llm.model to a model it serves, or llm.endpoint, "
                            "or check llm.base_url (it usually ends in /v1)")
        if status == 429:
            if _code(exc) == "insufficient_quota":
                return LLMError(f"{where}: the account's quota is used up{said}; add credit or use another key")
            return LLMError(f"{where}: rate limited{said}{after}; wait a while and run again, or raise llm.retries")
        if status >= 500:
            return LLMError(f"{where}: the server failed{said}{after}; run again later, or check the server's log")
        if status == 400 and self.structured != "none" and "response_format" in json.dumps(
                getattr(exc, "body", None) or "", default=str) + detail:
            return _RejectedFormat(f"{where}: the server refused response_format{said}")
        return LLMError(f"{where}: the server refused the request{said}; check the llm settings "
                        "(llm.model, llm.max_tokens, llm.structured)")


class _RejectedFormat(LLMError):
    """400 naming response_format: the server has no JSON mode (caught by ask_json)."""


def _transient(exc: Exception) -> bool:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return _code(exc) != "insufficient_quota"
        return exc.status_code >= 500 or exc.status_code == 408
    return False


def _code(exc: Any) -> Optional[str]:
    body = getattr(exc, "body", None)
    return body.get("code") if isinstance(body, dict) else None


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
    elif isinstance(body, str):
        message = body
    return " ".join(str(message).split())[:200] if message else ""


def _retry_after(exc: Any) -> Optional[float]:
    """Seconds the server asks us to wait (Retry-After-Ms or Retry-After in seconds), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None
