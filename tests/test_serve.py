"""farm serve: the real aiohttp server on a loopback port, Debian's chromium driven headless by
Selenium, and a real tiny film rendered by `farm render` in another process while we watch.

One film renders for the whole module (started first, watched by the browser tests and by an
event-stream listener), beside a film that is only planned (title ``<script>...``, two story
candidates); one browser and one server serve every test.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from farm.cli import main
from farm.folder.events import EventLog, read_events
from farm.folder.layout import EVENTS_NAME, MANIFEST_NAME, SPEC_NAME, frame_path, write_film_yaml
from farm.folder.manifest import Manifest
from farm.serve.app import Server
from farm.serve.films import Films
from farm.serve.pages import film_page
from farm.spec import spec_from_dict
from farm.writing.plan import plan_film
from farm.writing.story import Candidate, save_candidates

from conftest import tiny_film

EVIL = "<script>window.pwned = 1</script> & <b>Co</b>"
RENDERED = "Frost Bar"
SCENES, SECONDS, FPS = 3, 2.0, 4  # 24 frames: the frame bar has a cell per frame


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("films")


@pytest.fixture(scope="module")
def planned(out):
    """A film planned by farm (film.yaml, two saved story candidates), nothing rendered."""
    data = tiny_film(EVIL, scenes=2)
    data["story"] = {"phrase": "Yeti <Tardigrade>", "text": "A yeti <i>wakes</i>.", "candidate": 2}
    spec = plan_film(spec_from_dict(data))
    folder = out / spec.slug
    write_film_yaml(folder, spec)
    save_candidates(folder / "candidates", [Candidate(1, "Yeti <Tardigrade>", "First <u>story</u>.", {}),
                                            Candidate(2, "Yeti <Tardigrade>", "A yeti <i>wakes</i>.", {})])
    return folder


@pytest.fixture(scope="module")
def server(out, planned):
    with Server(out, port=0) as running:
        yield running


@pytest.fixture(scope="module")
def render(out, server, tmp_path_factory):
    """``farm render`` of a tiny film into OUT, in its own process (its own local Ray cluster),
    started before any test looks; every message of the film's event stream is kept, with the
    time it arrived, until the render ends."""
    where = tmp_path_factory.mktemp("spec")
    spec_file = where / "frost.yaml"
    spec_file.write_text(yaml.safe_dump(tiny_film(RENDERED, scenes=SCENES, duration=SECONDS, fps=FPS)))
    farm = Path(sys.executable).with_name("farm")
    with open(where / "stdout", "w") as stdout, open(where / "stderr", "w") as stderr:  # no pipe to fill
        process = subprocess.Popen([str(farm), "render", str(spec_file), "--out", str(out), "--progress", "json"],
                                   stdout=stdout, stderr=stderr, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    process.log = where / "stderr"
    folder = out / "frost-bar"
    messages: list[tuple[float, dict]] = []
    listener = threading.Thread(target=listen, args=(server, folder, process, messages), daemon=True)
    listener.start()
    yield process, folder, messages
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    listener.join(timeout=5)


def listen(server: Server, folder: Path, process: subprocess.Popen, messages: list) -> None:
    """Read /api/films/frost-bar/events (once the folder is a film) until the render has ended."""
    while not (folder / SPEC_NAME).is_file():
        if process.poll() is not None:
            return
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/api/films/{folder.name}/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    while True:
        line = response.readline()
        if not line:
            return
        if line.startswith(b"data: "):
            record = json.loads(line[6:])
            messages.append((time.time(), record))
            if record["state"] == "done" or (process.poll() is not None and record["state"] != "rendering"):
                conn.close()
                return


def get(server: Server, path: str, method: str = "GET") -> tuple[int, dict, bytes]:
    """One request with ``path`` sent exactly as given (no normalising of ``..`` or %-escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wait_for(what, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {getattr(what, '__name__', what)}")
        time.sleep(step)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, headless, through its chromedriver (scripts/setup installs both)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are not installed: run scripts/setup"
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or a driver
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--mute-audio", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


# --- in the browser, while the film renders -------------------------------------------------------------

def test_the_frame_bar_advances_while_the_film_renders(server, render, browser, tmp_path):
    process, folder, _ = render
    wait_for(lambda: (folder / SPEC_NAME).is_file(), 30)
    browser.get(f"{server.url}/films/{folder.name}")
    assert browser.find_element("id", "title").text == RENDERED
    rows = browser.find_elements("css selector", "#scenes tr.scene")
    assert [r.find_element("css selector", ".prompt").text for r in rows] == \
        [s["prompt"] for s in tiny_film(scenes=SCENES)["scenes"]]
    assert len(browser.find_elements("css selector", "#bar .cell")) == SCENES * SECONDS * FPS
    browser.execute_script("window.sameDocument = true")  # gone if the page reloaded
    probe = ("const img = document.querySelector('#running figure img');"
             "return {written: document.querySelectorAll('#bar .cell.written').length,"
             " state: document.getElementById('state').textContent, newest: img && img.src,"
             " same: window.sameDocument === true}")
    seen = [browser.execute_script(probe)]
    first = seen[0]["written"]
    deadline = time.monotonic() + 90
    # Until the bar has moved twice (pushed by the server, no reload) and a running scene's newest frame shows.
    while len({p["written"] for p in seen}) < 3 or not any(p["newest"] for p in seen):
        assert time.monotonic() < deadline, seen[-1]
        assert seen[-1]["same"], "the page reloaded while the film rendered"
        assert process.poll() is None, "the render ended before the bar moved"
        time.sleep(0.05)
        seen.append(browser.execute_script(probe))
    assert [p["written"] for p in seen] == sorted(p["written"] for p in seen)  # never backwards
    assert {p["state"] for p in seen if p["written"] > first} == {"rendering"}
    src = next(p["newest"] for p in seen if p["newest"])
    assert "/files/frost-bar/scenes/" in src and browser.execute_script(
        "return fetch(arguments[0]).then(r => r.status)", src) == 200
    browser.save_screenshot(str(tmp_path / "rendering.png"))
    if os.environ.get("FARM_SERVE_SCREENSHOT"):  # docs/serve.png is made this way
        shutil.copy(tmp_path / "rendering.png", os.environ["FARM_SERVE_SCREENSHOT"])


def index_rows(browser) -> dict[str, dict]:
    return browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#films tr.film'), r => [r.dataset.name,"
        "{title: r.querySelector('.title').textContent, state: r.querySelector('.state').textContent,"
        " progress: r.querySelector('.progress').textContent, poster: !!r.querySelector('img.poster')}]))")


def test_the_index_lists_the_films_with_their_states(server, render, planned, browser):
    process, folder, _ = render
    film_tab = browser.current_window_handle  # the film page stays open there for the next test
    browser.switch_to.new_window("tab")
    try:
        browser.get(server.url + "/")
        drawn = index_rows(browser)  # as the server drew it
        wait_for(lambda: browser.execute_script("return Number(document.body.dataset.updates || 0)") > 0, 10)
        for rows in (drawn, index_rows(browser)):  # and as the page's script keeps it
            assert set(rows) == {"frost-bar", planned.name}
            assert rows[planned.name]["title"] == EVIL  # markup shown as text
            assert rows[planned.name]["state"] == "planned" and not rows[planned.name]["poster"]
            assert rows[planned.name]["progress"] == "0/8 frames, 0/2 scenes done"
            assert rows["frost-bar"]["title"] == RENDERED
        assert browser.execute_script("return typeof window.pwned") == "undefined"
        # The rendering film's row moves on in the open page.
        if drawn["frost-bar"]["state"] == "rendering":
            wait_for(lambda: index_rows(browser)["frost-bar"]["progress"] != drawn["frost-bar"]["progress"], 60)
        assert list(index_rows(browser)) == ["frost-bar", planned.name]  # changed last, first
    finally:
        browser.close()
        browser.switch_to.window(film_tab)


def test_the_finished_film_plays_with_its_subtitle_track(server, render, browser):
    process, folder, _ = render
    if not browser.current_url.endswith(f"/films/{folder.name}"):  # this test alone
        browser.get(f"{server.url}/films/{folder.name}")
    assert process.wait(timeout=90) == 0, process.log.read_text()
    # The page left open while the film rendered draws itself anew when the film is done.
    video = wait_for(lambda: browser.find_elements("id", "video"), 10)[0]
    assert browser.find_element("id", "state").text == "done"
    track = video.find_element("css selector", "track")
    assert track.get_attribute("kind") == "subtitles" and track.get_attribute("default") is not None
    assert track.get_attribute("src").split("?")[0].endswith("/files/frost-bar/film.vtt")
    cues = wait_for(lambda: browser.execute_script(
        "const t = document.querySelector('#video').textTracks[0];"
        "return t && t.cues && t.cues.length ? Array.from(t.cues, c => c.text) : null"), 10)
    assert cues == [s["narration"] for s in tiny_film(scenes=SCENES)["scenes"]]
    # The film itself: its metadata read by the browser (H.264 in MP4), as long as the timeline.
    duration = wait_for(lambda: browser.execute_script(
        "const v = document.querySelector('#video'); return v.readyState >= 1 ? v.duration : null"), 10)
    assert duration == pytest.approx(SCENES * SECONDS, abs=0.3)
    links = {a.text: a.get_attribute("href") for a in browser.find_elements("css selector", ".downloads a")}
    assert set(links) == {"film.mp4", "film.srt", "film.vtt", "frames.zip"}
    assert browser.find_element("css selector", "#contact img").get_attribute("naturalWidth") != "0"
    assert len(browser.find_elements("css selector", "#bar .cell.written")) == SCENES * SECONDS * FPS
    browser.get(server.url + "/")
    assert index_rows(browser)["frost-bar"]["state"] == "done" and index_rows(browser)["frost-bar"]["poster"]


def test_a_title_of_markup_shows_as_text(server, planned, browser):
    browser.get(f"{server.url}/films/{planned.name}")
    assert browser.find_element("id", "title").text == EVIL
    assert browser.title == f"{EVIL} · farm"
    assert browser.find_element("css selector", "#story .phrase").text == "from the phrase Yeti <Tardigrade>"
    assert browser.find_element("css selector", "#story p.story").text == "A yeti <i>wakes</i>."
    summaries = [s.text for s in browser.find_elements("css selector", "#story summary")]
    assert summaries == ["candidate 1", "candidate 2 (chosen)"]
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert not browser.find_elements("css selector", "main b, main i, main u, h1 b")
    assert browser.find_element("id", "state").text == "planned"
    assert not browser.find_elements("id", "video")


# --- the event stream, the JSON API, the files ----------------------------------------------------------

def test_every_frame_written_reached_the_event_stream_within_a_second(render):
    process, folder, messages = render
    assert process.wait(timeout=90) == 0
    deadline = time.monotonic() + 5
    while not (messages and messages[-1][1]["state"] == "done") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert messages and messages[-1][1]["state"] == "done"
    listening_from = messages[0][0]
    late = []
    checked = 0
    for scene in range(SCENES):
        for frame in range(int(SECONDS * FPS)):
            written = frame_path(folder, scene, frame).stat().st_mtime
            if written <= listening_from:
                continue
            arrived = next(t for t, record in messages if frame in record["scenes"][scene].get("written", ()))
            checked += 1
            if arrived - written > 1.0:
                late.append((scene, frame, round(arrived - written, 2)))
    assert checked >= SCENES * SECONDS * FPS // 2, checked  # most frames were written while we listened
    assert not late, late
    states = [record["state"] for _, record in messages]
    assert "rendering" in states and states[-1] == "done"


def test_the_json_api(server, render, planned):
    process, folder, _ = render
    assert process.wait(timeout=90) == 0
    status, headers, body = get(server, "/api/films")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    films = json.loads(body)["films"]
    assert [f["name"] for f in films] == ["frost-bar", planned.name]  # changed last, first
    done = films[0]
    assert (done["state"], done["frames_done"], done["frames_total"], done["scenes_done"]) == \
        ("done", SCENES * SECONDS * FPS, SCENES * SECONDS * FPS, SCENES)
    assert done["elapsed_s"] > 0 and done["eta_s"] is None
    # What the page knows of the runs, farm render wrote into the film's folder: events.jsonl.
    events, _ = read_events(folder / EVENTS_NAME)
    assert events[0]["event"] == "run" and events[0]["state"] == "started" and events[0]["pid"] == process.pid
    assert events[-1]["event"] == "run" and events[-1]["state"] == "finished"
    assert sum(e["count"] for e in events if e["event"] == "frames") == SCENES * SECONDS * FPS
    status, _, body = get(server, "/api/films/frost-bar")
    record = json.loads(body)
    assert status == 200 and record["spec"]["title"] == RENDERED and record["timeline"]["frames"] == 24
    assert [s["state"] for s in record["scenes"]] == ["done"] * SCENES
    assert all(s["node"] and s["seconds"] > 0 for s in record["scenes"])
    status, _, body = get(server, f"/api/films/{planned.name}")
    record = json.loads(body)
    assert record["title"] == EVIL and record["state"] == "planned"
    assert [c["number"] for c in record["candidates"]] == [1, 2] and record["story"]["candidate"] == 2


def test_files_inside_out_only(server, planned, out, tmp_path):
    film = planned.name
    status, headers, body = get(server, f"/files/{film}/film.yaml")
    assert status == 200 and body == (planned / "film.yaml").read_bytes()
    assert headers["Content-Type"].startswith("text/plain")  # never a page of its own
    secret = tmp_path / "secret.txt"
    secret.write_text("not a film's")
    (planned / "outside").symlink_to(secret)
    (planned / "up").symlink_to(tmp_path, target_is_directory=True)
    (out / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "film.yaml").write_text("title: elsewhere\n")
    try:
        for path in (f"/files/{film}/../../{secret.name}", f"/files/{film}/%2e%2e/%2e%2e/etc/passwd",
                     f"/files/{film}/..%2f..%2fetc%2fpasswd", f"/files/{film}/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
                     f"/files/{film}/..%5c..%5cetc%5cpasswd", f"/files/{film}//etc/passwd",
                     f"/files/{film}/%2fetc%2fpasswd", f"/files/{film}/outside", f"/files/{film}/up/{secret.name}",
                     f"/files/{film}/candidates/../film.yaml", f"/files/{film}/%00film.yaml",
                     "/files/..%2fetc/passwd", "/files/%2e%2e/etc/passwd", "/files/elsewhere/film.yaml",
                     f"/files/{film}/.film.yaml.tmp", "/static/..%2f..%2fapp.py", "/static/%2e%2e/app.py"):
            status, _, body = get(server, path)
            assert status in (400, 404), path
            assert b"not a film's" not in body and b"root:" not in body and b"elsewhere" not in body, path
        assert "elsewhere" not in [f["name"] for f in json.loads(get(server, "/api/films")[2])["films"]]
    finally:
        for link in (planned / "outside", planned / "up", out / "elsewhere"):
            link.unlink()


def test_nothing_writes(server, planned):
    before = {p: p.read_bytes() for p in planned.rglob("*") if p.is_file()}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/films", f"/api/films/{planned.name}", f"/files/{planned.name}/film.yaml",
                     f"/films/{planned.name}"):
            assert get(server, path, method)[0] == 405, (method, path)
    assert {p: p.read_bytes() for p in planned.rglob("*") if p.is_file()} == before


