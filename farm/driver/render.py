"""Render a film: plan, open the film store, render what is missing on Ray, stitch.

The parts live in their own modules:

    jobs.py      the film's jobs (scenes, keyframe anchors) and their renderer arguments
    cluster.py   joining a Ray cluster, or starting a local one
    pool.py      the render actors: started, loaded, replaced, stopped
    dispatch.py  ready jobs to idle workers; frame streams collected with ray.wait; failures
    film.py      one film run: what is done, latents between jobs, segments, the stitch
    store.py     the film's folder: resolved spec, manifest, frames (atomic writes)
    worker.py    the render actor itself
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from farm.cutting.film import plan_cut
from farm.cutting.tools import find_ffmpeg
from farm.driver.cluster import check_reachable, connect  # noqa: F401  (re-exported)
from farm.driver.film import FilmRun
from farm.driver.jobs import ANCHOR_PASS, SCENE_PASS, Job, job_arguments, plan_jobs  # noqa: F401
from farm.driver.pool import worker_label  # noqa: F401
from farm.driver.store import FilmStore
from farm.spec import FilmSpec
from farm.writing.plan import plan_film


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
                events: Optional[Callable[[dict[str, Any]], None]] = None) -> FilmResult:
    """Render ``spec`` into ``out/<film>/``: frames, segments, film.mp4 and film.srt.

    Joins the Ray cluster at ``address``, uses the one this process already joined,
    or starts a local one sized to the machine (and stops it afterwards).
    ``progress`` gets one-line messages for a person; ``events`` gets dicts (farm.driver.progress).
    ``resume`` insists on a film already in the folder and says what it found;
    ``rerender_changed`` lets a changed spec in, rendering again the scenes the change touches.
    """
    started = time.perf_counter()
    say = progress or (lambda message: None)
    # 1. Plan: scenes from the story when needed, prompts checked, jobs derived.
    spec = plan_film(spec)
    exe = find_ffmpeg(spec.video.ffmpeg)
    if address is None:
        # The workers will run on this machine: missing weights are known before any starts.
        from farm.render.weights import preflight

        preflight(spec.models, spec.render.preset)
    # The timeline and the narration: scenes may be lengthened to fit their speech.
    # (A remote film store's copy of the film is pulled first: the narration is kept beside it.)
    staging = FilmStore(out, spec)
    staging.pull()
    cut = plan_cut(spec, exe, say, film_dir=staging.path, bridges=True)
    planned, spec = spec, cut.spec
    # 2. Open the film's folder; a different film already there stops us here.
    store = FilmStore(out, spec, same_as=(planned,))
    store.open(resume=resume, rerender_changed=rerender_changed, pull=False)
    say(f"film {spec.title!r}: {len(spec.scenes)} scenes, {sum(spec.frames_per_scene())} frames -> {store.location}")
    if store.changed:
        touched = ", ".join(str(i + 1) for i in store.touched) or "none (only the segments are made again)"
        say(f"the spec changed ({', '.join(store.changed)}); scenes rendered again: {touched}")
    if resume:
        say(f"resuming: {store.summary()}")
    # 3. Render what is missing.
    run = FilmRun(spec, store, exe, say, cut, events)
    run.emit("film", film=spec.slug, path=str(store.path), scenes=len(spec.scenes),
             frames_total=sum(spec.frames_per_scene()),
             frames_done=sum(len(e["hashes"]) for e in store.manifest["scenes"]), changed=store.changed)
    try:
        workers = run.render(address)
    except BaseException:
        run.close()
        raise
    # 4. Stitch.
    video = run.stitch()
    return FilmResult(path=store.path, video=video, subtitles=store.path / "film.srt",
                      frames=cut.timeline.total, scenes_rendered=run.scenes_rendered,
                      seconds=time.perf_counter() - started, workers=workers, location=store.location)
