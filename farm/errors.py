"""Errors a user of farm can cause, and how they are reported.

    FarmError                 one clear line for the user; the CLI exits 2
    ├── SpecError             a film spec field has a bad value (names the field and the value)
    ├── InputError            a file or folder given to farm cannot be used (names the path)
    │   └── OutputConflictError   the output folder already holds a different film
    ├── ModelError            model weights cannot be loaded (names the model and where it looked)
    ├── ClusterError          no Ray cluster could be started or joined (names the address)
    ├── StitchError           ffmpeg failed or cannot be found, or made a wrong file
    ├── NarrationError        a text-to-speech engine is missing or failed (names the engine)
    ├── LLMError              the language model's server failed, refused, or answered unusably
    └── RenderError           a scene failed after all its retries (names the scene)

Anything else escaping farm is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class FarmError(Exception):
    """Base class: the message is one line that a user can act on."""

    exit_code = 2


class SpecError(FarmError):
    """A field of a film spec is missing, unknown or out of range."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InputError(FarmError):
    """A file or folder named by the user cannot be read or used."""


class OutputConflictError(InputError):
    """The output folder already holds a different film; nothing is overwritten."""


class ModelError(FarmError):
    """Weights for CLIP or BigGAN cannot be loaded."""


class ClusterError(FarmError):
    """No Ray cluster could be started or joined."""


class StitchError(FarmError):
    """ffmpeg could not be found or failed to encode."""


class NarrationError(FarmError):
    """A narration engine is missing or failed to speak a scene."""


class LLMError(FarmError):
    """The LLM server could not be reached, refused the request, or gave an answer farm cannot use."""


class RenderError(FarmError):
    """A scene failed on every attempt it was allowed."""

    exit_code = 1


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of an exception's message (its type's name when it has none): the part of
    a library's error that fits in farm's one-line messages."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if with_type:
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line or type(exc).__name__


# Escape sequences (CSI "ESC [ ... letter", OSC "ESC ] ... BEL or ESC \\") and every other control
# character but newline and tab: what could move a terminal's cursor, retitle its window or hide text.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text for a terminal: an LLM's (or a spec's, or a server's) text stripped of control sequences."""
    return _CONTROL.sub("", text)
