#!/usr/bin/env python3
"""The README's pictures of farm serve: a real film watched in headless chromium while it renders.

`farm render FILM --preset PRESET` renders into a fresh folder in another process; farm serve
serves it on a loopback port; Debian's chromium (through Selenium, as tests/test_serve.py)
opens the film page and saves it once about a third of the frames are written (docs/serve.png),
then again when the film is done and its page shows the player (docs/serve_done.png).

    .venv/bin/python scripts/serve_screenshot.py [--film examples/toy_world.yaml] [--preset toy] [--to docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from farm.serve.app import Server  # noqa: E402
from farm.spec import load_spec  # noqa: E402


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def record(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--film", default=str(ROOT / "examples" / "toy_world.yaml"))
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--to", default=str(ROOT / "docs"))
    args = parser.parse_args()
    slug = load_spec(args.film, preset=args.preset).slug
    with tempfile.TemporaryDirectory(prefix="serve_screenshot") as out:
        render = subprocess.Popen([str(Path(sys.executable).with_name("farm")), "render", args.film, "--preset",
                                   args.preset, "--out", out, "--quiet"], stdout=subprocess.DEVNULL)
        driver = None
        try:
            with Server(out, port=0) as server:
                while not (Path(out) / slug / "film.yaml").is_file():
                    time.sleep(0.2)
                api = f"{server.url}/api/films/{slug}"
                driver = browser(1280, 1400)
                driver.get(f"{server.url}/films/{slug}")
                while True:
                    film = record(api)
                    if film["frames_done"] >= film["frames_total"] / 3 and film["scenes_running"]:
                        break
                    time.sleep(0.2)
                time.sleep(0.6)  # the page's next update, and its images, in
                driver.save_screenshot(str(Path(args.to) / "serve.png"))
                print(f"{args.to}/serve.png: {film['frames_done']}/{film['frames_total']} frames")
                if render.wait() != 0:
                    raise SystemExit("the render failed")
                while not driver.find_elements("id", "video"):
                    time.sleep(0.2)
                driver.execute_script("document.getElementById('player').scrollIntoView()")
                time.sleep(1.0)
                driver.save_screenshot(str(Path(args.to) / "serve_done.png"))
                print(f"{args.to}/serve_done.png: the film done")
        finally:
            if driver is not None:
                driver.quit()
            if render.poll() is None:
                render.kill()


if __name__ == "__main__":
    main()
