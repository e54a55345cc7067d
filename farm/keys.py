"""Where an API key may go: only to servers the user named, never to one a spec file names alone.

A film spec can come from anywhere (a shared example, a film folder), and it names both a server
(``llm.base_url``, ``video.speech_base_url``) and the environment variable holding the key to send
it (``llm.api_key_env``, ``video.speech_api_key_env``). So a key is sent only to:

- OpenAI's API (no server named at all), or the server in ``$OPENAI_BASE_URL``;
- a server named on the command line (``--set llm.base_url=URL``: the CLI adds it to
  ``$FARM_TRUSTED_ENDPOINTS``), or listed there by the user (comma-separated URLs);
- any server a spec names, when the user trusts the spec (``--trust-spec-endpoints``, which sets
  ``$FARM_TRUST_SPEC_ENDPOINTS=1``).

Elsewhere the request goes without the key (a local server needs none) and farm says why. Servers
are compared by scheme, host and port. The key variables themselves are kept from Ray's workers
(``secret_names``): they render pictures and need none.
"""

from __future__ import annotations

import re
from typing import Mapping
from urllib.parse import urlsplit

OPENAI_URL = "https://api.openai.com/v1"
TRUSTED_ENV = "FARM_TRUSTED_ENDPOINTS"
TRUST_SPEC_ENV = "FARM_TRUST_SPEC_ENDPOINTS"
# Query parameters that carry a secret when a URL carries one.
SECRET_PARAMS = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential)", re.I)


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def key_may_go(url: str, environ: Mapping[str, str]) -> bool:
    """Whether an API key may be sent to the server at ``url``."""
    if environ.get(TRUST_SPEC_ENV, "").strip() == "1":
        return True
    named = [OPENAI_URL, environ.get("OPENAI_BASE_URL", ""), *environ.get(TRUSTED_ENV, "").split(",")]
    return origin(url) in {origin(u) for u in named if u.strip()}


def trust_endpoint(url: str, environ: dict[str, str]) -> None:
    """The user named ``url`` (on the command line): keys may go there in this process."""
    listed = [u for u in environ.get(TRUSTED_ENV, "").split(",") if u.strip()]
    environ[TRUSTED_ENV] = ",".join([*listed, url.strip()])


def url_secret(url: str) -> str:
    """What secret a URL carries (a user:password, a key in its query), or "" when none."""
    parts = urlsplit(url.strip())
    if parts.username is not None or parts.password is not None:
        return "a user:password"
    for pair in parts.query.split("&"):
        name = pair.partition("=")[0]
        if name and SECRET_PARAMS.search(name):
            return f"a {name!r} parameter"
    return ""


def secret_names(environ: Mapping[str, str]) -> list[str]:
    """The environment variables that hold API keys (``*_API_KEY``)."""
    return [name for name in environ
            if name.upper().endswith("API_KEY")]
