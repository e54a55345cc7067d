"""The writing stages as files: ``farm story`` (phrase -> FILM.yaml) and ``farm plan`` (FILM.yaml -> scenes).

Every file is written whole, after everything it depends on succeeded: a failure
leaves no new file and no changed one (saved candidates are kept, so a choice can
be made later with --pick).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import yaml

from farm.errors import InputError, LLMError
from farm.folder.layout import atomic_write
from farm.spec import FilmSpec, LLMSpec, apply_override, read_spec_file, readable_yaml, spec_from_dict
from farm.writing.llm import LLMClient, configured
from farm.writing.plan import plan_film
from farm.writing.scenes import plan_scenes
from farm.writing.story import (
    Candidate,
    check_phrase,
    choose,
    load_candidates,
    save_candidates,
    show,
    story_film,
    write_candidates,
)

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def base_spec(phrase: str, overrides: Sequence[str], candidates: Optional[int] = None,
              preset: Optional[str] = None) -> tuple[dict[str, Any], FilmSpec]:
    """The spec mapping a story is written into (title = the phrase, then --set overrides),
    and that mapping checked as a film (with a stand-in story, which is not kept)."""
    data: dict[str, Any] = {"title": phrase}
    for item in overrides:
        apply_override(data, item)
    if candidates is not None:
        llm = data.setdefault("llm", {})
        if not isinstance(llm, dict):
            raise InputError(f"llm: must be a mapping, got {llm!r}")
        llm["candidates"] = candidates
    story = data.get("story") if isinstance(data.get("story"), dict) else {}
    trial = dict(data, story=dict(story, phrase=phrase, text="(the story to be written)"))
    return data, spec_from_dict(trial, preset=preset)


def obtain_story(phrase: str, llm: LLMSpec, folder: Path, pick: Optional[int], ask: Optional[Callable[[str], str]],
                 say: Say = _quiet, environ: Optional[Mapping[str, str]] = None, new: bool = False,
                 show_to: Optional[Say] = None) -> Candidate:
    """The chosen story: saved candidate ``pick`` when there is one (no LLM needed), else
    llm.candidates new ones written, saved in ``folder`` and shown (to ``show_to``, else
    ``say``), then chosen."""
    environ = os.environ if environ is None else environ
    saved = [] if new else load_candidates(folder, phrase)
    if pick is not None and 1 <= pick <= len(saved):
        say(f"using story {pick} of the {len(saved)} saved in {folder} (--new writes new ones)")
        return saved[pick - 1]
    if not configured(llm, environ):
        raise LLMError(f"no LLM configured to write a story: set ${llm.api_key_env} for OpenAI, or llm.base_url "
                       "(or $OPENAI_BASE_URL) for another OpenAI-compatible server (see docs/LLM.md); "
                       "or write story.text in a film spec yourself and run farm plan")
    client = LLMClient(llm, environ, say=say)
    candidates = write_candidates(phrase, client, llm.candidates, environ, say=say)
    save_candidates(folder, candidates)
    (show_to or say)(show(candidates))
    say(f"{len(candidates)} candidate(s) saved in {folder}")
    return choose(candidates, pick, ask, folder)


def write_story(phrase: str, out: Optional[str | Path] = None, candidates: Optional[int] = None,
                pick: Optional[int] = None, overrides: Sequence[str] = (), ask: Optional[Callable[[str], str]] = None,
                say: Say = _quiet, environ: Optional[Mapping[str, str]] = None, new: bool = False,
                show_to: Optional[Say] = None, force: bool = False) -> Path:
    """``farm story``: candidates from the phrase, one chosen, written as a film spec to ``out``
    (default ``<film>.yaml``); candidates are kept in ``<out>.candidates/``. A spec already at
    ``out`` (the user's, perhaps edited) is replaced only with ``force``."""
    phrase = check_phrase(phrase)
    data, trial = base_spec(phrase, overrides, candidates)
    path = Path(out) if out else Path(f"{trial.slug}.yaml")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; --out names the film spec file to write")
    if path.exists() and not force:  # said before any story is written (an LLM's time costs)
        raise InputError(f"{path}: exists; farm story replaces it only with --force (or give another --out)")
    folder = path.with_name(f"{path.stem}.candidates")
    chosen = obtain_story(phrase, trial.llm, folder, pick, ask, say, environ, new, show_to)
    film = story_film(phrase, chosen, data)
    spec_from_dict(film)  # what is written must load
    atomic_write(path, readable_yaml(film))
    say(f"story {chosen.number} written to {path}")
    return path


def plan_file(path: str | Path, out: Optional[str | Path] = None, overrides: Sequence[str] = (),
              force: bool = False, say: Say = _quiet, environ: Optional[Mapping[str, str]] = None) -> Path:
    """``farm plan``: the story of the spec at ``path`` split into scenes, written into ``out``
    (default: the same file, replaced atomically). The rest of the file is kept as it is."""
    path = Path(path)
    data = read_spec_file(path)
    for item in overrides:
        apply_override(data, item)
    spec = spec_from_dict(data)
    if spec.scenes and not force:
        raise InputError(f"{path}: already has {len(spec.scenes)} scene(s); run with --force to plan them again "
                         "from story.text")
    scenes = plan_scenes(spec, environ=environ, say=say)
    data["scenes"] = [scene_dict(s) for s in scenes]
    plan_film(spec_from_dict(data))  # every prompt fits CLIP, the whole spec loads
    target = Path(out) if out else path
    atomic_write(target, planned_text(path.read_text(encoding="utf-8"), data, path, say))
    say(f"{len(scenes)} scenes written to {target}")
    return target


def planned_text(original: str, data: dict[str, Any], path: Path, say: Say) -> str:
    """The planned spec as YAML. When the plan only adds ``scenes`` to the file, the file's own text
    is kept, comments and all, with the scenes after it; otherwise it is written anew, and its
    comments, if it had any, are said to be gone."""
    added = original.rstrip("\n") + "\n" + readable_yaml({"scenes": data["scenes"]})
    try:
        before = yaml.safe_load(original)
        if isinstance(before, dict) and "scenes" not in before and yaml.safe_load(added) == data:
            return added
    except yaml.YAMLError:
        pass
    if any(line.lstrip().startswith("#") or " #" in line for line in original.splitlines()):
        say(f"{path}: its comments are not kept (its scenes are replaced and the file written anew)")
    return readable_yaml(data)


def scene_dict(scene: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(scene).items() if v is not None and v != []}


