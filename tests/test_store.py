"""farm.driver.store: a changed film refused or partly forgotten, renderer states kept with their
frames, frames a killed driver wrote recorded, a folder with no film refused by --resume; the film
store behind a pyarrow.fs URI (file://, and s3:// against moto's S3 server on loopback: render, resume,
stitch and the store's lock)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from farm.driver.store import FilmStore
from farm.errors import InputError, OutputConflictError
from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, run_farm, tiny_film


def resolved(**changes):
    data = tiny_film("Store Film", scenes=3)
    spec = spec_from_dict(data, overrides=[f"{k}={v}" for k, v in changes.items()])
    from farm.writing.plan import plan_film

    return plan_film(spec)


def opened(root, spec, **how):
    store = FilmStore(root, spec.slug)
    store.open(spec, **how)
    return store


def test_a_changed_film_is_refused_naming_every_field_and_left_untouched(tmp_path):
    store = opened(tmp_path, resolved())
    store.write_frame(0, 0, b"png")
    store.save_manifest()
    before = {p: p.read_bytes() for p in store.path.rglob("*") if p.is_file()}
    with pytest.raises(OutputConflictError, match=r"differs at scenes\[1\]\.prompt, render\.cutouts\)"):
        opened(tmp_path, resolved(**{"render.cutouts": 3, "scenes.1.prompt": "a kite"}))
    assert {p: p.read_bytes() for p in store.path.rglob("*") if p.is_file()} == before


def test_rerender_changed_forgets_only_the_touched_scenes(tmp_path):
    spec = resolved(**{"render.reseed": "independent"})
    store = opened(tmp_path, spec)
    for scene in range(3):
        store.write_frame(scene, 0, f"frame of {scene}".encode(), node="n1")
    store.write_state(2, 0, {"z": np.zeros(3)})
    store.save_manifest()
    changed = opened(tmp_path, resolved(**{"render.reseed": "independent", "scenes.2.prompt": "a kite"}),
                     rerender_changed=True)
    assert changed.changed == ["scenes[2].prompt"] and changed.touched == [2]
    assert changed.has_frame(0, 0) and changed.has_frame(1, 0) and not changed.has_frame(2, 0)
    assert changed.read_state(2) is None
    manifest = json.loads(changed.manifest_path.read_text())
    assert manifest["changed"] == ["scenes[2].prompt"]
    assert [len(s["hashes"]) for s in manifest["scenes"]] == [1, 1, 0]


def test_states_are_kept_only_with_their_frames(tmp_path):
    store = opened(tmp_path, resolved())
    state = {"z": np.arange(6.0).reshape(2, 3), "rng": np.array([1, 2, 3], np.uint8)}
    store.write_frame(0, 0, b"a", node="n1")
    store.write_frame(0, 1, b"b", node="n1")
    store.write_state(0, 1, state)
    frame, back = store.read_state(0)
    assert frame == 1 and set(back) == {"z", "rng"} and np.array_equal(back["z"], state["z"])
    assert "scene 1 at frame 2/4" in store.summary()
    store.frame_path(0, 0).unlink()  # a state whose frames are not all on disk is not used
    assert store.read_state(0) is None
    assert [(r.first, r.last, r.node) for r in store.scene(0).ranges] == [(0, 1, "n1")]


def test_frames_a_killed_driver_wrote_after_its_last_manifest_are_recorded(tmp_path):
    store = opened(tmp_path, resolved())
    store.frame_path(1, 0).parent.mkdir(parents=True, exist_ok=True)
    store.frame_path(1, 0).write_bytes(b"late frame")
    again = opened(tmp_path, resolved(), resume=True)
    assert again.scene(1).frames_written == 1 and again.scene(1).ranges[0].first == 0


def test_resume_refuses_a_folder_with_no_film(tmp_path):
    spec = tmp_path / "film.yaml"
    spec.write_text(yaml.safe_dump(tiny_film("Never Rendered")))
    result = run_farm("render", str(spec), "--out", str(tmp_path / "out"), "--resume")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("farm: error: ") and "holds no film to resume" in result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        opened(tmp_path / "out", resolved(), resume=True)


def test_a_film_rendered_into_a_store_uri_lands_there_and_resumes_from_there(ray_cluster, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    store = tmp_path / "shared" / "films"
    uri = f"file://{store}"
    spec = spec_from_dict(tiny_film("Stored Film", scenes=2, duration=1, fps=2),
                          overrides=["render.reseed=independent"])
    result = render_film(spec, out=uri)
    film = store / "stored-film"
    assert result.location == f"{uri}/stored-film"
    assert not str(result.path).startswith(str(store))  # the driver worked in its local copy
    names = {p.relative_to(film).as_posix() for p in film.rglob("*") if p.is_file()}
    assert {"film.yaml", "manifest.json", "film.mp4", "film.srt", "scenes/000/frame_00000.png",
            "scenes/001/frame_00001.png"} <= names
    assert any(n.startswith("segments/") for n in names)  # what ffmpeg made went to the store too
    assert not [n for n in names if n.endswith(".tmp") or n.endswith("state.npz")]
    assert len(decode_video(film / "film.mp4")) == 4
    manifest = json.loads((film / "manifest.json").read_text())
    assert [s["state"] for s in manifest["scenes"]] == ["done", "done"]
    frames = {p: p.stat().st_mtime_ns for p in film.glob("scenes/*/frame_*.png")}
    # A driver elsewhere (no local copy) continues from what the store holds: nothing rendered again.
    shutil.rmtree(cache)
    again = render_film(spec, out=uri)
    assert again.scenes_rendered == 0
    assert {p: p.stat().st_mtime_ns for p in frames} == frames


def test_a_store_uri_that_cannot_be_used_is_one_line(tmp_path):
    spec = tmp_path / "film.yaml"
    spec.write_text(yaml.safe_dump(tiny_film("Nowhere")))
    result = run_farm("render", str(spec), "--out", "nosuch://bucket/films")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("farm: error: --out: nosuch://bucket/films cannot be used as a film store")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the store's folder should be")
    result = run_farm("render", str(spec), "--out", f"file://{blocked}/films")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"farm: error: --out: file://{blocked}/films: cannot")
    assert blocked.read_text() == "a file where the store's folder should be"


def test_a_written_file_is_on_disk_before_its_rename_and_has_the_umasks_mode(tmp_path, monkeypatch):
    import os
    import stat

    from farm.folder.layout import atomic_write

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", Path(b).name)), real_replace(a, b))[1])
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "manifest.json", "{}")
        os.umask(0o077)
        atomic_write(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    # The file's bytes, then its name, then the folder that holds the name.
    assert calls[:3] == [("fsync", False), ("replace", "manifest.json"), ("fsync", True)]
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o644  # mkstemp alone gave 0600
    assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "private.json"]


# --- an s3:// film store: moto's S3 server on loopback (conftest.s3_store), pyarrow's S3 client -------

def store_objects(uri: str, under: str = "") -> dict[str, bytes]:
    """Every object of the film store ``uri`` (under ``under``), read back through pyarrow's S3 client."""
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(uri)
    top = f"{base}/{under}".rstrip("/")
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(top, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as source:
                found[info.path[len(top) + 1:]] = source.read()
    return found


def store_times(uri: str, under: str) -> dict[str, object]:
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(f"{base}/{under}", recursive=True))
    return {i.path: i.mtime for i in infos if i.type == pafs.FileType.File}


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Stop(Exception):
    """The driver stopped in the middle of a film."""