def test_an_unknown_film_is_not_found(server):
    for path in ("/films/nope", "/api/films/nope", "/api/films/nope/events", "/films/..", "/api/films/%2e%2e",
                 "/films/nope/frames.zip"):
        status, _, body = get(server, path)
        assert status == 404, path
    assert b"no film named 'nope'" in get(server, "/api/films/nope")[2]


def test_the_frames_zip_holds_every_frame(server, render):
    import io
    import zipfile

    process, folder, _ = render
    assert process.wait(timeout=90) == 0
    status, headers, body = get(server, "/films/frost-bar/frames.zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = archive.namelist()
        assert len(names) == SCENES * SECONDS * FPS
        assert archive.read("frost-bar/scenes/001/frame_00002.png") == frame_path(folder, 1, 2).read_bytes()


# --- the command ----------------------------------------------------------------------------------------

def test_bad_input_is_one_line_and_exit_2(out, planned, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [(["serve", str(tmp_path / "missing")], "no such folder"),
                 (["serve", str(out), "--port", str(port)], f"port {port} on 127.0.0.1 is in use"),
                 (["serve", str(planned)], "is one film's folder; serve the folder it is in"),
                 (["serve", str(planned / SPEC_NAME)], "not a folder"),
                 (["serve", str(out), "--port", "70000"], "a port is 0 (any free one) to 65535")]
        for argv, words in cases:
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith("farm: error: ") and words in err, err


def test_a_host_beyond_this_machine_is_said(out):
    farm = Path(sys.executable).with_name("farm")
    process = subprocess.Popen([str(farm), "serve", str(out), "--host", "0.0.0.0", "--port", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        first, second = process.stderr.readline(), process.stderr.readline()
        assert "farm serve: films in" in first and "http://0.0.0.0:" in first
        assert "not only on this machine" in second and "there is no login" in second
        port = int(first.split("http://0.0.0.0:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/films")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_server_reads_without_torch_or_ray(out):
    code = ("import sys; from farm.serve.app import make_app; from farm.serve.films import Films; "
            f"Films({str(out)!r}).summaries(); "
            "print(sorted(m for m in ('torch', 'ray', 'open_clip') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_films_record_is_read_again_only_when_its_files_change(planned, out):
    films = Films(out)
    first = films.film(planned.name)
    assert films.film(planned.name)["scenes"] is first["scenes"]  # nothing changed: kept
    manifest = Manifest.new(planned.name, [4, 4])
    manifest.scenes[0].started("here node 1")
    (planned / MANIFEST_NAME).write_text(manifest.to_json())
    try:
        for count in (1, 2):  # a frame on disk (not yet in the manifest) of a running scene
            frame = frame_path(planned, 0, count - 1)
            frame.parent.mkdir(parents=True, exist_ok=True)
            frame.write_bytes(b"\x89PNG not really")
            again = films.film(planned.name)
            scene = again["scenes"][0]
            assert (scene["state"], scene["frames_written"], again["frames_done"]) == ("running", count, count)
            assert scene["newest"] == f"/files/{planned.name}/scenes/000/frame_{count - 1:05d}.png"
        assert again["state"] == "rendering"  # no events.jsonl: a fresh manifest says so
        assert films.film(planned.name)["scenes"] is again["scenes"]
    finally:
        shutil.rmtree(planned / "scenes")
        (planned / MANIFEST_NAME).unlink()


def test_a_run_whose_driver_is_gone_is_stopped_and_a_failed_scene_fails_the_film(tmp_path):
    out = tmp_path / "out"
    spec = plan_film(spec_from_dict(tiny_film("Cut Short", scenes=2)))
    folder = out / spec.slug
    write_film_yaml(folder, spec)
    gone = subprocess.Popen(["true"])
    gone.wait()
    manifest = Manifest.new(spec.slug, [4, 4])
    manifest.scenes[0].started("here node 1")
    manifest.scenes[0].failed("ValueError: the scene's own code", final=False)
    manifest.scenes[0].started("here node 2")
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    log = EventLog(folder)
    log.append({"event": "run", "state": "started", "time": time.time(), "pid": gone.pid,
                "host": socket.gethostname()})
    log.append({"event": "scene", "state": "started", "scene": 0, "node": "n" * 56, "time": time.time()})
    record = Films(out).film(spec.slug)
    assert record["state"] == "stopped" and record["scenes"][0]["state"] == "pending"  # its driver died (SIGKILL)
    assert record["scenes"][0]["retried"] and record["scenes"][0]["attempts"] == 2
    page = film_page(record)
    assert "retried" in page and "ValueError: the scene&#x27;s own code" in page
    manifest.scenes[0].failed("ValueError: again", final=True)
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    log.run_ended("failed", "scene 1 failed on every attempt <b>")
    record = Films(out).film(spec.slug)
    assert (record["state"], record["scenes"][0]["state"], record["run_error"]) == \
        ("failed", "failed", "scene 1 failed on every attempt <b>")
    assert "scene 1 failed on every attempt &lt;b&gt;" in film_page(record)


def test_a_long_film_gets_a_cell_per_scene_filled_as_its_frames_come(tmp_path):
    spec = plan_film(spec_from_dict(tiny_film("Long One", scenes=30, duration=2.0, fps=12)))  # 720 frames
    folder = tmp_path / spec.slug
    write_film_yaml(folder, spec)
    manifest = Manifest.new(spec.slug, spec.frames_per_scene())
    for frame in range(24):
        manifest.scenes[0].frame_written(frame, "0" * 16, "n" * 56)
    manifest.scenes[0].finished(3.0)
    for frame in range(6):
        manifest.scenes[1].frame_written(frame, "0" * 16, "n" * 56)
    (folder / MANIFEST_NAME).write_text(manifest.to_json())
    record = Films(tmp_path).film(spec.slug)
    assert not record["per_frame"] and "written" not in record["scenes"][0]
    assert (record["frames_done"], record["frames_total"]) == (30, 720)
    assert record["state"] == "rendering"  # no events.jsonl, a manifest saved seconds ago
    bar = film_page(record).split('<div id="bar" ')[1].split("</div>")[0]
    cells = bar.split("<span ")[1:]
    assert 'class="bar per-scene"' in bar and len(cells) == 30
    assert cells[0].startswith('class="cell done"') and 'height:100%' in cells[0]
    assert cells[1].startswith('class="cell pending"') and 'height:25%' in cells[1] and "6/24 frames" in cells[1]
    assert cells[2].startswith('class="cell pending"') and 'height:0%' in cells[2]


def test_a_film_folder_broken_by_hand_shows_what_is_wrong(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / SPEC_NAME).write_text("title: 3\nvideo: {fps: abc}\nscenes:\n - {narration: 5, duration: x}\n - 7\n")
    record = Films(tmp_path).film("broken")
    assert (record["title"], record["frames_total"], record["state"]) == ("3", 1, "planned")
    (folder / SPEC_NAME).write_text("title: [unclosed\n")
    (folder / MANIFEST_NAME).write_text("{not json")
    record = Films(tmp_path).film("broken")
    assert record["errors"][0] == "film.yaml: cannot be read (ParserError)"
    assert record["errors"][1].startswith("manifest.json: cannot be read")
    page = film_page(record)
    assert "film.yaml: cannot be read (ParserError)" in page and 'class="error"' in page


def test_the_events_file_is_read_by_whole_lines(tmp_path):
    log = EventLog(tmp_path)
    log.run_started()
    log.append({"event": "frames", "scene": 0, "count": 2})
    with open(tmp_path / EVENTS_NAME, "a") as handle:
        handle.write('not json\n{"event": "scene", "sta')  # a bad line, and one still being written
    events, offset = read_events(tmp_path / EVENTS_NAME)
    assert [e["event"] for e in events] == ["run", "frames"]
    with open(tmp_path / EVENTS_NAME, "a") as handle:
        handle.write('te": "done", "scene": 0}\n')
    more, end = read_events(tmp_path / EVENTS_NAME, offset)
    assert more == [{"event": "scene", "state": "done", "scene": 0}]
    assert end == (tmp_path / EVENTS_NAME).stat().st_size and read_events(tmp_path / "none.jsonl") == ([], 0)
