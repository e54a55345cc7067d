"""The films under OUT, read from their folders into the records the pages and the JSON API show.

A film's folder is only read: ``film.yaml`` (the resolved spec, its timeline once stitched),
``manifest.json`` (each scene's state, frames, node), ``events.jsonl`` (the runs' progress
events, followed by offset), the frames on disk (the manifest is saved every two seconds; a
running scene's frames are counted on disk), the film and its subtitles and pictures.

A film is ``planned`` (a spec, nothing rendered), ``rendering`` (a run started and its driver
is alive), ``done`` (every scene done and film.mp4 made), ``failed`` (a scene failed past its
retries, or the last run failed) or ``stopped`` (rendered in part, no run going on).

What is read is kept per film and read again only when a file it came from changed
(:meth:`Films.signature`: a few ``stat`` calls), so a page of a 1,000-scene film costs a
dictionary lookup while nothing changes.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from farm.errors import InputError
from farm.folder.events import read_events
from farm.folder.layout import (
    CANDIDATES_DIR,
    CONTACT_NAME,
    EVENTS_NAME,
    FRAME_NAME,
    MANIFEST_NAME,
    POSTER_NAME,
    SPEC_NAME,
    SRT_NAME,
    VIDEO_NAME,
    VTT_NAME,
    scene_dir_name,
)
from farm.folder.manifest import Manifest

# Films with at most this many frames get one cell per frame in the frame bar (and their
# written frames listed per scene); longer ones one cell per scene.
FRAME_CELLS_MAX = 600
# A run on another host (no pid to ask) is taken as alive while its folder changed this recently.
REMOTE_RUN_SILENCE_S = 60.0
# A manifest without events (a driver from before events.jsonl) is rendering while this fresh.
MANIFEST_FRESH_S = 10.0
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: a 1,000-scene spec in ms
FILES = {"video": VIDEO_NAME, "srt": SRT_NAME, "vtt": VTT_NAME, "contact": CONTACT_NAME, "poster": POSTER_NAME}
FRAME_PREFIX, FRAME_SUFFIX = FRAME_NAME.split("{")[0], ".png"


class NoSuchFilm(InputError):
    """A name that is not a film folder directly under OUT."""


@dataclass
class Run:
    started: float
    pid: Optional[int] = None
    host: Optional[str] = None
    ended: Optional[float] = None
    state: str = "started"  # started, finished, stopped, failed
    error: str = ""


@dataclass
class RunLog:
    """What a film's events.jsonl says so far, read on from ``offset`` as it grows."""

    offset: int = 0
    inode: Optional[int] = None
    runs: list[Run] = field(default_factory=list)
    hosts: dict[str, str] = field(default_factory=dict)  # node id -> host
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> last worker event
    running: dict[int, Optional[str]] = field(default_factory=dict)  # scene -> node id, this run
    last_frames: Optional[dict[str, Any]] = None
    last_time: Optional[float] = None
    avoided: dict[str, str] = field(default_factory=dict)  # node id -> reason

    def feed(self, event: dict[str, Any]) -> None:
        kind, when = event.get("event"), event.get("time")
        if isinstance(when, (int, float)):
            self.last_time = when
        if kind == "run":
            if event.get("state") == "started":
                self.runs.append(Run(started=when or time.time(), pid=event.get("pid"), host=event.get("host")))
                self.running, self.workers, self.last_frames = {}, {}, None
            elif self.runs:
                run = self.runs[-1]
                run.ended, run.state, run.error = when, str(event.get("state")), str(event.get("error", ""))
                self.running = {}
        elif kind == "film" and not self.runs:  # events from a reporter without run events
            self.runs.append(Run(started=when or time.time()))
        elif kind == "worker":
            node = str(event.get("node"))
            if event.get("host"):
                self.hosts[node] = str(event["host"])
            if event.get("state") == "dropped":
                self.workers.pop(node, None)
            else:
                self.workers[node] = event
        elif kind == "node" and event.get("state") == "avoided":
            self.avoided[str(event.get("node"))] = str(event.get("reason", ""))
        elif kind == "scene" and isinstance(event.get("scene"), int):
            if event.get("state") in ("started", "resumed"):
                self.running[event["scene"]] = event.get("node")
            else:
                self.running.pop(event["scene"], None)
        elif kind == "frames":
            self.last_frames = event

    def where(self, node: Optional[str]) -> Optional[str]:
        if not node:
            return None
        return f"{self.hosts[node]} node {node[:12]}" if node in self.hosts else f"node {node[:12]}"


