"""farm.driver.store: a changed film refused or partly forgotten, renderer states kept with their
frames, frames a killed driver wrote recorded, a folder with no film refused by --resume; the film
store behind a pyarrow.fs URI (file:// here; s3:// and gs:// go through the same calls)."""

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
