"""The pipeline, read top to bottom: a seed phrase or a film spec becomes film.mp4.

``make_film`` (``farm film PHRASE``), from a phrase:

    1. story   candidates written (or saved ones reused with --pick), one chosen
    2. plan    the story split into scenes (LLM, or offline when none is configured)
    3. save    out/<film>/film.yaml: the story, the plan and every setting, so the
               film re-renders with `farm render out/<film>/film.yaml` and no LLM
    4. render_film

``render_film`` (``farm render FILM.yaml``), from a spec:

    1. plan the film   scenes from the story when needed, prompts checked
    2. plan the cut    the timeline and the narration (scenes lengthened to fit their speech)
    3. open the store  the film's folder, once: a different film there stops us
    4. render          farm.driver on Ray; it calls back as each scene or bridge is on disk,
                       and the cutter encodes that scene's pieces then
    5. cut             join, check, subtitles, contact sheet, poster (farm.cutting)

The driver and the cutter never meet but here.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from farm.cutting.film import FilmCutter, plan_cut
from farm.cutting.tools import find_ffmpeg
from farm.driver.progress import Reporter
from farm.driver.render import render_frames
from farm.driver.store import FilmStore
from farm.errors import InputError, OutputConflictError
from farm.folder.events import EventLog
from farm.folder.layout import SPEC_NAME, VIDEO_NAME, write_film_yaml
from farm.folder.lock import folder_lock
from farm.spec import FilmSpec, load_spec, spec_from_dict
from farm.writing.plan import plan_film
from farm.writing.scenes import plan_scenes
from farm.writing.steps import base_spec, obtain_story
from farm.writing.story import check_phrase, story_film


def make_film(phrase: str, out: str | Path = "out", preset: Optional[str] = None, pick: Optional[int] = None,
              candidates: Optional[int] = None, overrides: Sequence[str] = (), address: Optional[str] = None,
              ask: Optional[Callable[[str], str]] = None, say: Optional[Callable[[str], None]] = None,
              environ: Optional[Mapping[str, str]] = None, new: bool = False,
              show_to: Optional[Callable[[str], None]] = None) -> FilmResult:
    """Story, plan, render and stitch: what render_film returns."""
    say = say or (lambda message: None)
    environ = os.environ if environ is None else environ
    # 1. Check the inputs before anything is asked of a server.
    phrase = check_phrase(phrase)
    data, trial = base_spec(phrase, overrides, candidates, preset)
    if "://" in str(out):
        raise InputError(f"--out: {out}: farm film makes its film in a local folder; render it into a film store "
                         "with farm render OUT/FILM/film.yaml --out URI")
    folder = Path(out) / trial.slug
    spec_path = folder / SPEC_NAME
    with folder_lock(folder, "farm film"):  # one run per film folder: story, plan and render
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
        write_film_yaml(folder, spec)
        say(f"story and {len(spec.scenes)} scenes saved in {spec_path}")
        # 5. Render and stitch.
        return render_film(spec, out=out, address=address, progress=say)


@dataclass
class FilmResult:
    path: Path  # the film's folder
    video: Path
    subtitles: Path
    frames: int  # frames of the film (its timeline)
    scenes_rendered: int  # scenes rendered by this run (the rest were already on disk)
    seconds: float
    workers: list[dict[str, Any]] = field(default_factory=list)  # every worker that was ready in this run
    location: str = ""  # where the film's folder is kept: ``path``, or its film store URI


def render_film(spec: FilmSpec, out: str | Path = "out", address: Optional[str] = None,
                progress: Optional[Callable[[str], None]] = None, *, resume: bool = False,
                rerender_changed: bool = False,
                events: Optional[Callable[[dict[str, Any]], None]] = None,
                worker_class: Optional[type] = None) -> FilmResult:
    """Render ``spec`` into ``out/<film>/``: frames, segments, film.mp4 and film.srt.

    ``address``: the Ray cluster to join (default: the one this process joined, or a local one).
    ``progress`` gets one-line messages for a person; ``events`` gets dicts (farm.driver.progress).
    ``resume`` insists on a film already in the folder and says what it found;
    ``rerender_changed`` lets a changed spec in, rendering again the scenes the change touches.
    ``worker_class``: the render actor (a benchmark may give its own; see render_frames).
    """
    started = time.perf_counter()
    report = Reporter(progress, events)
    # 1. Plan the film: scenes from the story when needed, prompts checked; the tools there.
    spec = plan_film(spec)
    exe = find_ffmpeg(spec.video.ffmpeg)
    if address is None:
        # The workers will run on this machine: missing weights are known before any starts.
        from farm.render.weights import preflight

        preflight(spec.models, spec.render.preset)
    # 2. Plan the cut: the timeline and the narration (kept in the film's folder, so a
    #    remote film store's copy is pulled first).
    store = FilmStore(out, spec.slug)
    with store.lock("farm render", report.say):  # one run per film (and film store URI), to the end
        store.pull()
        cut = plan_cut(spec, exe, report.say, film_dir=store.path, bridges=True)
        # 3. Open the film store, once: a different film already there stops us here.
        store.open(cut.spec, same_as=(spec,), resume=resume, rerender_changed=rerender_changed)
        spec = cut.spec
        report.say(f"film {spec.title!r}: {len(spec.scenes)} scenes, {sum(spec.frames_per_scene())} frames "
                   f"-> {store.location}")
        if store.changed:
            touched = ", ".join(str(i + 1) for i in store.touched) or "none (only the segments are made again)"
            report.say(f"the spec changed ({', '.join(store.changed)}); scenes rendered again: {touched}")
        if resume:
            report.say(f"resuming: {store.summary()}")
        # 4. Render what is missing; each scene's pieces are encoded as soon as it is on disk. Every
        #    event goes to the film's folder too (events.jsonl), for farm serve to watch.
        log = EventLog(store.path)
        log.run_started()
        report.events = _both(events, log.append)
        cutter = FilmCutter(cut, store.path, exe, report.say)
        try:
            try:
                rendered = render_frames(spec, store, address, report, on_scene=cutter.scene_ready,
                                         on_bridge=cutter.bridge_ready, bridge_frames=cut.bridge_frames,
                                         worker_class=worker_class)
            except BaseException:
                cutter.close()
                raise
            # 5. Cut: join the pieces, check the film, subtitles and pictures; the spec with its timeline.
            stitched = cutter.finish()
            store.write_spec(spec, stitched.timeline.to_dict())
        except BaseException as exc:
            # An error is a failed run; an interrupt (Ctrl-C, a stopped job) a stopped one.
            log.run_ended("failed" if isinstance(exc, Exception) else "stopped",
                          (str(exc).splitlines() or [type(exc).__name__])[0])
            raise
        log.run_ended("finished")
        store.publish_new()  # a remote film store gets what ffmpeg made here
        if store.remote:
            report.say(f"film stored: {store.location}/{VIDEO_NAME}")
        return FilmResult(path=store.path, video=stitched.video, subtitles=stitched.srt, frames=stitched.timeline.total,
                          scenes_rendered=rendered.scenes_rendered, seconds=time.perf_counter() - started,
                          workers=rendered.workers, location=store.location)


def _both(first: Optional[Callable[[dict[str, Any]], None]],
          second: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def emit(event: dict[str, Any]) -> None:
        second(event)
        if first is not None:
            first(event)

    return emit
