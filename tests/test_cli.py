"""The farm command as a user meets it: exit codes, one-line errors, nothing rendered lost."""

from __future__ import annotations

import json

import pytest
import yaml

from farm import __version__

from conftest import run_farm, tiny_film


def write_spec(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def assert_one_line_error(result, *words, after_progress=False):
    """Exit 2 and one error line naming the problem; progress lines may come first only when asked."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("farm: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    if not after_progress:
        assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_version_and_help():
    assert run_farm("--version").stdout.strip() == f"farm {__version__}"
    for args in (["--help"], ["render", "--help"], ["check", "--help"]):
        result = run_farm(*args)
        assert result.returncode == 0 and "usage: farm" in result.stdout


PRESET_COMMANDS = (["render", "f.yaml"], ["film", "Yeti"], ["check", "f.yaml"], ["submit", "f.yaml"],
                   ["weights", "fetch"], ["weights", "check"])


def test_every_command_lists_every_preset_and_what_it_is(capsys):
    """--preset's help comes from farm/presets: each preset's name and the first sentence of its comment."""
    from farm.cli import build_parser, preset_summary
    from farm.spec import preset_names

    assert preset_names() == ["draft", "final", "tiny", "toy"]
    assert preset_summary("tiny") == "the real CLIP and BigGAN classes at small widths with random weights"
    assert preset_summary("toy") == ("a CLIP and a BigGAN trained here on procedural pictures (farm/toy, "
                                     "docs/TOY.md), on a CPU")  # two comment lines, up to the first full stop
    parser = build_parser()
    for command in PRESET_COMMANDS:
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--help"])
        text = "".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
        for name in preset_names():
            assert "".join(f"{name}: {preset_summary(name)}".split()) in text, (command, name)
        assert "(default:thespec'srender.preset,elsedraft)" in text, command
        assert parser.parse_args(command).preset is None  # the spec's own preset unless one is given


def test_out_defaults():
    import inspect

    from farm.cli import build_parser
    from farm.driver.submit import DEFAULT_OUT, submit

    parser = build_parser()
    assert parser.parse_args(["render", "f.yaml"]).out == parser.parse_args(["film", "Yeti"]).out == "out"
    # farm submit's default is the library's own, not a copy of it.
    assert parser.parse_args(["submit", "f.yaml"]).out == inspect.signature(submit).parameters["out"].default
    assert DEFAULT_OUT == "~/farm-films"


def test_the_cli_and_the_driver_load_without_torch():
    """torch loads in the workers; the CLI and the Ray driver (which derives scene seeds) stay light."""
    import subprocess
    import sys

    code = "import sys, farm.cli, farm.driver.render; print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


DRIVER_UP_TO_THE_ACTORS = """
import sys
import farm.driver.cluster as cluster
import farm.driver.render as render

def actors_next(address):
    # farm render has planned the film, its cut and its jobs and opened the store: Ray and the
    # actors come next. Everything the driver imports to run them, then what it holds.
    import ray, farm.driver.dispatch, farm.driver.pool, farm.driver.worker  # noqa: F401
    print(sorted({"torch", "open_clip", "torchvision"} & set(sys.modules)), flush=True)
    raise SystemExit(0)

cluster._connect = lambda address: False  # no cluster started in the background either
render.connect = actors_next
from farm.cli import main
main(["render", sys.argv[1], "--preset", "toy", "--out", sys.argv[2], "--progress", "plain"])
"""


def test_farm_render_plans_a_film_without_importing_torch(tmp_path):
    """The driver of `farm render` (the README's toy film: prompts counted, the cut planned, the store
    opened, the jobs made) never imports torch or open_clip: the workers do."""
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, "-c", DRIVER_UP_TO_THE_ACTORS, str(ROOT / "examples" / "toy_world.yaml"),
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 scenes, 90 frames" in result.stderr  # it did plan the film
    assert result.stdout.strip() == "[]"


def test_check_prints_the_resolved_spec(tmp_path):
    spec = write_spec(tmp_path / "film.yaml", tiny_film())
    result = run_farm("check", str(spec), "--set", "render.cutouts=9")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["render"]["cutouts"] == 9 and resolved["models"]["biggan"] == "tiny"


@pytest.mark.parametrize("change, words", [
    ({"scenes": [{"narration": "a", "duration": 0}]}, ["scenes[0].duration", "0"]),
    ({"video": {"fps": 0}}, ["video.fps", "0"]),
    ({"video": {"fps": -5}}, ["video.fps", "-5"]),
    ({"video": {"size": 300}}, ["video.size", "300"]),
    ({"render": {"preset": "tiny", "bogus": 1}}, ["render.bogus", "unknown key"]),
    ({"scenes": [], "story": {"text": ""}}, ["scenes", "no scenes"]),
    # 1.2 x 10^10 frames: it hung before it was bounded; now one line, at once.
    ({"scenes": [{"narration": "a", "duration": 1e9}]}, ["scenes[0].duration", "at most 600 seconds"]),
])
def test_bad_spec_values(tmp_path, change, words):
    data = tiny_film()
    data.update(change)
    spec = write_spec(tmp_path / "f.yaml", data)
    assert_one_line_error(run_farm("render", str(spec), "--out", str(tmp_path / "out")), *words)
    assert not (tmp_path / "out").exists()


def test_bad_files_and_flags(tmp_path):
    assert_one_line_error(run_farm("render", str(tmp_path / "missing.yaml")), "missing.yaml", "no such spec file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("title: [unclosed\n")
    assert_one_line_error(run_farm("render", str(broken)), "broken.yaml", "not valid YAML")
    spec = write_spec(tmp_path / "f.yaml", tiny_film())
    assert_one_line_error(run_farm("render", str(spec), "--preset", "huge"), "render.preset", "huge")
    assert_one_line_error(run_farm("render", str(spec), "--set", "video.fps=fast"), "video.fps", "fast")
    assert_one_line_error(run_farm("render", str(spec), "--set", "nonsense"), "--set", "key=value")
    long_prompt = tiny_film()
    long_prompt["scenes"][0]["prompt"] = "yeti " * 100
    assert_one_line_error(run_farm("render", str(write_spec(tmp_path / "long.yaml", long_prompt))),
                          "scenes[0].prompt", "CLIP tokens")


def test_pretrained_weights_that_cannot_be_had_are_one_line(tmp_path):
    data = tiny_film()
    data["models"] = {"clip": "tiny", "biggan": str(tmp_path / "no-such-biggan")}
    result = run_farm("render", str(write_spec(tmp_path / "f.yaml", data)), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "models.biggan", "config.json", after_progress=True)


def test_folder_of_other_files_is_refused(tmp_path):
    spec = write_spec(tmp_path / "film.yaml", tiny_film("Busy Folder"))
    busy = tmp_path / "out" / "busy-folder"
    busy.mkdir(parents=True)
    (busy / "notes.txt").write_text("mine")
    assert_one_line_error(run_farm("render", str(spec), "--out", str(tmp_path / "out")), "holds files but no film.yaml")
    assert (busy / "notes.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1


def test_an_address_with_no_cluster_is_one_line(tmp_path):
    spec = write_spec(tmp_path / "f.yaml", tiny_film("No Cluster"))
    result = run_farm("render", str(spec), "--out", str(tmp_path / "out"), "--address", "127.0.0.1:1", timeout=60)
    assert_one_line_error(result, "--address", "127.0.0.1:1", after_progress=True)


def test_the_example_film_renders_as_the_readme_says_then_a_different_one_is_refused(tmp_path):
    """The Yeti Tardigrade example with the tiny preset: crossfades, narration where espeak-ng is
    installed (scripts/setup installs it), soft subtitles, SRT, VTT, contact sheet and poster.
    At 3 frames a second instead of its 12 (a quarter of the frames, the same stages)."""
    from conftest import EXAMPLE

    result = run_farm("render", str(EXAMPLE), "--preset", "tiny", "--out", str(tmp_path), "--set", "video.fps=3",
                      timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    film = tmp_path / "yeti-tardigrade"
    assert result.stdout.strip() == str(film / "film.mp4")
    for name in ("film.srt", "film.vtt", "contact.png", "poster.png"):
        assert (film / name).is_file(), name
    import av

    with av.open(str(film / "film.mp4")) as container:
        assert len(container.streams.audio) == 1 and len(container.streams.subtitles) == 1
        assert container.streams.video[0].base_rate == 3
    # Its cluster, started in the background while the film was planned, is its own: no autoscaler
    # asked (that is for a cluster it joined), and every worker said where its start went.
    events = [json.loads(line) for line in (film / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["event"] == "autoscaler"]
    ready = [e for e in events if e["event"] == "worker" and e["state"] == "ready"]
    assert ready and all(set(e["timings"]) == {"torch_s", "imports_s", "build_s"} for e in ready)
    # The same folder asked for a different film: one line naming what differs, nothing touched.
    snapshot = {p: p.read_bytes() for p in film.rglob("*") if p.is_file()}
    changed = run_farm("render", str(EXAMPLE), "--preset", "tiny", "--out", str(tmp_path), "--set", "video.fps=4")
    assert_one_line_error(changed, "already holds a different film", "video.fps", after_progress=True)
    assert {p: p.read_bytes() for p in film.rglob("*") if p.is_file()} == snapshot
