"""farm.driver.store (no Ray): a changed film refused or partly forgotten, renderer states kept
with their frames, frames a killed driver wrote recorded, a folder with no film refused by --resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from farm.driver.store import FilmStore
from farm.errors import InputError, OutputConflictError
from farm.spec import spec_from_dict

from conftest import run_farm, tiny_film


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
