"""Seed phrase -> story: candidates written by the LLM, each saved and numbered, one chosen.

The seed film's way: several stories were written from one phrase before one was worth
filming. Chat models are asked for a short story in the phrase's language (or
``llm.language``); base and instruct models on the legacy completions endpoint
complete the phrase itself.

    FILM.candidates/candidate_1.yaml ...   phrase, settings, text (never the API key)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import yaml

from farm.errors import InputError
from farm.folder.layout import atomic_write
from farm.spec import LLMSpec, readable_yaml, slugify
from farm.writing.llm import LLMClient, base_url, public_url

CANDIDATE_NAME = "candidate_{}.yaml"

STORY_SYSTEM = (
    "You write the stories of very short films. The film will be painted scene by scene by an AI that turns "
    "text into pictures, and the story will be read as subtitles. Write a short story of {words} words or "
    "fewer, in vivid, concrete, visual sentences: places, creatures, light, colour, movement. No title, no "
    "headings, no lists, no dialogue tags: just the story's prose. {language}")
STORY_USER = "The seed phrase: {phrase}"


def language_line(language: str) -> str:
    if language.strip():
        return f"Write in {language.strip()}."
    return ("Write in the language of the seed phrase (a French phrase gets a French story, "
            "a Japanese one a Japanese story).")


@dataclass(frozen=True)
class Candidate:
    number: int
    phrase: str
    text: str
    settings: dict[str, Any]
    """The llm settings that wrote it (model, base_url, endpoint, temperature, ...): no key."""


def recorded_settings(llm: LLMSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    """The llm section as used: the server actually asked (without any password in the URL)."""
    settings = dataclasses.asdict(llm)
    settings["base_url"] = public_url(base_url(llm, environ))
    return settings


def check_phrase(phrase: str) -> str:
    phrase = " ".join(phrase.split())
    if not phrase:
        raise InputError("the seed phrase is empty: give a few words to write a story from")
    if not slugify(phrase):
        raise InputError(f"the seed phrase {phrase!r} holds no letters or digits to name the film after")
    return phrase


def write_candidates(phrase: str, client: LLMClient, count: int, environ: Mapping[str, str],
                     say: Callable[[str], None] = lambda m: None) -> list[Candidate]:
    """``count`` stories from the phrase, one request each (candidate k gets seed + k - 1)."""
    llm = client.llm
    system = STORY_SYSTEM.format(words=llm.story_words, language=language_line(llm.language))
    user = STORY_USER.format(phrase=phrase)
    settings = recorded_settings(llm, environ)
    candidates = []
    for number in range(1, count + 1):
        say(f"writing story {number} of {count} with {llm.model}")
        writer = client.with_seed(llm.seed + number - 1) if llm.seed is not None else client
        if llm.endpoint == "completions":
            # The seed's way: a base model continues the phrase, and what it writes is the story.
            text = writer.complete(f"{phrase}\n\n", llm.temperature).text
        else:
            text = writer.ask(system, user, llm.temperature)
        candidates.append(Candidate(number=number, phrase=phrase, text=_clean(text),
                                    settings=dict(settings, seed=None if llm.seed is None else llm.seed + number - 1)))
    return candidates


def _clean(text: str) -> str:
    """The story's prose: code fence lines the model may add around it are dropped."""
    lines = [line for line in text.strip().splitlines() if not line.strip().startswith("```")]
    return "\n".join(lines).strip()


def save_candidates(folder: Path, candidates: list[Candidate]) -> list[Path]:
    """Each candidate in its own numbered file; older candidates beyond these are removed."""
    paths = []
    for c in candidates:
        path = folder / CANDIDATE_NAME.format(c.number)
        data = {"candidate": c.number, "phrase": c.phrase, "llm": c.settings, "text": c.text}
        atomic_write(path, readable_yaml(data))
        paths.append(path)
    number = len(candidates) + 1
    while (folder / CANDIDATE_NAME.format(number)).is_file():
        (folder / CANDIDATE_NAME.format(number)).unlink()
        number += 1
    return paths


def load_candidates(folder: Path, phrase: str) -> list[Candidate]:
    """The candidates saved in ``folder`` for this phrase (none when there are none, or for another)."""
    candidates = []
    number = 1
    while (path := folder / CANDIDATE_NAME.format(number)).is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: cannot be read ({type(exc).__name__}); remove it to write new stories") from exc
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or data.get("phrase") != phrase:
            return []
        candidates.append(Candidate(number=number, phrase=phrase, text=data["text"],
                                    settings=data.get("llm") if isinstance(data.get("llm"), dict) else {}))
        number += 1
    return candidates


def show(candidates: list[Candidate]) -> str:
    rule = "-" * 72
    return "\n".join(f"{rule}\n[{c.number}]\n{c.text}" for c in candidates) + f"\n{rule}"


def choose(candidates: list[Candidate], pick: Optional[int], ask: Optional[Callable[[str], str]],
           folder: Path) -> Candidate:
    """Candidate ``pick`` (1-based); else the only one; else the user's choice at a terminal."""
    count = len(candidates)
    if pick is not None:
        if not 1 <= pick <= count:
            raise InputError(f"--pick {pick}: there are {count} candidate(s) (saved in {folder}); pick 1 to {count}")
        return candidates[pick - 1]
    if count == 1:
        return candidates[0]
    if ask is None:
        raise InputError(f"no terminal to choose a story in: the {count} candidates are saved in {folder}; "
                         f"run the same command again with --pick K (1 to {count})")
    for _ in range(5):
        try:
            answer = ask(f"Which story (1-{count})? ").strip()
        except EOFError:
            break
        if answer.isdigit() and 1 <= int(answer) <= count:
            return candidates[int(answer) - 1]
    raise InputError(f"no story chosen; the {count} candidates are saved in {folder}: run again with --pick K")


def story_film(phrase: str, candidate: Candidate, base: Mapping[str, Any]) -> dict[str, Any]:
    """The film spec mapping for the chosen story: the phrase, the text, and the llm settings used."""
    data = dict(base)
    data.setdefault("title", phrase)
    story = dict(data.get("story") or {})
    story.update(phrase=phrase, text=candidate.text, candidate=candidate.number)
    data["story"] = story
    data["llm"] = dict(candidate.settings)
    data.pop("scenes", None)
    return data
