"""farm.changes: which spec fields change pixels, every changed field named, what a change touches."""

from __future__ import annotations

import pytest

from farm.changes import changes_pixels, differences, restitchable, touched_scenes
from farm.driver.store import FilmStore
from farm.spec import spec_from_dict
from farm.writing.plan import plan_film

from conftest import tiny_film


def resolved(**changes):
    data = tiny_film("Store Film", scenes=3)
    data["scenes"][1]["prompts"] = [{"text": "a red kite", "weight": 0.5}]
    return plan_film(spec_from_dict(data, overrides=[f"{k}={v}" for k, v in changes.items()]))


@pytest.mark.parametrize("key, pixels, restitch", [
    ("seed", True, False),
    ("render.cutouts", True, False),
    ("render.reseed", True, False),
    ("models.biggan", True, False),
    ("video.fps", True, False),
    ("video.size", True, False),
    ("video.crf", False, True),
    ("video.transition", False, True),
    ("video.subtitles", False, True),
    ("video.narration", False, True),
    ("video.ffmpeg", False, True),
    ("render.workers", False, False),
    ("render.retries", False, False),
    ("dispatch.in_flight", False, False),
    ("llm.model", False, False),
    ("models.cache_dir", False, False),
])
def test_which_fields_change_pixels_and_which_farm_stitch_may_change(key, pixels, restitch):
    assert changes_pixels(key) is pixels
    assert restitchable(key) is restitch


def test_every_changed_field_is_listed_and_execution_settings_are_not():
    a = resolved().to_dict()
    b = resolved(**{"render.cutouts": 3, "scenes.2.prompt": "a red kite", "video.fps": 5,
                    "render.workers": 4, "dispatch.state_every": 2, "video.crf": 30}).to_dict()
    assert sorted(differences(a, b)) == ["render.cutouts", "scenes[2].prompt", "video.fps"]


def test_touched_scenes_follow_the_reseed_mode():
    base = resolved().to_dict()
    prompt = resolved(**{"scenes.1.prompt": "a red kite"}).to_dict()
    assert touched_scenes(base, prompt) == [1, 2]  # keyframe: scene 3 starts from scene 2's anchor
    chain = resolved(**{"render.reseed": "chain"}).to_dict()
    chain_prompt = resolved(**{"render.reseed": "chain", "scenes.0.prompt": "a red kite"}).to_dict()
    assert touched_scenes(chain, chain_prompt) == [0, 1, 2]
    independent = resolved(**{"render.reseed": "independent"}).to_dict()
    independent_prompt = resolved(**{"render.reseed": "independent", "scenes.2.prompt": "x"}).to_dict()
    assert touched_scenes(independent, independent_prompt) == [2]
    assert touched_scenes(base, resolved(**{"render.cutouts": 3}).to_dict()) == [0, 1, 2]
    assert touched_scenes(base, resolved(**{"video.crf": 30}).to_dict()) == []  # segments only
    assert touched_scenes(base, resolved(**{"scenes.0.duration": 2.0}).to_dict()) == [0, 1]  # more frames


def test_a_scenes_weighted_prompts_touch_it():
    independent = resolved(**{"render.reseed": "independent"}).to_dict()
    reweighted = resolved(**{"render.reseed": "independent", "scenes.1.prompts.0.weight": -1.0}).to_dict()
    retexted = resolved(**{"render.reseed": "independent", "scenes.1.prompts.0.text": "a green kite"}).to_dict()
    assert touched_scenes(independent, reweighted) == [1]
    assert touched_scenes(independent, retexted) == [1]
    assert touched_scenes(resolved().to_dict(), resolved(**{"scenes.1.prompts.0.weight": 2.0}).to_dict()) == [1, 2]


def test_rerender_changed_renders_again_a_scene_whose_weighted_prompt_changed(tmp_path):
    """The old frames of a scene whose extra prompt was edited go; film.yaml then says the new prompt."""
    spec = resolved(**{"render.reseed": "independent"})
    store = FilmStore(tmp_path, spec.slug)
    store.open(spec)
    for scene in range(3):
        store.write_frame(scene, 0, f"frame of {scene}".encode(), node="n1")
    store.save_manifest()
    edited = resolved(**{"render.reseed": "independent", "scenes.1.prompts.0.weight": -1.0})
    again = FilmStore(tmp_path, edited.slug)
    again.open(edited, rerender_changed=True)
    assert again.changed == ["scenes[1].prompts[0].weight"] and again.touched == [1]
    assert again.has_frame(0, 0) and not again.has_frame(1, 0) and again.has_frame(2, 0)
    assert again.scene(1).frames_written == 0 and again.scene(0).frames_written == 1
    assert "weight: -1.0" in (again.path / "film.yaml").read_text()
