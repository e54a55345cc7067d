"""Story -> scenes: the offline splitter, and the prompt checks every plan goes through.

A scene's visual prompt must fit CLIP's context: at most 75 tokens (77 less the
start and end markers), counted with CLIP's own byte-pair merges (farm.writing.tokens,
which needs no torch).
"""

from __future__ import annotations

import dataclasses
import re

from farm.errors import SpecError
from farm.spec import READING_WORDS_PER_SECOND, FilmSpec, SceneSpec, reading_words
from farm.writing.tokens import clip_token_count

CLIP_MAX_TOKENS = 75
# The splitter groups sentences until a scene reads for about this long.
TARGET_SCENE_SECONDS = 5.0


def fit_prompt(text: str, limit: int = CLIP_MAX_TOKENS) -> str:
    """The longest leading run of words of ``text`` that fits in ``limit`` CLIP tokens."""
    words = text.split()
    while words and clip_token_count(" ".join(words)) > limit:
        words.pop()
    return " ".join(words)


# Sentence ends: in scripts that put a space after them, and in those that do not (。！？).
SPACED_ENDS = ".!?…؟।։"
UNSPACED_ENDS = "。！？"
CLOSERS = "\"'”’»)]」』）"


def split_sentences(text: str) -> list[str]:
    """The text's sentences in order, in any script.

    A sentence ends at . ! ? … (and ؟ । ։) with any closing quotes or brackets, when a
    space follows and the next word does not start with a lower-case letter; and at
    。！？ whatever follows. Nothing is dropped but white space.
    """
    flat = re.sub(r"\s+", " ", text).strip()
    sentences: list[str] = []
    start = i = 0
    while i < len(flat):
        char = flat[i]
        if char in SPACED_ENDS or char in UNSPACED_ENDS:
            end = i + 1
            while end < len(flat) and (flat[end] in SPACED_ENDS or flat[end] in UNSPACED_ENDS or flat[end] in CLOSERS):
                end += 1
            unspaced = any(c in UNSPACED_ENDS for c in flat[i:end])
            spaced = end < len(flat) and flat[end] == " " and end + 1 < len(flat) and not flat[end + 1].islower()
            if unspaced or spaced:
                sentences.append(flat[start:end].strip())
                start = i = end
                continue
            i = end
            continue
        i += 1
    sentences.append(flat[start:].strip())
    return [s for s in sentences if re.search(r"\w", s)]


def split_story(text: str) -> list[SceneSpec]:
    """Group the story's sentences into scenes of about TARGET_SCENE_SECONDS of reading."""
    scenes: list[SceneSpec] = []
    current: list[str] = []
    for sentence in split_sentences(text):
        current.append(sentence)
        if reading_words(join_sentences(current)) / READING_WORDS_PER_SECOND >= TARGET_SCENE_SECONDS:
            scenes.append(_scene(current))
            current = []
    if current:
        scenes.append(_scene(current))
    return scenes


def join_sentences(sentences: list[str]) -> str:
    """Sentences back into text: with a space, but none after 。！？ (scripts without spaces)."""
    text = ""
    for sentence in sentences:
        unspaced = text.rstrip(CLOSERS)[-1:] in tuple(UNSPACED_ENDS)
        text = f"{text}{sentence}" if not text or unspaced else f"{text} {sentence}"
    return text


def _scene(sentences: list[str]) -> SceneSpec:
    narration = join_sentences(sentences)
    return SceneSpec(narration=narration, prompt=fit_prompt(narration))


def plan_film(spec: FilmSpec) -> FilmSpec:
    """The film with its scenes: the spec's own, or the story split offline.

    Prompts are checked, and every scene's duration is written out, so the resolved
    spec saved beside the film says exactly how long each scene is.
    """
    scenes = spec.scenes
    if not scenes:
        scenes = split_story(spec.story.text)
        if not scenes:
            raise SpecError("story.text", "holds no sentences to make scenes from")
    spec = dataclasses.replace(spec, scenes=[dataclasses.replace(s, duration=s.seconds) for s in scenes])
    for index, scene in enumerate(spec.scenes):
        tokens = clip_token_count(scene.visual_prompt)
        if tokens > CLIP_MAX_TOKENS:
            field = "prompt" if scene.prompt.strip() else "narration"
            raise SpecError(f"scenes[{index}].{field}",
                            f"is {tokens} CLIP tokens long; a visual prompt holds at most {CLIP_MAX_TOKENS} "
                            f"(give the scene a shorter prompt)")
        for number, extra in enumerate(scene.prompts):
            tokens = clip_token_count(extra.text)
            if tokens > CLIP_MAX_TOKENS:
                raise SpecError(f"scenes[{index}].prompts[{number}].text",
                                f"is {tokens} CLIP tokens long; a prompt holds at most {CLIP_MAX_TOKENS}")
    return spec