def test_an_s3_film_lands_in_the_store_a_stopped_one_resumes_from_there_and_farm_stitch_works_on_it(
        ray_cluster, s3_store, tmp_path, monkeypatch):
    import os
    import socket
    import time

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    spec = spec_from_dict(tiny_film("Stored Film", scenes=2, duration=1, fps=2),
                          overrides=["render.reseed=independent"])
    plain = s3_store.partition("?")[0]  # what farm says: the URI without its endpoint query

    # 1. A run stopped after its first scene: what it wrote is in the store, byte for byte.
    def stop_after_a_scene(event):
        if event["event"] == "scene" and event.get("state") == "done":
            raise Stop("stopped")

    with pytest.raises(Stop):
        render_film(spec, out=s3_store, events=stop_after_a_scene)
    stored = store_objects(s3_store, "stored-film")
    assert {"film.yaml", "manifest.json", "scenes/000/frame_00000.png", "scenes/000/frame_00001.png"} <= set(stored)
    assert "scenes/001/frame_00001.png" not in stored and "film.mp4" not in stored
    [local] = [p for p in cache.rglob("stored-film") if p.is_dir()]
    for name in ("scenes/000/frame_00000.png", "scenes/000/frame_00001.png", "manifest.json", "film.yaml"):
        assert stored[name] == (local / name).read_bytes(), name
    assert ".stored-film.lock.json" not in store_objects(s3_store)  # a run that ends lets go of its lock

    # 2. A driver SIGKILLed on another machine leaves its lock; 11 minutes without a heartbeat, it is
    #    stale. A driver here, with no local copy, takes it over, saying so, and renders only scene 2.
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(s3_store)
    dead = {"command": "farm render", "pid": 999999, "host": "gone-host", "since": "2026-12-04 04:00:00",
            "token": "dead", "heartbeat": time.time() - 660}
    with fs.open_output_stream(f"{base}/.stored-film.lock.json") as out:
        out.write(json.dumps(dead).encode())
    shutil.rmtree(cache)
    first = store_times(s3_store, "stored-film/scenes/000")
    said, others = [], []

    def meanwhile(event):  # while this process holds the film, a second farm render stops, touching nothing
        if event["event"] == "frames" and not others:
            before = store_objects(s3_store)
            os.environ["XDG_CACHE_HOME"] = str(tmp_path / "elsewhere")  # another machine: a cache of its own
            try:
                others.append(run_farm("render", str(tmp_path / "film.yaml"), "--out", s3_store))
            finally:
                os.environ["XDG_CACHE_HOME"] = str(cache)
            assert store_objects(s3_store) == before

    (tmp_path / "film.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    again = render_film(spec, out=s3_store, resume=True, progress=said.append, events=meanwhile)
    assert any(f"{plain}/stored-film: the lock of farm render (pid 999999 on gone-host" in s and "is stale" in s
               and "taking it over" in s for s in said), said
    assert again.scenes_rendered == 1 and again.location == f"{plain}/stored-film"
    assert store_times(s3_store, "stored-film/scenes/000") == first  # scene 1 was not written again
    [other] = others
    lines = other.stderr.strip().splitlines()
    assert other.returncode == 2 and len(lines) == 1, other.stderr
    assert lines[0].startswith(f"farm: error: {plain}/stored-film: farm render (pid {os.getpid()} on "
                               f"{socket.gethostname()}, since "), lines[0]
    assert "is using this film" in lines[0]
    stored = store_objects(s3_store, "stored-film")
    assert stored == local_files(again.path)  # every file of the film, the video too, in the store
    assert len(decode_video(again.video)) == 4
    assert [s["state"] for s in json.loads(stored["manifest.json"])["scenes"]] == ["done", "done"]
    assert ".stored-film.lock.json" not in store_objects(s3_store)

    # 3. farm stitch of the film in the store: stitched in a local copy, written back.
    shutil.rmtree(cache)
    done = run_farm("stitch", f"{plain}/stored-film?{s3_store.partition('?')[2]}", "--set", "video.crf=40")
    assert done.returncode == 0, done.stderr
    assert f"film stored: {plain}/stored-film/film.mp4" in done.stderr
    restitched = store_objects(s3_store, "stored-film")
    assert yaml.safe_load(restitched["film.yaml"])["video"]["crf"] == 40
    assert restitched["film.mp4"] != stored["film.mp4"]
    assert restitched["film.mp4"] == Path(done.stdout.strip()).read_bytes()
    assert {k: v for k, v in restitched.items() if k.startswith("scenes/")} == \
        {k: v for k, v in stored.items() if k.startswith("scenes/")}
    assert ".stored-film.lock.json" not in store_objects(s3_store)


HOLDER = """
import sys, time
import farm.folder.lock as lock
from farm.folder.remote import Remote
lock.HEARTBEAT_SECONDS = 0.3
with lock.store_lock(Remote(sys.argv[1]), "held-film", "farm render", say=print):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it, or kills this process
print("let go", flush=True)
"""


def test_an_s3_films_lock_is_one_run_at_a_time_across_processes_and_a_killed_ones_stays_until_stale(
        s3_store, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from farm.folder import lock
    from farm.folder.remote import Remote

    def holder():
        return subprocess.Popen([sys.executable, "-c", HOLDER, s3_store], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # Two runs take the film's lock at once: one holds it, the other stops in one line naming it.
    first, second = holder(), holder()
    outcomes = {}
    for process in (first, second):
        line = process.stdout.readline()
        outcomes[process] = line.strip() if line else process.communicate()[1].strip()
    [winner] = [p for p, said in outcomes.items() if said == "held"]
    [loser] = [p for p in outcomes if p is not winner]
    assert loser.wait(timeout=30) == 1
    message = outcomes[loser].splitlines()[-1]
    assert f"/held-film: farm render (pid {winner.pid} on " in message and "is using this film" in message, message
    remote = Remote(s3_store)
    name = lock.store_lock_name("held-film")
    held = json.loads(remote.read(name))
    assert held["pid"] == winner.pid and held["command"] == "farm render" and held["host"]
    time.sleep(1.0)  # its heartbeat goes on while it runs
    assert json.loads(remote.read(name))["heartbeat"] > held["heartbeat"]
    # Killed, it leaves its lock: fresh, it still stops the next run (which writes nothing) ...
    winner.send_signal(signal.SIGKILL)
    winner.wait(timeout=30)
    before = store_objects(s3_store)
    with pytest.raises(InputError, match=rf"farm render \(pid {winner.pid} on .*is using this film"):
        with lock.store_lock(remote, "held-film", "farm stitch"):
            pass
    assert store_objects(s3_store) == before
    # ... until its heartbeat is older than the stale rule's 10 minutes: then it is taken over.
    stale = {**json.loads(remote.read(name)), "heartbeat": time.time() - lock.STALE_SECONDS - 5}
    remote.put(name, json.dumps(stale).encode())
    said = []
    with lock.store_lock(remote, "held-film", "farm stitch", say=said.append):
        assert json.loads(remote.read(name))["command"] == "farm stitch"
    assert len(said) == 1 and f"farm render (pid {winner.pid} on " in said[0] and "taking it over" in said[0]
    assert remote.read(name) is None  # let go when its run ends
    # A run that ends lets go: the next one takes the film at once.
    third = holder()
    assert third.stdout.readline().strip() == "held"
    assert third.communicate("", timeout=30)[0].strip() == "let go" and third.returncode == 0
    assert remote.read(name) is None


def test_an_s3_store_that_cannot_be_used_is_one_line_and_left_as_it_was(s3_store, tmp_path):
    spec = tmp_path / "film.yaml"
    spec.write_text(yaml.safe_dump(tiny_film("Nowhere", scenes=2, duration=1, fps=2)))
    query = s3_store.partition("?")[2]
    for uri, words in [(f"s3://no-such-bucket/films?{query}", "farm: error: --out: s3://no-such-bucket/films: cannot"),
                       (f"s3://bucket/films?{query}&no_such_option=1", "cannot be used as a film store")]:
        result = run_farm("render", str(spec), "--out", uri)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(words) or words in result.stderr, result.stderr
    result = run_farm("stitch", s3_store)  # a store, not a film in it
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "not a rendered film (nothing there)" in result.stderr
    assert store_objects(s3_store) == {}


def test_files_still_being_made_are_not_published(tmp_path):
    """ffmpeg's output before its rename (temp_beside: ``.film.PID-HEX.tmp.mp4``) and atomic_write's
    (``.manifest.json.XYZ.tmp``) stay in the local copy; the finished files go to the store."""
    from farm.folder.layout import atomic_write, temp_beside
    from farm.folder.remote import Remote

    root, store = tmp_path / "cache", tmp_path / "store"
    folder = root / "a-film"
    (folder / "segments").mkdir(parents=True)
    store.mkdir()
    atomic_write(folder / "film.mp4", b"film")
    temp_beside(folder / "film.mp4").write_bytes(b"half a film")
    temp_beside(folder / "segments" / "body-000.mp4").write_bytes(b"half a piece")
    (folder / ".manifest.json.k2j3.tmp").write_bytes(b"{")
    (folder / "segments" / "body-000-ab12.mp4").write_bytes(b"piece")
    sent = Remote(store.as_uri()).publish_since(root, folder, since=0.0)
    assert sorted(sent) == ["a-film/film.mp4", "a-film/segments/body-000-ab12.mp4"]
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()) == sorted(sent)