def _stat(path: Path) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _alive(run: Run) -> bool:
    if run.pid is None or run.host != socket.gethostname():
        return False
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _number(value: Any, default: float) -> float:
    """A positive number from a hand-edited film.yaml, or ``default``."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else default


def frames_on_disk(folder: Path, scene: int) -> list[int]:
    """The frame numbers of a scene whose files are in its folder, in order."""
    try:
        names = os.listdir(os.path.join(folder, scene_dir_name(scene)))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(FRAME_PREFIX) and name.endswith(FRAME_SUFFIX):
            number = name[len(FRAME_PREFIX):-len(FRAME_SUFFIX)]
            if number.isdigit():
                found.append(int(number))
    return sorted(found)


class Films:
    """Every film folder directly under ``out``, read on demand and kept until its files change."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out).resolve()
        self.logs: dict[str, RunLog] = {}
        self.cache: dict[str, tuple[tuple, dict[str, Any]]] = {}
        self.specs: dict[str, tuple[Any, tuple[dict[str, Any], str, Any, str]]] = {}

    # --- which films ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        try:
            entries = sorted(os.scandir(self.out), key=lambda e: e.name)
        except OSError:
            return []
        return [e.name for e in entries if not e.name.startswith(".") and self._is_film(e.name)]

    def _is_film(self, name: str) -> bool:
        folder = self.out / name
        if not folder.is_dir() or folder.resolve().parent != self.out:
            return False  # a link to a folder elsewhere is not one of OUT's films
        return (folder / SPEC_NAME).is_file() or (folder / MANIFEST_NAME).is_file()

    def folder(self, name: str) -> Path:
        """The folder of film ``name``, or NoSuchFilm (a name is one path component, never ``..``)."""
        if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name \
                or not self._is_film(name):
            raise NoSuchFilm(f"no film named {name!r} in {self.out}")
        return self.out / name

    # --- what changed ---------------------------------------------------------------------------

    def signature(self, name: str, watch: Optional[list[int]] = None) -> tuple:
        """A few stats that change whenever what the film's record shows changes: its files, and
        the folders of the scenes that may get frames (``watch``; default: those of the last read)."""
        folder = self.out / name
        parts: list[Any] = [_stat(folder / n) for n in (SPEC_NAME, MANIFEST_NAME, EVENTS_NAME, *FILES.values())]
        if watch is None:
            cached = self.cache.get(name)
            watch = cached[1]["watch"] if cached else []
        parts.extend(_stat(os.path.join(folder, scene_dir_name(scene))) for scene in watch)
        return tuple(parts)

    # --- the records ----------------------------------------------------------------------------

    def summaries(self) -> list[dict[str, Any]]:
        """Every film's summary, the one changed last first."""
        films = []
        for name in self.names():
            try:
                films.append(self.summary(name))
            except NoSuchFilm:  # removed while we looked
                continue
        return sorted(films, key=lambda f: f["changed"] or 0, reverse=True)

    def summary(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.film(name).items() if k not in ("scenes", "spec", "spec_text", "story",
                                                                       "candidates",
                                                                       "timeline", "workers", "bad_nodes",
                                                                       "watch", "errors")}

    def film(self, name: str) -> dict[str, Any]:
        """Film ``name``'s record: the spec, every scene's state and frames, the runs, the files."""
        folder = self.folder(name)
        signature = self.signature(name)
        cached = self.cache.get(name)
        if cached is None or cached[0] != signature:
            # Signed before reading: a file that changes while it is read is read again next time.
            # (A frame written between the read and the folder's stat is in the next frames event.)
            before = self.signature(name, watch=[])
            record = self._read(name, folder)
            self.cache[name] = (before + self.signature(name, watch=record["watch"])[len(before):], record)
        return self._live(name, self.cache[name][1])

    def _spec(self, name: str, folder: Path) -> tuple[dict[str, Any], str, Any, str]:
        """film.yaml as (spec, its text, the timeline, an error line), parsed again only when it changed
        (the manifest changes every two seconds while a film renders; the spec seldom)."""
        path = folder / SPEC_NAME
        st = _stat(path)
        kept = self.specs.get(name)
        if kept is not None and kept[0] == st:
            return kept[1]
        spec: dict[str, Any] = {}
        text, error = "", ""
        try:
            text = path.read_text(encoding="utf-8")
            loaded = yaml.load(text, Loader=SafeLoader)
            spec = loaded if isinstance(loaded, dict) else {}
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            error = f"{SPEC_NAME}: cannot be read ({type(exc).__name__})"
        timeline = spec.pop("timeline", None)
        self.specs[name] = (st, (spec, text, timeline, error))
        return spec, text, timeline, error

    def _log(self, name: str, folder: Path) -> RunLog:
        log = self.logs.get(name)
        path = folder / EVENTS_NAME
        try:
            st = os.stat(path)
        except OSError:
            self.logs[name] = log = RunLog()
            return log
        if log is None or log.inode != st.st_ino or st.st_size < log.offset:  # new, or replaced
            log = self.logs[name] = RunLog(inode=st.st_ino)
        if st.st_size > log.offset:
            events, log.offset = read_events(path, log.offset)
            for event in events:
                log.feed(event)
        return log

    def _read(self, name: str, folder: Path) -> dict[str, Any]:
        errors: list[str] = []
        spec, spec_text, timeline, error = self._spec(name, folder)
        if error:
            errors.append(error)
        manifest: Optional[Manifest] = None
        try:
            manifest = Manifest.from_json((folder / MANIFEST_NAME).read_text(encoding="utf-8"), MANIFEST_NAME)
        except FileNotFoundError:
            pass
        except (OSError, UnicodeDecodeError, InputError) as exc:
            errors.append(str(exc) if isinstance(exc, InputError) else f"{MANIFEST_NAME}: cannot be read")
        log = self._log(name, folder)
        run = log.runs[-1] if log.runs else None
        in_run = run is not None and run.ended is None
        video = spec.get("video") if isinstance(spec.get("video"), dict) else {}
        fps = _number(video.get("fps"), 1)
        specs = [s for s in spec.get("scenes") or [] if isinstance(s, dict)]
        records = manifest.scenes if manifest else []
        count = max(len(specs), len(records))
        expected = [records[i].frames_expected if i < len(records) else
                    max(1, round(_number(specs[i].get("duration"), 0) * fps)) for i in range(count)]
        per_frame = sum(expected) <= FRAME_CELLS_MAX
        scenes, watch = [], []
        for i in range(count):
            text = specs[i] if i < len(specs) else {}
            rec = records[i] if i < len(records) else None
            state = rec.state if rec else "pending"
            node = log.where(log.running[i]) if in_run and i in log.running else None
            if in_run and i in log.running:
                state = "running"
            elif state == "running" and log.runs and not in_run:
                state = "pending"  # its run ended without finishing it (stopped, or its driver died)
            if state == "done" and rec is not None:
                written = sorted(int(k) for k in rec.hashes)
            else:
                written = sorted(set(frames_on_disk(folder, i)) | ({int(k) for k in rec.hashes} if rec else set()))
                if state == "running" or (rec is not None and rec.state == "running"):
                    watch.append(i)  # its folder gets frames (a scene that starts is an event, or in the manifest)
            newest = written[-1] if written else None
            scenes.append({
                "index": i, "narration": str(text.get("narration", "")), "prompt": str(text.get("prompt", "")),
                "duration": text.get("duration"), "state": state,
                "node": node or (rec.worker if rec else None),
                "frames_written": len(written), "frames_expected": expected[i],
                "attempts": rec.attempts if rec else 0, "failures": list(rec.failures) if rec else [],
                "retried": bool(rec and rec.failures), "seconds": rec.seconds if rec else None,
                "newest_frame": newest,
                "newest": self.url(name, f"{scene_dir_name(i)}/{FRAME_NAME.format(newest)}")
                if newest is not None else None,
                **({"written": written} if per_frame else {}),
            })
        story = spec.get("story") if isinstance(spec.get("story"), dict) else {}
        changed = max((st[0] for st in self.signature(name, watch=[]) if st), default=None)
        return {
            "name": name, "title": str(spec.get("title") or (manifest.film if manifest else name)),
            "url": f"/films/{name}", "api": f"/api/films/{name}",
            "has_manifest": manifest is not None, "per_frame": per_frame, "fps": fps,
            "frames_done": sum(s["frames_written"] for s in scenes), "frames_total": sum(expected),
            "scenes_done": sum(s["state"] == "done" for s in scenes),
            "scenes_running": sum(s["state"] == "running" for s in scenes),
            "scenes_failed": sum(s["state"] == "failed" for s in scenes), "scenes_total": count,
            "changed": changed / 1e9 if changed else None,
            "created": manifest.created if manifest else None,
            "manifest_updated": manifest.updated if manifest else None,
            "files": self._files(name, folder),
            "spec": spec, "spec_text": spec_text, "timeline": timeline,
            "story": {"phrase": str(story.get("phrase", "")), "text": str(story.get("text", "")),
                      "candidate": story.get("candidate")},
            "candidates": self._candidates(folder),
            "scenes": scenes, "watch": watch,
            "workers": [{"node": node, "where": log.where(node), "state": event.get("state")}
                        for node, event in log.workers.items()] if in_run else [],
            "bad_nodes": [{"node": b.node, "host": b.host, "reason": b.reason} for b in manifest.bad_nodes]
            if manifest else [],
            "errors": errors,
        }

    def _live(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record with what moves with the clock: the state (is the run alive), elapsed, ETA."""
        log = self.logs.get(name) or RunLog()
        now = time.time()
        run = log.runs[-1] if log.runs else None
        alive = False
        if run is not None and run.ended is None:
            changed = record["changed"] or 0
            alive = _alive(run) or (run.host != socket.gethostname() and now - changed < REMOTE_RUN_SILENCE_S)
        if alive:
            state = "rendering"
        elif record["scenes_failed"] or (run is not None and run.state == "failed"):
            state = "failed"
        elif record["files"].get("video") and record["scenes_total"] and \
                record["scenes_done"] == record["scenes_total"]:
            state = "done"
        elif not record["has_manifest"]:
            state = "planned"
        elif run is None and record["manifest_updated"] and now - record["manifest_updated"] < MANIFEST_FRESH_S:
            state = "rendering"
        else:
            state = "stopped"
        if log.runs:
            elapsed = sum((r.ended or (now if alive and r is run else (log.last_time or r.started))) - r.started
                          for r in log.runs)
        elif record["created"] and record["manifest_updated"]:
            elapsed = record["manifest_updated"] - record["created"]
        else:
            elapsed = None
        eta = None
        frames = log.last_frames
        if alive and frames and isinstance(frames.get("eta_s"), (int, float)):
            eta = max(0.0, frames["eta_s"] - (now - frames.get("time", now)))
        out = dict(record, state=state, elapsed_s=round(elapsed, 1) if elapsed is not None else None,
                   eta_s=round(eta, 1) if eta is not None else None,
                   fps_rendered=frames.get("fps") if alive and frames else None,
                   run_error=run.error if run is not None and not alive and run.state == "failed" else "")
        if not alive:
            out["workers"] = []
            if state != "rendering" and record["scenes_running"]:  # its run ended without finishing them
                out["scenes"] = [dict(s, state="pending") if s["state"] == "running" else s for s in out["scenes"]]
                out["scenes_running"] = 0
        return out

    # --- files ----------------------------------------------------------------------------------

    def url(self, name: str, relative: str) -> str:
        return f"/files/{name}/{relative}"

    def _files(self, name: str, folder: Path) -> dict[str, Optional[str]]:
        found: dict[str, Optional[str]] = {}
        for key, file in FILES.items():
            st = _stat(folder / file)
            found[key] = f"{self.url(name, file)}?v={st[0]}" if st else None
        return found

    def _candidates(self, folder: Path) -> list[dict[str, Any]]:
        where = folder / CANDIDATES_DIR
        if not where.is_dir():
            return []
        out = []
        for path in sorted(where.glob("candidate_*.yaml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if isinstance(data, dict):
                out.append({"number": data.get("candidate"), "text": str(data.get("text", ""))})
        return sorted(out, key=lambda c: c["number"] if isinstance(c["number"], int) else 0)
