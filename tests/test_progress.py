"""Progress reporters: JSON lines a program can read, and the live bar drawn by tqdm."""

from __future__ import annotations

import io
import json
import sys

from farm.driver.progress import JsonProgress, TerminalProgress, reporter

EVENTS = [
    {"event": "film", "film": "yeti", "path": "out/yeti", "scenes": 2, "frames_total": 8, "frames_done": 2,
     "changed": []},
    {"event": "worker", "state": "ready", "node": "n1", "host": "h", "pid": 1, "workers": 1},
    {"event": "frames", "scene": 1, "first": 0, "last": 2, "count": 3, "frames_done": 5, "frames_total": 8,
     "scenes_done": 1, "scenes_running": 1, "workers": 1, "fps": 2.5, "eta_s": 1.2},
    {"event": "scene", "state": "done", "scene": 1, "seconds": 1.0, "attempts": 1, "scenes_done": 2},
]


def test_json_lines_are_one_object_each():
    out = io.StringIO()
    report = JsonProgress(out)
    for event in EVENTS:
        report.event(event)
    report.message("scene 2/2 rendered")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["film", "worker", "frames", "scene", "message"]
    assert lines[2]["frames_done"] == 5 and lines[-1]["text"] == "scene 2/2 rendered"


def test_the_bar_counts_frames_scenes_and_workers():
    out = io.StringIO()
    report = TerminalProgress(out)
    for event in EVENTS[:3]:
        report.event(event)
    assert report.bar.n == 5 and report.bar.total == 8
    report.message("a line above the bar")
    report.event(EVENTS[3])
    report.close()
    text = out.getvalue()
    assert "a line above the bar" in text and "scenes 2/2" in text and "1 workers" in text and "5/8" in text


def shown(capsys, mode):
    """What --progress MODE writes for EVENTS and one message: (stdout, stderr)."""
    report = reporter(mode)
    for event in EVENTS:
        report.event(event)
    report.message("scene 2/2 rendered")
    report.close()
    return capsys.readouterr()


def test_reporter_choice(capsys, monkeypatch):
    assert reporter("auto", quiet=True) is None and reporter("json", quiet=True) is None
    # json: every event and the message as JSON lines on stdout, nothing on stderr.
    out, err = shown(capsys, "json")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["film", "worker", "frames", "scene", "message"]
    assert err == ""
    # plain, and auto where stderr is not a terminal (as under pytest): the message alone, on stderr.
    for mode in ("plain", "auto"):
        assert shown(capsys, mode) == ("", "scene 2/2 rendered\n"), mode
    # bar, and auto at a terminal: the live bar on stderr.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    for mode in ("bar", "auto"):
        out, err = shown(capsys, mode)
        assert out == "" and "scene 2/2 rendered" in err and "5/8" in err and "scenes 2/2" in err, (mode, err)
