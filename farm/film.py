"""``farm film PHRASE``: the whole mission, seed phrase to film.mp4, in one call.

    1. story   candidates written (or saved ones reused with --pick), one chosen
    2. plan    the story split into scenes (LLM, or offline when none is configured)
    3. save    out/<film>/film.yaml: the story, the plan and every setting, so the
               film re-renders with `farm render out/<film>/film.yaml` and no LLM
    4. render  farm.driver.render.render_film: Ray workers, then the ffmpeg stitch

Running the same command again continues the film from its film.yaml, without the LLM.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from farm.errors import OutputConflictError
from farm.spec import load_spec, spec_from_dict
from farm.writing.files import atomic_write_text
from farm.writing.plan import plan_film
from farm.writing.scenes import plan_scenes
from farm.writing.steps import base_spec, obtain_story
from farm.writing.story import check_phrase, story_film


def make_film(phrase: str, out: str | Path = "out", preset: Optional[str] = None, pick: Optional[int] = None,
              candidates: Optional[int] = None, overrides: Sequence[str] = (), address: Optional[str] = None,
              ask: Optional[Callable[[str], str]] = None, say: Optional[Callable[[str], None]] = None,
              environ: Optional[Mapping[str, str]] = None, new: bool = False,
              show_to: Optional[Callable[[str], None]] = None) -> Any:
    """Story, plan, render and stitch; returns render_film's FilmResult."""
    from farm.driver.render import render_film

    say = say or (lambda message: None)
    environ = os.environ if environ is None else environ
    # 1. Check the inputs before anything is asked of a server.
    phrase = check_phrase(phrase)
    data, trial = base_spec(phrase, overrides, candidates, preset)
    folder = Path(out) / trial.slug
    spec_path = folder / "film.yaml"
    # 2. A film already planned here continues from its own spec: no LLM.
    if spec_path.is_file():
        spec = load_spec(spec_path, preset=preset)
        if spec.story.phrase != phrase:
            raise OutputConflictError(f"{folder}: holds the film of another phrase ({spec.story.phrase!r}); "
                                      "choose another --out, or remove that folder")
        if spec.scenes:
            say(f"{spec_path}: the story and plan are saved; rendering from them (no LLM)")
            return render_film(spec, out=out, address=address, progress=say)
    elif folder.is_dir() and any(p.name != "candidates" for p in folder.iterdir()):
        raise OutputConflictError(f"{folder}: holds files but no film.yaml; choose another --out or empty it")
    # 3. Story: candidates saved in the film's folder, one chosen.
    chosen = obtain_story(phrase, trial.llm, folder / "candidates", pick, ask, say, environ, new, show_to)
    spec = spec_from_dict(story_film(phrase, chosen, data), preset=preset)
    # 4. Plan, checked, saved before rendering so the film never needs the LLM again.
    scenes = plan_scenes(spec, environ=environ, say=say)
    spec = plan_film(dataclasses.replace(spec, scenes=scenes))
    atomic_write_text(spec_path, spec.to_yaml())
    say(f"story and {len(spec.scenes)} scenes saved in {spec_path}")
    # 5. Render and stitch.
    return render_film(spec, out=out, address=address, progress=say)
