"""Narration: each scene's text spoken, placed in the scene's slot on the timeline, muxed as AAC.

Engines (``video.narration``):

- ``espeak``: the espeak-ng program (Debian's ``espeak-ng`` package), text on stdin.
- ``openai``: any OpenAI-compatible text-to-speech server, through the ``openai``
  client's ``audio.speech`` (``video.speech_base_url``, ``video.speech_model``,
  the key in the environment variable ``video.speech_api_key_env``).
- ``auto``: espeak-ng when installed, else openai when a server or key is
  configured, else none; it says which.
- ``none``: a silent film.

Speech is decoded by ffmpeg to mono float samples at SAMPLE_RATE, so any format
an engine returns works.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from farm.cutting.subtitles import clean_text
from farm.cutting.timeline import Timeline
from farm.cutting.tools import ffmpeg_timeout, run_ffmpeg
from farm.errors import NarrationError, first_line
from farm.keys import OPENAI_URL, key_may_go

SAMPLE_RATE = 24000
# Silence after a scene's speech before the next scene may start speaking.
GAP_SECONDS = 0.25
ESPEAK = "espeak-ng"
# Text-to-speech timeouts, generous: a base, and so much more per character spoken.
SPEECH_BASE_S = 120.0
SPEECH_PER_CHAR_S = 0.1


def speech_timeout(text: str) -> float:
    return SPEECH_BASE_S + SPEECH_PER_CHAR_S * len(text)
DEFAULT_VOICES = {"espeak": "en", "openai": "alloy"}


@dataclass(frozen=True)
class Speech:
    engine: str  # espeak or openai
    clips: tuple[np.ndarray, ...]  # per scene: mono float32 samples at SAMPLE_RATE
    sources: tuple[bytes, ...]  # per scene: what the engine returned (kept beside the film)

    def seconds(self, k: int) -> float:
        return len(self.clips[k]) / SAMPLE_RATE

    def frames_needed(self, k: int, fps: int) -> int:
        """Frames scene k's slot needs to say its narration, with a short pause after it."""
        return math.ceil((self.seconds(k) + GAP_SECONDS) * fps - 1e-9)


def resolve_engine(video, say: Callable[[str], None]) -> str:
    """The engine ``video.narration`` means on this machine: espeak, openai or none."""
    asked = video.narration
    if asked == "none":
        return "none"
    if asked == "espeak":
        if not shutil.which(ESPEAK):
            raise NarrationError(f"video.narration: espeak asked for, but {ESPEAK} is not installed "
                                 "(apt-get install espeak-ng, or set video.narration to openai or none)")
        return "espeak"
    if asked == "openai":
        return "openai"
    if shutil.which(ESPEAK):
        say(f"narration: {ESPEAK} (video.narration auto)")
        return "espeak"
    if video.speech_base_url or os.environ.get(video.speech_api_key_env):
        say(f"narration: openai text-to-speech at {video.speech_base_url or 'the OpenAI API'} (video.narration auto)")
        return "openai"
    say("narration: none, no engine found (install espeak-ng, or configure video.speech_base_url)")
    return "none"


