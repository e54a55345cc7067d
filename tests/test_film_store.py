"""The film store behind a pyarrow.fs URI (file:// here; s3:// and gs:// go through the same calls)."""

from __future__ import annotations

import json
import shutil

import yaml

from farm.film import render_film
from farm.spec import spec_from_dict

from conftest import decode_video, run_farm, tiny_film


def test_a_film_rendered_into_a_store_uri_lands_there_and_resumes_from_there(ray_cluster, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    store = tmp_path / "shared" / "films"
    uri = f"file://{store}"
    spec = spec_from_dict(tiny_film("Stored Film", scenes=2, duration=1, fps=2), overrides=["render.reseed=independent"])
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
