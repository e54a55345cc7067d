"""Story -> scenes by the LLM: narration, a visual prompt CLIP can read, a duration.

    story.text ──chunks of llm.chunk_words──▶ LLM (JSON schema, or tolerant JSON) ──▶ scenes
                 each chunk told the scenes before it, so the story keeps its thread

A prompt longer than CLIP's 75 tokens (counted with open_clip's tokenizer) is sent
back to the model to be condensed, up to llm.retries + 1 times; it is never cut.
Durations come from reading speed (farm.spec.reading_seconds: a minimum and a
maximum per scene). With no LLM configured the offline splitter plans instead.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional

from farm.errors import LLMError, SpecError
from farm.spec import MAX_NARRATION_CHARS, MAX_SCENES, FilmSpec, SceneSpec, reading_seconds
from farm.writing.llm import BadAnswer, LLMClient, configured
from farm.writing.plan import CLIP_MAX_TOKENS, clip_token_count, join_sentences, split_sentences, split_story

# Scenes of the previous chunk shown to the next one, to keep the thread.
CONTEXT_SCENES = 3
# Words a visual prompt is asked to stay under: about 1.3 CLIP tokens a word leaves room.
PROMPT_WORDS = 40

SCENES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "scenes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"narration": {"type": "string"}, "prompt": {"type": "string"}},
                "required": ["narration", "prompt"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["scenes"],
    "additionalProperties": False,
}

PLAN_SYSTEM = (
    "You turn a short story into the scenes of a film. Every scene is one picture, painted by an AI that "
    "turns an English description into an image, while its narration is shown as a subtitle.\n"
    "Split the story text you are given into consecutive scenes of one or two sentences each. For every scene "
    "give:\n"
    "- narration: the scene's sentences, copied word for word from the story, in the story's own language;\n"
    "- prompt: an English description of the picture, at most {words} words: subject, setting, light, "
    "colours, style. No names the painter cannot know; no text in the picture.\n"
    "Keep characters, places and the look of the film the same from scene to scene.\n"
    "Answer with only a JSON object: {{\"scenes\": [{{\"narration\": \"...\", \"prompt\": \"...\"}}, ...]}}")

CONDENSE_SYSTEM = (
    "You shorten picture descriptions for an AI painter. Keep the subject, the setting, the light and the "
    "style; drop everything else. Answer with only the shortened English description, at most {words} words.")


def use_llm(spec: FilmSpec, environ: Mapping[str, str]) -> bool:
    if spec.llm.planner == "auto":
        return configured(spec.llm, environ)
    return spec.llm.planner == "llm"


def plan_scenes(spec: FilmSpec, client: Optional[LLMClient] = None, environ: Optional[Mapping[str, str]] = None,
                say: Callable[[str], None] = lambda m: None) -> list[SceneSpec]:
    """The scenes of ``spec.story.text``, with durations: by the LLM, or offline when none is configured."""
    environ = os.environ if environ is None else environ
    text = spec.story.text.strip()
    if not text:
        raise SpecError("story.text", "is empty: nothing to plan (write a story with farm story, or give scenes)")
    if not use_llm(spec, environ):
        say("planning offline (no LLM configured): sentences grouped into scenes")
        scenes = split_story(text)
        if not scenes:
            raise SpecError("story.text", "holds no sentences to make scenes from")
        return [_timed(s.narration, s.prompt) for s in scenes]
    client = client or LLMClient(spec.llm, environ, say=say)
    chunks = chunk_story(text, spec.llm.chunk_words)
    scenes: list[SceneSpec] = []
    for number, chunk in enumerate(chunks, start=1):
        say(f"planning scenes with {spec.llm.model}" + (f": part {number} of {len(chunks)}" if len(chunks) > 1 else ""))
        scenes.extend(_plan_chunk(client, spec, chunk, scenes, number, len(chunks)))
        if len(scenes) > MAX_SCENES:
            raise LLMError(f"scenes: the model split the story into more than {MAX_SCENES} scenes, the most a "
                           "film may have; plan a shorter story")
    return [_timed(s.narration, _fit(client, s.prompt, index)) for index, s in enumerate(scenes)]


def chunk_story(text: str, words: int) -> list[str]:
    """The story in pieces of about ``words`` words, cut only between sentences."""
    chunks: list[list[str]] = [[]]
    count = 0
    for sentence in split_sentences(text):
        size = len(sentence.split())
        if chunks[-1] and count + size > words:
            chunks.append([])
            count = 0
        chunks[-1].append(sentence)
        count += size
    return [join_sentences(c) for c in chunks if c]


def _plan_chunk(client: LLMClient, spec: FilmSpec, chunk: str, before: list[SceneSpec], number: int,
                total: int) -> list[SceneSpec]:
    parts = []
    if spec.story.phrase:
        parts.append(f"The film: {spec.title} (from the seed phrase {spec.story.phrase!r}).")
    if total > 1:
        parts.append(f"This is part {number} of {total} of the story.")
    if before:
        shown = "\n".join(f"- narration: {s.narration}\n  prompt: {s.prompt}" for s in before[-CONTEXT_SCENES:])
        parts.append(f"The film so far has {len(before)} scenes; the last ones were:\n{shown}\n"
                     "Continue from there, with the same characters and look.")
    parts.append(f"The story text to split into scenes:\n{chunk}")
    system = PLAN_SYSTEM.format(words=PROMPT_WORDS)
    return client.ask_json(system, "\n\n".join(parts), spec.llm.temperature / 4, SCENES_SCHEMA, "scenes",
                           read_scenes)


def read_scenes(data: Any) -> list[SceneSpec]:
    """Scenes from the model's JSON; BadAnswer naming what breaks the schema."""
    if isinstance(data, dict):
        data = data.get("scenes")
    if not isinstance(data, list) or not data:
        raise BadAnswer('not a JSON object with a non-empty "scenes" list')
    scenes = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadAnswer(f"not a list of scene objects (scenes[{index}] is {type(item).__name__})")
        for key in ("narration", "prompt"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise BadAnswer(f'missing text "{key}" in scenes[{index}]')
        narration = " ".join(item["narration"].split())
        if len(narration) > MAX_NARRATION_CHARS:  # the spec's own bound: asked again, as any bad answer
            raise BadAnswer(f"scenes[{index}].narration is {len(narration)} characters long "
                            f"(at most {MAX_NARRATION_CHARS})")
        scenes.append(SceneSpec(narration=narration, prompt=" ".join(item["prompt"].split())))
    return scenes


def _fit(client: LLMClient, prompt: str, index: int) -> str:
    """The prompt if it fits CLIP; else the model's condensed version of it. Never cut."""
    tokens = clip_token_count(prompt)
    tries = client.llm.retries + 1
    for attempt in range(tries):
        if tokens <= CLIP_MAX_TOKENS:
            return prompt
        client.say(f"scene {index + 1}: prompt is {tokens} CLIP tokens (at most {CLIP_MAX_TOKENS}); "
                   f"asking the model to condense it ({attempt + 1} of {tries})")
        words = max(8, PROMPT_WORDS - 10 * attempt)
        prompt = " ".join(client.ask(CONDENSE_SYSTEM.format(words=words), prompt, 0.0).split())
        tokens = clip_token_count(prompt)
    if tokens <= CLIP_MAX_TOKENS:
        return prompt
    raise LLMError(f"scenes[{index}].prompt: the model's visual prompt is still {tokens} CLIP tokens after "
                   f"{tries} request(s) to condense it (at most {CLIP_MAX_TOKENS}); run again, use another "
                   "llm.model, or plan offline (llm.planner: offline)")


def _timed(narration: str, prompt: str) -> SceneSpec:
    return SceneSpec(narration=narration, prompt=prompt, duration=reading_seconds(narration))
