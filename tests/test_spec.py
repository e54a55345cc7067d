"""The film spec: defaults once, presets, overrides, and errors that name the field and the value."""

from __future__ import annotations

import pytest
import yaml

from farm.errors import InputError, SpecError
from farm.spec import RenderSpec, load_spec, spec_from_dict

from conftest import EXAMPLE, tiny_film


def test_example_film_loads_with_every_preset():
    for preset, size in [("tiny", 128), ("draft", 256), ("final", 512)]:
        spec = load_spec(EXAMPLE, preset=preset)
        assert spec.render.preset == preset
        assert spec.video.size == size
        assert len(spec.scenes) >= 6
        assert sum(s.seconds for s in spec.scenes) >= 30
        assert spec.video.fps >= 12


def test_example_tiny_uses_random_weight_models_on_cpu():
    spec = load_spec(EXAMPLE, preset="tiny")
    assert (spec.models.clip, spec.models.biggan, spec.render.device) == ("tiny", "tiny", "cpu")
    assert spec.video.size >= 128


def test_precedence_defaults_preset_file_overrides():
    data = tiny_film()
    data["render"]["steps_per_frame"] = 3  # the file beats the preset's 1
    spec = spec_from_dict(data, overrides=["render.learning_rate=0.2", "scenes.1.duration=2.5", "title=Other"])
    assert spec.render.steps_per_frame == 3
    assert spec.render.learning_rate == 0.2
    assert spec.render.ema_decay == yaml.safe_load((spec_preset_path("tiny")).read_text())["render"]["ema_decay"]
    assert spec.render.retries == RenderSpec.retries  # untouched: the dataclass default
    assert spec.scenes[1].duration == 2.5
    assert spec.title == "Other"


def spec_preset_path(name):
    from farm.spec import PRESETS_DIR

    return PRESETS_DIR / f"{name}.yaml"


def test_cli_preset_replaces_the_files_preset():
    data = tiny_film()
    spec = spec_from_dict(data, preset="draft")
    assert spec.render.preset == "draft" and spec.models.biggan == "biggan-deep-256"


def test_scene_duration_defaults_to_reading_time():
    spec = spec_from_dict({"title": "t", "scenes": [
        {"narration": " ".join(["word"] * 20)}, {"narration": "short"}]})
    assert spec.scenes[0].seconds == 8.0  # 20 words at 2.5 words per second
    assert spec.scenes[1].seconds == 2.0  # never shorter than the minimum
    assert spec.frames_per_scene() == [96, 24]


def test_prompt_defaults_to_narration():
    spec = spec_from_dict({"title": "t", "scenes": [{"narration": "a yeti"}]})
    assert spec.scenes[0].visual_prompt == "a yeti"


def test_resolved_spec_round_trips():
    spec = spec_from_dict(tiny_film())
    again = spec_from_dict(yaml.safe_load(spec.to_yaml()))
    assert again == spec


@pytest.mark.parametrize("change, field, words", [
    ({"scenes": [{"narration": "a", "duration": 0}]}, "scenes[0].duration", "positive"),
    ({"scenes": [{"narration": "a", "duration": -3}]}, "scenes[0].duration", "-3"),
    ({"video": {"fps": 0}}, "video.fps", "0"),
    ({"video": {"fps": -12}}, "video.fps", "-12"),
    ({"video": {"size": 100}}, "video.size", "100"),
    ({"video": {"transition": "wipe"}}, "video.transition", "wipe"),
    ({"render": {"cutouts": 0}}, "render.cutouts", "0"),
    ({"render": {"learning_rate": "fast"}}, "render.learning_rate", "fast"),
    ({"render": {"reseed": "sometimes"}}, "render.reseed", "sometimes"),
    ({"render": {"preset": "huge"}}, "render.preset", "huge"),
    ({"render": {"ema_decay": 1.0}}, "render.ema_decay", "1.0"),
    ({"render": {"steps_per_frame": 1.5}}, "render.steps_per_frame", "1.5"),
    ({"scenes": []}, "scenes", "no scenes"),
    ({"scenes": [{"prompt": "a yeti"}]}, "scenes[0].narration", "required"),
    ({"scenes": "a yeti"}, "scenes", "list"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"video": {"fsp": 12}}, "video.fsp", "unknown key"),
    ({"scenes": [{"narration": "a", "lenght": 3}]}, "scenes[0].lenght", "unknown key"),
    ({"seed": -1}, "seed", "-1"),
    ({"title": "???"}, "title", "???"),
])
def test_bad_values_name_the_field_and_the_value(change, field, words):
    data = tiny_film()
    data.update(change)
    with pytest.raises(SpecError) as info:
        spec_from_dict(data)
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert words in message
    assert "\n" not in message


