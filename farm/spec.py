"""The film spec: one YAML file describes a film, and every default lives here, once.

Precedence, lowest first: the dataclass defaults below < the preset
(``farm/presets/<name>.yaml``) < the spec file < ``--set key=value`` overrides.
Unknown keys and bad values raise :class:`farm.errors.SpecError` naming the
field (``render.cutouts``, ``scenes[2].duration``) and the value.

This module imports nothing of farm but the errors, and nothing heavy: loading
a spec must not import torch or Ray.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from farm.errors import InputError, SpecError
from farm.keys import url_secret

PRESETS_DIR = Path(__file__).parent / "presets"
# Side lengths a BigGAN-deep generator makes: 4x4 doubled by 4, 5, 6 or 7 up-sampling blocks
# (the published models make 128, 256 and 512).
GENERATOR_SIZES = (64, 128, 256, 512)
PRETRAINED_BIGGAN = {f"biggan-deep-{s}": s for s in (128, 256, 512)}
# Upper bounds on the work a spec (or an LLM's answer) may ask for. Far beyond any film farm is
# for, they stop an absurd value (a scene of 10^9 seconds is 1.2 x 10^10 frames) at once, in one
# line naming the field, before anything is planned or rendered (docs/SPEC.md, "Limits").
MAX_SCENES = 10_000
MAX_DURATION = 600.0  # seconds a scene may be given (MAX_SCENE_SECONDS bounds its reading time)
MAX_FILM_FRAMES = 1_000_000
MAX_NARRATION_CHARS = 2_000
MAX_STORY_CHARS = 500_000  # a long novel's worth of story.text for the planner
MAX_STEPS = 100_000  # steps_per_frame, warmup_steps, anchor_steps, reseed_every
MAX_CUTOUTS = 1_024
MAX_PASSES = 1_024  # init_candidates, gradient_accumulation
MAX_IN_FLIGHT = 1_024
MAX_STALL_SECONDS = 86_400.0  # dispatch.stall_seconds: a day
MAX_WORKERS = 4_096
MAX_SCENES_PER_WORKER = 64  # render.scenes_per_worker: scenes one actor optimises in one batch

# Reading speed used when a scene gives no duration: words per second of narration.
READING_WORDS_PER_SECOND = 2.5
MIN_SCENE_SECONDS = 2.0
# A planned scene lasts its reading time, but never longer than this: a long narration is
# read faster rather than holding one picture on screen for ages.
MAX_SCENE_SECONDS = 12.0
# Scripts written without spaces between words: this many characters count as one word
# when the reading time is worked out (about 7.5 characters a second).
CHARACTERS_PER_WORD = 3
SLUG_MAX_CHARS = 80
SLUG_MAX_BYTES = 200  # in UTF-8: file systems refuse a name over 255 bytes


@dataclass(frozen=True)
class StorySpec:
    phrase: str = ""
    """The seed phrase a story is written from ("Yeti Tardigrade")."""
    text: str = ""
    """The story itself; when scenes are not given, it is planned into scenes (LLM or offline)."""
    candidate: Optional[int] = None
    """Which of the written candidates (1-based) the text is; empty when the text was not written by farm."""

    def validate(self, path: str) -> None:
        # either text field may be empty; FilmSpec checks that a film has something to show
        if self.candidate is not None and self.candidate < 1:
            raise SpecError(f"{path}.candidate", f"must be at least 1, got {self.candidate!r}")
        if len(self.text) > MAX_STORY_CHARS:
            raise SpecError(f"{path}.text", f"is {len(self.text)} characters long; at most {MAX_STORY_CHARS}")


@dataclass(frozen=True)
class PromptSpec:
    text: str
    """A further text for CLIP to steer towards (or away from, with a negative weight)."""
    weight: float = 1.0
    """How strongly; the scene's main prompt has weight 1. A negative weight pushes the picture
    away from the text (big-sleep's --text_min is weight -1)."""

    def validate(self, path: str) -> None:
        if not self.text.strip():
            raise SpecError(f"{path}.text", "must not be empty")
        if not (math.isfinite(self.weight) and self.weight != 0):
            raise SpecError(f"{path}.weight", f"must be a non-zero number, got {self.weight!r}")


@dataclass(frozen=True)
class SceneSpec:
    narration: str
    """Text shown as the scene's subtitle."""
    prompt: str = ""
    """What CLIP steers the image towards (at most 75 CLIP tokens); the narration when empty."""
    duration: Optional[float] = None
    """Seconds on screen; from the narration's reading time when not given."""
    prompts: list[PromptSpec] = field(default_factory=list)
    """Further weighted prompts, steered towards (weight > 0) or away from (weight < 0)."""

    def validate(self, path: str) -> None:
        if not self.narration.strip():
            raise SpecError(f"{path}.narration", "must not be empty")
        if len(self.narration) > MAX_NARRATION_CHARS:
            raise SpecError(f"{path}.narration", f"is {len(self.narration)} characters long; at most "
                                                 f"{MAX_NARRATION_CHARS} (split it into scenes)")
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise SpecError(f"{path}.duration", f"must be a positive number of seconds, got {self.duration!r}")
        if self.duration is not None and self.duration > MAX_DURATION:
            raise SpecError(f"{path}.duration", f"must be at most {MAX_DURATION:g} seconds, got {self.duration!r}")

    @property
    def visual_prompt(self) -> str:
        return self.prompt.strip() or self.narration.strip()

    @property
    def weighted_prompts(self) -> list[tuple[str, float]]:
        """Every text CLIP scores the scene against, with its weight: the main prompt first."""
        return [(self.visual_prompt, 1.0)] + [(p.text.strip(), p.weight) for p in self.prompts]

    @property
    def seconds(self) -> float:
        """The scene's length: the given duration, or the narration's reading time."""
        if self.duration is not None:
            return float(self.duration)
        return reading_seconds(self.narration)


def _unspaced(char: str) -> bool:
    """A letter of a script written without spaces between words (CJK, kana, Thai, ...)."""
    # Korean puts spaces between words, so Hangul is not among these.
    return unicodedata.name(char, "").startswith(
        ("CJK", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"))


def reading_words(text: str) -> float:
    """Words to read: whitespace-separated pieces, where CHARACTERS_PER_WORD letters of a
    script written without spaces (Japanese, Chinese, Thai, ...) count as one word."""
    words = 0.0
    for piece in text.split():
        unspaced = sum(1 for c in piece if _unspaced(c))
        rest = any(c.isalnum() and not _unspaced(c) for c in piece)
        words += unspaced / CHARACTERS_PER_WORD + (1 if rest or not unspaced else 0)
    return words


def reading_seconds(text: str) -> float:
    """Seconds on screen for a narration: its reading time at READING_WORDS_PER_SECOND,
    rounded to 0.1 s, between MIN_SCENE_SECONDS and MAX_SCENE_SECONDS."""
    seconds = round(reading_words(text) / READING_WORDS_PER_SECOND, 1)
    return min(MAX_SCENE_SECONDS, max(MIN_SCENE_SECONDS, seconds))


@dataclass(frozen=True)
class VideoSpec:
    fps: int = 12
    size: int = 256
    """Side of the square frame in pixels; BigGAN makes 128, 256 or 512."""
    display_size: Optional[int] = None
    """Side of the film as played: the stitcher scales the frames to it (Lanczos) in ffmpeg's filter
    graph; the frames on disk stay at ``size``. Empty: ``size``."""
    transition: Literal["cut", "crossfade", "morph"] = "crossfade"
    """How scene k meets scene k+1. crossfade: their ends overlap, blended (the film is shorter);
    morph: BigGAN bridge frames inserted between them (longer); cut: neither."""
    transition_seconds: float = 0.5
    """Length of a crossfade or morph; round(transition_seconds x fps) frames."""
    subtitles: Literal["soft", "burn", "none"] = "soft"
    """soft: a subtitle track in the film; burn: drawn into the pictures; none: neither.
    film.srt and film.vtt are written beside the film in every case."""
    codec: Literal["h264", "h265"] = "h264"
    crf: int = 18
    """Quality: 0 lossless .. 51 worst (x264 and x265 alike)."""
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = "veryfast"
    """Encoder speed against file size."""
    pix_fmt: Literal["yuv420p", "yuv444p"] = "yuv420p"
    """yuv420p plays everywhere; yuv444p keeps full colour resolution."""
    narration: Literal["none", "auto", "espeak", "openai"] = "auto"
    """Each scene's narration spoken: espeak (espeak-ng), openai (an OpenAI-compatible
    text-to-speech server), auto (espeak-ng when installed, else openai when configured, else none)."""
    voice: str = ""
    """The engine's voice; empty: espeak "en", openai "alloy"."""
    speech_model: str = "tts-1"
    """Text-to-speech model for the openai engine."""
    speech_base_url: Optional[str] = None
    """An OpenAI-compatible text-to-speech server; the OpenAI API when empty."""
    speech_api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the text-to-speech server's key."""
    ffmpeg: Optional[str] = None
    """Path to an ffmpeg binary; default: $FARM_FFMPEG, else imageio-ffmpeg's, else ffmpeg on PATH.
    Only from the command line (--set): a spec file may not name a program to run."""

    @property
    def played_size(self) -> int:
        """Side of the film as played: ``display_size``, else ``size``."""
        return self.display_size or self.size

    def validate(self, path: str) -> None:
        if not 1 <= self.fps <= 120:
            raise SpecError(f"{path}.fps", f"must be between 1 and 120 frames per second, got {self.fps!r}")
        if self.size not in GENERATOR_SIZES:
            sizes = ", ".join(map(str, GENERATOR_SIZES))
            raise SpecError(f"{path}.size", f"{self.size!r} is not a size BigGAN can make (one of {sizes})")
        if self.display_size is not None and not (16 <= self.display_size <= 4096 and self.display_size % 2 == 0):
            raise SpecError(f"{path}.display_size",
                            f"must be an even number of pixels from 16 to 4096 (or empty), got {self.display_size!r}")
        if not 0 <= self.crf <= 51:
            raise SpecError(f"{path}.crf", f"must be between 0 and 51, got {self.crf!r}")
        if not 0 <= self.transition_seconds <= 10:
            raise SpecError(f"{path}.transition_seconds",
                            f"must be between 0 and 10 seconds, got {self.transition_seconds!r}")
        if not self.speech_model.strip():
            raise SpecError(f"{path}.speech_model", "must name a text-to-speech model")
        check_key_env(f"{path}.speech_api_key_env", self.speech_api_key_env)
        check_endpoint(f"{path}.speech_base_url", self.speech_base_url)


def check_key_env(where: str, name: str) -> None:
    if not name.strip() or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise SpecError(where, f"must be the name of an environment variable, got {name!r}")


def check_endpoint(where: str, url: Optional[str]) -> None:
    if url is not None and url.strip() and not re.match(r"https?://", url.strip()):
        raise SpecError(where, f"must start with http:// or https://, got {url!r}")


def check_file_fields(data: dict[str, Any]) -> None:
    """What a spec file (shared, and saved beside the film) may not say, though the command line may:
    a secret in a server's URL (a key goes in the environment, farm/keys.py; a URL given with --set
    is used and saved without it), and the ffmpeg binary farm runs (video.ffmpeg: --set, or
    $FARM_FFMPEG)."""
    video = data.get("video")
    if isinstance(video, dict) and video.get("ffmpeg") not in (None, ""):
        raise SpecError("video.ffmpeg", "is not taken from a spec file (it names a program farm would run): give "
                                        "it on the command line (--set video.ffmpeg=PATH) or in $FARM_FFMPEG")
    urls = (("llm", "base_url", "api_key_env"), ("video", "speech_base_url", "speech_api_key_env"))
    for section, name, key_env in urls:
        url = data.get(section, {}).get(name) if isinstance(data.get(section), dict) else None
        secret = url_secret(url) if isinstance(url, str) else ""
        if secret:
            raise SpecError(f"{section}.{name}", f"holds {secret}; a spec file holds no secrets: put the key in "
                                                 f"the environment ({section}.{key_env} names the variable)")


@dataclass(frozen=True)
class RenderSpec:
    """Big Sleep's knobs. big-sleep (lucidrains, the reference) defaults are in docs/SPEC.md beside ours."""

    preset: str = "draft"
    """Named defaults from farm/presets/: tiny (CPU, random weights), toy (CPU, toy CLIP), draft, final."""
    steps_per_frame: int = 4
    """Optimisation steps between two frames: a scene's frames are its trajectory."""
    # --- the loss -------------------------------------------------------------------------------
    clip_weight: float = 100.0
    """Weight of the CLIP term, -clip_weight x cosine similarity (big-sleep's loss_coef, 100).
    Adam removes the loss's overall scale but not this balance against the regularisers."""
    max_classes: Optional[int] = None
    """Keep only this many ImageNet classes per latent, through a differentiable top-k;
    null: every class through a sigmoid."""
    class_temperature: float = 2.0
    """Softmax temperature of the differentiable top-k (used with max_classes)."""
    # --- cutouts ----------------------------------------------------------------------------------
    cutouts: int = 32
    """Random crops of the generated image scored by CLIP at every step."""
    cutout_resample: Literal["nearest", "bilinear", "area"] = "nearest"
    """How a crop is resized to CLIP's input."""
    cutout_size_mean: float = 0.8
    """A crop's side as a fraction of the image: normal(mean, std) clipped to [min, max]."""
    cutout_size_std: float = 0.3
    cutout_size_min: float = 0.5
    cutout_size_max: float = 0.95
    center_bias: bool = False
    """Place crops around the centre (normal, std = half the free range / center_focus)."""
    center_focus: float = 2.0
    # --- the optimiser ---------------------------------------------------------------------------
    init_candidates: int = 1
    """Random starting latents drawn for a scene that starts from its own seed; the one with the
    lowest loss (one set of cutouts for all) is kept. 1: big-sleep's single random start."""
    learning_rate: float = 0.07
    gradient_accumulation: int = 1
    """Forward/backward passes (each with fresh cutouts) summed into one Adam step."""
    ema_decay: float = 0.99
    """Frames show an exponential moving average of the latents (1 - decay per step)."""
    ema_start: Literal["zero", "initial"] = "zero"
    """zero: the average starts at zero and is bias-corrected (divided by 1 - decay^(t+1)), as in
    big-sleep; initial: it starts at the scene's first latents, uncorrected, so a scene's first
    frames stay close to where it started."""
    truncation: float = 1.0
    """BigGAN truncation, in (0, 1]."""
    warmup_steps: int = 0
    """Steps before the first frame, so a scene does not open on noise."""
    reseed_every: int = 0
    """Inside a scene, every this many steps mix fresh (seeded) noise into the latents; 0: never."""
    reseed_fraction: float = 0.1
    """How much fresh noise a re-seed mixes in: z <- (1 - f) z + f noise."""
    # --- between scenes ---------------------------------------------------------------------------
    reseed: Literal["keyframe", "chain", "independent"] = "keyframe"
    """How a scene's latents start. keyframe: from a short anchor optimisation of the scene
    before it (anchors render in parallel first); chain: from the last latents of the scene
    before it (serial); independent: from the scene's own seed."""
    anchor_steps: int = 20
    """Optimisation steps of a keyframe anchor."""
    # --- the machine ------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """fp32: exact; tf32: TensorFloat-32 matrix products on CUDA; bf16: bfloat16 autocast on CUDA."""
    channels_last: bool = False
    """Channels-last memory layout for the convolutions (faster on GPUs with tensor cores)."""
    compile: bool = False
    """torch.compile the loss (a slower first step, then faster ones)."""
    deterministic: bool = False
    """On CUDA: torch's deterministic algorithms, so the same spec gives the same frames
    (CPU rendering is deterministic anyway)."""
    workers: int = 0
    """Render actors; 0 = one per GPU, or one per cpus_per_worker CPUs when there is no GPU."""
    cpus_per_worker: int = 1
    gpus_per_worker: float = 1.0
    scenes_per_worker: int = 1
    """Scenes one actor optimises together, in one batch (joining and leaving as they start and
    finish); 0: chosen by each worker from its device's memory and the models (1 on a CPU)."""
    retries: int = 2
    """Extra attempts a scene gets when its own code fails."""

    def validate(self, path: str) -> None:
        positive_ints = {"steps_per_frame": self.steps_per_frame, "cutouts": self.cutouts,
                         "cpus_per_worker": self.cpus_per_worker, "anchor_steps": self.anchor_steps,
                         "gradient_accumulation": self.gradient_accumulation,
                         "init_candidates": self.init_candidates}
        for name, value in positive_ints.items():
            if value < 1:
                raise SpecError(f"{path}.{name}", f"must be at least 1, got {value!r}")
        most = {"steps_per_frame": MAX_STEPS, "warmup_steps": MAX_STEPS, "anchor_steps": MAX_STEPS,
                "reseed_every": MAX_STEPS, "cutouts": MAX_CUTOUTS, "init_candidates": MAX_PASSES,
                "gradient_accumulation": MAX_PASSES, "workers": MAX_WORKERS, "cpus_per_worker": 1024,
                "retries": 100, "scenes_per_worker": MAX_SCENES_PER_WORKER}
        for name, limit in most.items():
            if getattr(self, name) > limit:
                raise SpecError(f"{path}.{name}", f"must be at most {limit}, got {getattr(self, name)!r}")
        for name, value in {"warmup_steps": self.warmup_steps, "workers": self.workers, "retries": self.retries,
                            "reseed_every": self.reseed_every, "scenes_per_worker": self.scenes_per_worker}.items():
            if value < 0:
                raise SpecError(f"{path}.{name}", f"must not be negative, got {value!r}")
        for name, value in {"learning_rate": self.learning_rate, "clip_weight": self.clip_weight,
                            "class_temperature": self.class_temperature, "center_focus": self.center_focus}.items():
            if not (value > 0 and math.isfinite(value)):
                raise SpecError(f"{path}.{name}", f"must be positive, got {value!r}")
        if self.max_classes is not None and not 1 <= self.max_classes <= 1000:
            raise SpecError(f"{path}.max_classes",
                            f"must be null or between 1 and 1000 (BigGAN's classes), got {self.max_classes!r}")
        if not 0 <= self.ema_decay < 1:
            raise SpecError(f"{path}.ema_decay", f"must be in [0, 1), got {self.ema_decay!r}")
        if not 0 < self.truncation <= 1:
            raise SpecError(f"{path}.truncation", f"must be in (0, 1], got {self.truncation!r}")
        if not 0 < self.reseed_fraction <= 1:
            raise SpecError(f"{path}.reseed_fraction", f"must be in (0, 1], got {self.reseed_fraction!r}")
        if not 0 < self.cutout_size_min <= self.cutout_size_max <= 1:
            raise SpecError(f"{path}.cutout_size_min",
                            f"need 0 < cutout_size_min <= cutout_size_max <= 1, got {self.cutout_size_min!r} "
                            f"and {self.cutout_size_max!r}")
        if not (self.cutout_size_std >= 0 and math.isfinite(self.cutout_size_std)):
            raise SpecError(f"{path}.cutout_size_std", f"must not be negative, got {self.cutout_size_std!r}")
        if self.deterministic and self.scenes_per_worker > 1:
            raise SpecError(f"{path}.scenes_per_worker",
                            f"{self.scenes_per_worker} scenes in one batch cannot be rendered bit for bit as one "
                            "alone (a batch's matrix products add in another order); set it to 1 (or 0) with "
                            "render.deterministic: true")
        if not 0 < self.gpus_per_worker <= 8:
            raise SpecError(f"{path}.gpus_per_worker", f"must be in (0, 8], got {self.gpus_per_worker!r}")
        if self.preset not in preset_names():
            raise SpecError(f"{path}.preset", f"unknown preset {self.preset!r} (one of {', '.join(preset_names())})")


@dataclass(frozen=True)
class ModelsSpec:
    clip: str = "ViT-B-32-quickgelu"
    """An open_clip architecture name, "tiny" (small widths, random weights) or "toy" (trained on farm/toy pictures).
    OpenAI's weights need the -quickgelu variants: that is the activation they were trained with."""
    clip_pretrained: Optional[str] = "openai"
    """An open_clip pretrained tag, or the path of a staged weights file."""
    biggan: str = "biggan-deep-256"
    """biggan-deep-128/256/512, a folder holding config.json + pytorch_model.bin, "tiny" (small widths, random
    weights) or "toy" (trained on farm/toy pictures, 128 pixels)."""
    cache_dir: Optional[str] = None
    """Where downloaded weights are kept (the libraries' own cache when empty)."""

    def validate(self, path: str) -> None:
        if not self.clip.strip():
            raise SpecError(f"{path}.clip", "must name an open_clip model, 'tiny' or 'toy'")
        if not self.biggan.strip():
            raise SpecError(f"{path}.biggan", "must name a BigGAN model, a folder, 'tiny' or 'toy'")


@dataclass(frozen=True)
class LLMSpec:
    base_url: Optional[str] = None
    """Any OpenAI-compatible server (ending in /v1); when empty, $OPENAI_BASE_URL, else the OpenAI API."""
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the API key (the key itself never goes in a spec)."""
    endpoint: Literal["chat", "completions"] = "chat"
    """chat: chat completions; completions: the legacy endpoint, for base and instruct models
    (the seed phrase is completed, as the seed film's GPT-3 did)."""
    candidates: int = 3
    """Stories written per seed phrase, one of which is chosen."""
    story_words: int = 250
    """Most words a story is asked to have (chat; a base model writes until it stops)."""
    temperature: float = 0.9
    """Sampling temperature of the stories (the plan is asked for at a quarter of it)."""
    max_tokens: int = 1500
    """Most tokens one answer may hold; an answer cut off there is an error."""
    seed: Optional[int] = None
    """Sampling seed sent to the server (candidate k gets seed + k - 1); servers may ignore it."""
    language: str = ""
    """The language stories and narration are written in; empty: the seed phrase's language."""
    structured: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How the plan asks for JSON: a JSON schema, any JSON object, or plain text read tolerantly.
    A server that refuses the JSON modes is asked again in plain text."""
    planner: Literal["auto", "llm", "offline"] = "auto"
    """Who splits a story into scenes. auto: the LLM when one is configured (a base URL or an
    API key in the environment), the offline splitter otherwise."""
    chunk_words: int = 600
    """Long stories are planned this many words at a time, each chunk told the scenes before it."""
    timeout: float = 120.0
    """Seconds one request may take."""
    retries: int = 3
    """Extra attempts after a rate limit (429), a server error (5xx), a timeout or an unusable answer."""
    retry_wait: float = 1.0
    """Seconds before the first retry, doubled each time, unless the server says (Retry-After)."""
    max_retry_wait: float = 60.0
    """A server asking to wait longer than this is not waited for."""

    def validate(self, path: str) -> None:
        if not self.model.strip():
            raise SpecError(f"{path}.model", "must name a model")
        check_key_env(f"{path}.api_key_env", self.api_key_env)
        check_endpoint(f"{path}.base_url", self.base_url)
        positive_ints = {"candidates": self.candidates, "story_words": self.story_words,
                         "max_tokens": self.max_tokens, "chunk_words": self.chunk_words}
        for name, value in positive_ints.items():
            if value < 1:
                raise SpecError(f"{path}.{name}", f"must be at least 1, got {value!r}")
        if self.candidates > 20:
            raise SpecError(f"{path}.candidates", f"must be at most 20, got {self.candidates!r}")
        if not 0 <= self.temperature <= 2:
            raise SpecError(f"{path}.temperature", f"must be in [0, 2], got {self.temperature!r}")
        if self.seed is not None and self.seed < 0:
            raise SpecError(f"{path}.seed", f"must not be negative, got {self.seed!r}")
        if self.retries < 0:
            raise SpecError(f"{path}.retries", f"must not be negative, got {self.retries!r}")
        for name, value in {"timeout": self.timeout, "max_retry_wait": self.max_retry_wait}.items():
            if not (value > 0 and math.isfinite(value)):
                raise SpecError(f"{path}.{name}", f"must be a positive number of seconds, got {value!r}")
        if not (self.retry_wait >= 0 and math.isfinite(self.retry_wait)):
            raise SpecError(f"{path}.retry_wait", f"must be a number of seconds >= 0, got {self.retry_wait!r}")


# --- dispatch: how the farm runs a film. None of these change a single pixel. ------------------


@dataclass(frozen=True)
class DispatchSpec:
    state_every: int = 1
    """Frames between two renderer states sent back with a frame (latents, EMA, Adam moments,
    RNG states). A scene lost mid-way resumes from its last state on another worker, so with
    1 no frame already on disk is rendered again. 0: no states (a lost scene starts over)."""
    bad_node_failures: int = 3
    """Worker deaths or scene failures on one node after which that node gets no new workers
    for this film (the manifest lists it with the reason)."""
    in_flight: int = 8
    """Frames a worker may have sent that the driver has not taken yet (stream back-pressure)."""
    keep_workers: bool = False
    """Keep the film's idle render workers, models loaded, for the next film this process renders
    on the same Ray cluster with the same models (a script or notebook rendering several films);
    they hold their GPUs or CPUs meanwhile. false: workers stop with the film."""
    stall_seconds: float = 0.0
    """Seconds a job's stream may send nothing before its worker counts as hung: the job is
    cancelled, the worker killed and replaced, and the job continues elsewhere from its last
    state, spending no retry. 0: automatic, 10 times the slowest frame measured in this run
    (at least 60 s; an hour while nothing is measured yet), longer before a stream's first
    frame by its warm-up (see docs/OPERATIONS.md)."""

    def validate(self, path: str) -> None:
        if self.state_every < 0:
            raise SpecError(f"{path}.state_every", f"must not be negative, got {self.state_every!r}")
        for name in ("bad_node_failures", "in_flight"):
            if getattr(self, name) < 1:
                raise SpecError(f"{path}.{name}", f"must be at least 1, got {getattr(self, name)!r}")
        if self.in_flight > MAX_IN_FLIGHT:
            raise SpecError(f"{path}.in_flight", f"must be at most {MAX_IN_FLIGHT}, got {self.in_flight!r}")
        if not 0 <= self.stall_seconds <= MAX_STALL_SECONDS:
            raise SpecError(f"{path}.stall_seconds",
                            f"must be 0 (automatic) to {MAX_STALL_SECONDS:g} seconds, got {self.stall_seconds!r}")


@dataclass(frozen=True)
class FilmSpec:
    title: str
    seed: int = 0
    story: StorySpec = field(default_factory=StorySpec)
    scenes: list[SceneSpec] = field(default_factory=list, metadata={"max_items": MAX_SCENES})
    video: VideoSpec = field(default_factory=VideoSpec)
    render: RenderSpec = field(default_factory=RenderSpec)
    models: ModelsSpec = field(default_factory=ModelsSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    dispatch: DispatchSpec = field(default_factory=DispatchSpec)  # how the farm runs it

    def validate(self, path: str = "") -> None:
        if not self.title.strip() or not slugify(self.title):
            raise SpecError("title", f"must contain letters or digits, got {self.title!r}")
        if not self.scenes and not self.story.text.strip():
            raise SpecError("scenes",
                            "the film has no scenes and story.text is empty: give scenes, or a story to split")
        if self.seed < 0:
            raise SpecError("seed", f"must not be negative, got {self.seed!r}")
        if len(self.scenes) > MAX_SCENES:  # (a spec file's list stops in build, before its scenes are built)
            raise SpecError("scenes", f"has {len(self.scenes)} items; at most {MAX_SCENES}")
        frames = sum(self.frames_per_scene())
        if frames > MAX_FILM_FRAMES:
            raise SpecError("scenes", f"add up to {frames} frames at {self.video.fps} fps; a film has at most "
                                      f"{MAX_FILM_FRAMES} (shorter scenes, or a lower video.fps)")
        biggan = self.models.biggan
        if biggan in PRETRAINED_BIGGAN and PRETRAINED_BIGGAN[biggan] != self.video.size:
            raise SpecError("video.size", f"{self.video.size!r} is not a size {biggan} can make "
                                          f"(it makes {PRETRAINED_BIGGAN[biggan]})")

    @property
    def slug(self) -> str:
        return slugify(self.title)

    def frames_per_scene(self) -> list[int]:
        """Frames each scene contributes: its duration times fps, rounded, at least one."""
        return [max(1, round(scene.seconds * self.video.fps)) for scene in self.scenes]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return readable_yaml(self.to_dict())


def readable_yaml(data: dict[str, Any]) -> str:
    """A mapping as YAML a person can read: keys in order, any script as it is."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _fold(char: str) -> str:
    """An accented Latin letter as its ASCII base (é -> e), where dropping the marks loses
    nothing but the accent; any other letter (ダ, ø, ß, अ) as it is."""
    decomposed = unicodedata.normalize("NFD", char)
    if len(decomposed) > 1 and decomposed[0].isascii() and decomposed[0].isalpha() \
            and all(unicodedata.combining(c) for c in decomposed[1:]):
        return decomposed[0]
    return char


def slugify(text: str) -> str:
    """A film's folder name: lower case, letters and digits of any script kept (accented
    Latin letters folded to ASCII), every run of anything else (spaces, punctuation,
    symbols, path separators) made one "-", ends trimmed, at most SLUG_MAX_CHARS long and
    SLUG_MAX_BYTES in UTF-8. Compatibility forms are normalised first (NFKC: full-width ``ＹＥＴＩ``
    is ``yeti``, a ligature ``ﬁ`` is ``fi``).

    ``Yeti Tardigrade`` -> ``yeti-tardigrade``; ``Le Tardigrade Yéti`` -> ``le-tardigrade-yeti``;
    ``ユキタルディグラダ`` -> ``ユキタルディグラダ``.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for char in text:
        char = _fold(char)
        kind = unicodedata.category(char)[0]
        # Marks (M) are kept after a non-ASCII letter: in Devanagari, Thai, ... they are part
        # of the word; after an ASCII letter they are an accent, folded away.
        if kind == "M" and out and out[-1] != "-":
            if not out[-1].isascii():
                out.append(char)
        elif kind in "LN":
            out.append(char)
        elif out and out[-1] != "-":
            out.append("-")
    slug = unicodedata.normalize("NFKC", "".join(out)).strip("-")[:SLUG_MAX_CHARS]
    while len(slug.encode("utf-8")) > SLUG_MAX_BYTES:
        slug = slug[:-1]
    return slug.rstrip("-")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


# --- loading ---------------------------------------------------------------------------------


def load_spec(path: str | Path, preset: str | None = None, overrides: typing.Sequence[str] = ()) -> FilmSpec:
    """Read a film spec file, apply its preset and ``key=value`` overrides, and validate it."""
    return spec_from_dict(read_spec_file(path), preset=preset, overrides=overrides)


SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML was built with it


def _count_scenes(text: str) -> None:
    """Stop a spec file whose ``scenes`` list is longer than MAX_SCENES before it is built: the
    parser's events are cheap, building a hundred thousand scenes' objects is not."""
    depth, key, in_scenes, items = 0, True, False, 0
    for event in yaml.parse(text, Loader=SafeLoader):
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            in_scenes = in_scenes and depth >= 2
            if depth == 1:
                key = not key  # a nested value at the top level ended: a key comes next
            continue
        if in_scenes and depth == 2 and isinstance(event, yaml.NodeEvent):
            items += 1
            if items > MAX_SCENES:
                raise SpecError("scenes", f"has more than {MAX_SCENES} items; at most {MAX_SCENES}")
        if depth == 1 and isinstance(event, yaml.ScalarEvent):
            if key and event.value == "scenes":
                in_scenes = None  # its value comes next
            elif not key:
                in_scenes = False
            key = not key
        elif depth == 1 and isinstance(event, yaml.CollectionStartEvent):
            in_scenes = in_scenes is None and isinstance(event, yaml.SequenceStartEvent)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """A spec file's contents as a mapping, as written (no preset, nothing checked but YAML)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
        _count_scenes(text)
        data = yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{path}:{where}: not valid YAML ({problem})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a film spec is a mapping of keys (title, scenes, ...), got {type(data).__name__}")
    check_file_fields(data)
    return data


def spec_from_dict(data: dict[str, Any], preset: str | None = None, overrides: typing.Sequence[str] = ()) -> FilmSpec:
    data = copy.deepcopy(data)
    data.pop("timeline", None)  # written by farm into a film's film.yaml; derived, never read
    for item in overrides:
        apply_override(data, item)
    if preset is not None:
        data.setdefault("render", {})
        if not isinstance(data["render"], dict):
            raise SpecError("render", f"must be a mapping, got {data['render']!r}")
        data["render"]["preset"] = preset
    render_section = data.get("render")
    name = render_section.get("preset") if isinstance(render_section, dict) else None
    name = RenderSpec.preset if name is None else name
    merged = deep_merge(load_preset(name), data)
    spec = build(FilmSpec, merged, "")
    return spec


def load_preset(name: Any) -> dict[str, Any]:
    # A name of farm/presets only: a path ("../../somewhere/else") is no preset a spec may pick.
    if not isinstance(name, str) or name not in preset_names():
        raise SpecError("render.preset", f"unknown preset {name!r} (one of {', '.join(preset_names())})")
    return yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}


def apply_override(data: dict[str, Any], item: str) -> None:
    """``render.cutouts=8`` or ``scenes.0.duration=3``: the value is read as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError("--set", f"expected key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(where, f"no such item (the list has {len(node)})")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif part not in node and parts[i + 1].isdigit():
                raise SpecError(where, "no such list in the spec file to take an item of")
            else:
                node = node.setdefault(part, {})
        else:
            raise SpecError(where, f"cannot set a key inside {node!r}")


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def build(cls: type, data: Any, path: str) -> Any:
    """Turn a mapping into the dataclass ``cls``, checking keys, types and values."""
    label = path or "the spec"
    if not isinstance(data, dict):
        raise SpecError(path, f"must be a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise SpecError(where, f"unknown key in {label} (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name in data:
            most = f.metadata.get("max_items")
            if most is not None and isinstance(data[name], list) and len(data[name]) > most:
                # Before each item is built: a list of a million scenes stops here, at once.
                raise SpecError(where, f"has {len(data[name])} items; at most {most}")
            kwargs[name] = convert(hints[name], data[name], where)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(where, "is required")
    obj = cls(**kwargs)
    obj.validate(path)
    return obj


def convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise SpecError(where, f"{value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(where, f"must be a list, got {value!r}")
        return [convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(where, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(where, f"must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(where, f"must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise SpecError(where, f"must be text, got {value!r}")
        return value
    raise AssertionError(f"unhandled spec type {hint!r} at {where}")