def speak_espeak(text: str, voice: str) -> bytes:
    timeout = speech_timeout(text)
    try:
        done = subprocess.run([ESPEAK, "-v", voice, "--stdout", "--stdin"], input=text.encode(),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise NarrationError(f"video.narration: {ESPEAK} timed out: no speech after {timeout:g}s for "
                             f"{len(text)} characters, stopped") from exc
    except OSError as exc:
        raise NarrationError(f"video.narration: {ESPEAK} could not run ({exc})") from exc
    if done.returncode != 0 or not done.stdout:
        tail = " | ".join(done.stderr.decode(errors="replace").split("\n")[-3:]).strip(" |") or "no output"
        raise NarrationError(f"video.narration: {ESPEAK} failed (voice {voice!r}): {tail}")
    return done.stdout


def speak_openai(text: str, video) -> bytes:
    import openai

    key = os.environ.get(video.speech_api_key_env, "").strip()
    if not key and not video.speech_base_url:
        raise NarrationError(f"video.narration: openai needs an API key in ${video.speech_api_key_env} "
                             "or a server in video.speech_base_url")
    withheld = ""
    if key and not key_may_go(video.speech_base_url or OPENAI_URL, os.environ):
        # A server only the spec names gets no key (farm/keys.py).
        withheld = (f" (${video.speech_api_key_env} was not sent: only the spec names that server; "
                    "--trust-spec-endpoints or --set video.speech_base_url=URL sends it)")
        key = ""
    timeout = speech_timeout(text)
    client = openai.OpenAI(base_url=video.speech_base_url, api_key=key or "none", max_retries=1, timeout=timeout)
    voice = video.voice or DEFAULT_VOICES["openai"]
    try:
        response = client.audio.speech.create(model=video.speech_model, voice=voice, input=text,
                                              response_format="wav")
        return response.read()
    except openai.OpenAIError as exc:
        reason = first_line(exc)
        if isinstance(exc, openai.APITimeoutError):
            reason = f"timed out: no answer after {timeout:g}s, asked twice"
        if len(key) >= 4:  # scrubbed as the LLM's errors are: a server may echo the key it was sent
            reason = reason.replace(key, "***")
        where = video.speech_base_url or "the OpenAI API"
        raise NarrationError(f"video.narration: openai text-to-speech at {where} failed: {reason}{withheld}") from exc


def decode_audio(data: bytes, exe: str, what: str) -> np.ndarray:
    """Speech as asked for it (WAV: espeak-ng writes it, the speech API is asked for it), read as
    WAV: an answer in another format (or an error page) is one line, not a guess of ffmpeg's."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise NarrationError(f"video.narration: {what}: the answer is not WAV audio, the format asked for "
                             f"(it starts {data[:12]!r})")
    raw = run_ffmpeg(exe, ["-f", "wav", "-i", "pipe:0", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE),
                           "pipe:1"], what, stdin=data, timeout=ffmpeg_timeout(megabytes=len(data) / 1e6))
    return np.frombuffer(raw, dtype="<f4").copy()


def speech_key(engine: str, video, text: str) -> str:
    parts = [engine, video.voice, text]
    if engine == "openai":
        parts += [video.speech_model, video.speech_base_url or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def synthesize(narrations: Sequence[str], video, exe: str, say: Callable[[str], None],
               cache: Optional[Path] = None) -> Optional[Speech]:
    """Every scene's narration spoken, or None for a silent film.

    ``cache``: a folder of earlier clips (``NNN-<key>.audio``), read when present.
    """
    engine = resolve_engine(video, say)
    if engine == "none":
        return None
    clips, sources = [], []
    for k, narration in enumerate(narrations):
        text = clean_text(narration).replace("\n", " ")
        cached = cache / f"{k:03d}-{speech_key(engine, video, text)}.audio" if cache else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
        elif engine == "espeak":
            data = speak_espeak(text, video.voice or DEFAULT_VOICES["espeak"])
        else:
            data = speak_openai(text, video)
        samples = decode_audio(data, exe, f"the narration of scene {k + 1}")
        if not len(samples):
            raise NarrationError(f"video.narration: {engine} returned no sound for scene {k + 1}")
        clips.append(samples)
        sources.append(data)
    return Speech(engine, tuple(clips), tuple(sources))


def save_clips(speech: Speech, narrations: Sequence[str], video, folder: Path) -> None:
    from farm.folder.layout import atomic_write

    for k, (narration, data) in enumerate(zip(narrations, speech.sources)):
        text = clean_text(narration).replace("\n", " ")
        path = folder / f"{k:03d}-{speech_key(speech.engine, video, text)}.audio"
        if not path.is_file():
            atomic_write(path, data)


def track(speech: Speech, timeline: Timeline) -> np.ndarray:
    """The film's narration: each clip at its scene's first frame, as long as the film."""
    out = np.zeros(round(timeline.duration * SAMPLE_RATE), dtype=np.float32)
    for k, (start, end) in enumerate(timeline.slots()):
        at = round(timeline.seconds(start) * SAMPLE_RATE)
        room = round(timeline.seconds(end) * SAMPLE_RATE) - at
        clip = speech.clips[k][: max(0, room)]
        out[at: at + len(clip)] += clip
    return out


def wav_bytes(samples: np.ndarray) -> bytes:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()