def test_pretrained_generator_size_must_match():
    with pytest.raises(SpecError, match=r"^video\.size: 128 is not a size biggan-deep-256 can make"):
        spec_from_dict(tiny_film(), overrides=["render.preset=draft", "video.size=128"])


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="^--set: expected key=value"):
        spec_from_dict(tiny_film(), overrides=["render.cutouts"])
    with pytest.raises(SpecError, match=r"^scenes\.9: no such item"):
        spec_from_dict(tiny_film(), overrides=["scenes.9.duration=1"])
    with pytest.raises(SpecError, match=r"^scenes: no such list"):
        spec_from_dict({"title": "t", "story": {"text": "A yeti."}}, overrides=["scenes.0.duration=1"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InputError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: x\nscenes: [\n  - narration: a\n")
    with pytest.raises(InputError, match=r"broken\.yaml: line \d+, column \d+: not valid YAML"):
        load_spec(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="a film spec is a mapping"):
        load_spec(listing)


def test_story_text_without_scenes_is_allowed():
    spec = spec_from_dict({"title": "t", "story": {"text": "A yeti sleeps."}})
    assert spec.story.text == "A yeti sleeps." and spec.scenes == [] and spec.frames_per_scene() == []
    # No preset named: RenderSpec's (draft), whose values are in force.
    assert spec.render.preset == RenderSpec.preset == "draft"
    assert (spec.video.size, spec.render.cutouts, spec.models.biggan) == (256, 32, "biggan-deep-256")


@pytest.mark.parametrize("change, field, words", [
    ({"scenes": [{"narration": "a", "duration": 1e9}]}, "scenes[0].duration", "at most 600 seconds"),
    ({"scenes": [{"narration": "a", "duration": 300}] * 100, "video": {"fps": 120}}, "scenes",
     "add up to 3600000 frames"),
    ({"scenes": [{"narration": "a " * 1001}]}, "scenes[0].narration", "at most 2000"),
    ({"story": {"text": "a " * 250_001}, "scenes": []}, "story.text", "at most 500000"),
    ({"render": {"cutouts": 100_000}}, "render.cutouts", "at most 1024"),
    ({"render": {"steps_per_frame": 10**9}}, "render.steps_per_frame", "at most 100000"),
    ({"render": {"warmup_steps": 10**9}}, "render.warmup_steps", "at most 100000"),
    ({"render": {"init_candidates": 10**6}}, "render.init_candidates", "at most 1024"),
    ({"render": {"workers": 10**6}}, "render.workers", "at most 4096"),
    ({"render": {"scenes_per_worker": 65}}, "render.scenes_per_worker", "at most 64"),
    ({"render": {"scenes_per_worker": -1}}, "render.scenes_per_worker", "must not be negative"),
    ({"render": {"scenes_per_worker": 2, "deterministic": True}}, "render.scenes_per_worker",
     "cannot be rendered bit for bit"),
    ({"dispatch": {"in_flight": 10**6}}, "dispatch.in_flight", "at most 1024"),
    ({"dispatch": {"stall_seconds": 10**6}}, "dispatch.stall_seconds", "to 86400 seconds"),
    ({"dispatch": {"stall_seconds": -1}}, "dispatch.stall_seconds", "must be 0 (automatic)"),
])
def test_work_has_limits(change, field, words):
    data = tiny_film()
    data.update(change)
    with pytest.raises(SpecError) as caught:
        spec_from_dict(data)
    assert caught.value.field == field and words in str(caught.value), str(caught.value)


def test_a_spec_file_of_too_many_scenes_stops_before_they_are_built(tmp_path):
    from farm.spec import MAX_SCENES, read_spec_file

    scene = {"narration": "a yeti", "duration": 1.0}
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump({"title": "Many", "story": {"scenes": [1] * (MAX_SCENES + 5)},
                                    "scenes": [scene] * MAX_SCENES}))
    assert len(read_spec_file(path)["scenes"]) == MAX_SCENES  # as many as allowed; a nested list is not counted
    path.write_text(yaml.safe_dump({"title": "Many", "scenes": [scene] * (MAX_SCENES * 10)}))
    with pytest.raises(SpecError, match="scenes: has more than 10000 items"):
        read_spec_file(path)
    # Flow style and aliases are items too.
    path.write_text("title: Many\nscenes: [" + ", ".join(["&s {narration: a}"] + ["*s"] * MAX_SCENES) + "]\n")
    with pytest.raises(SpecError, match="scenes: has more than"):
        read_spec_file(path)


def test_a_preset_is_a_name_of_farm_presets_not_a_path():
    from farm.spec import PRESETS_DIR

    # Each of these paths names a real preset file, the way a path out of farm/presets would.
    for name in ("../presets/tiny", "./tiny", str(PRESETS_DIR / "tiny")):
        assert (PRESETS_DIR / f"{name}.yaml").is_file()
        data = tiny_film()
        data["render"]["preset"] = name
        with pytest.raises(SpecError, match="render.preset: unknown preset"):
            spec_from_dict(data)
        with pytest.raises(SpecError, match="render.preset: unknown preset"):
            spec_from_dict(tiny_film(), preset=name)


def test_the_ffmpeg_binary_comes_from_the_command_line_or_the_environment_never_a_file(tmp_path, monkeypatch):
    from farm.cutting.tools import find_ffmpeg
    from farm.errors import StitchError
    from farm.folder.layout import film_yaml

    data = tiny_film()
    data["video"] = {"ffmpeg": "/bin/sh"}  # a program farm would run
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"^video.ffmpeg: is not taken from a spec file"):
        load_spec(path)
    data["video"] = {}
    path.write_text(yaml.safe_dump(data))
    real = find_ffmpeg()
    spec = load_spec(path, overrides=[f"video.ffmpeg={real}"])  # the command line may
    assert find_ffmpeg(spec.video.ffmpeg) == real
    assert yaml.safe_load(film_yaml(spec))["video"]["ffmpeg"] is None  # and film.yaml does not keep it
    link = tmp_path / "my-ffmpeg"
    link.symlink_to(real)
    monkeypatch.setenv("FARM_FFMPEG", str(link))
    assert find_ffmpeg() == str(link) and find_ffmpeg(real) == real
    monkeypatch.setenv("FARM_FFMPEG", str(tmp_path / "none"))
    with pytest.raises(StitchError, match=r"^\$FARM_FFMPEG: .*none is not an executable ffmpeg"):
        find_ffmpeg()
