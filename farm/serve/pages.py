"""The HTML pages, drawn from the films' records (farm.serve.films); the page's script keeps them live.

Every text that comes from a spec, a story or an LLM (titles, prompts, narration, errors) goes
through :func:`esc`; the script (static/farm.js) sets texts with ``textContent`` only.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Optional

STATE_WORDS = {"planned": "planned", "rendering": "rendering", "done": "done", "failed": "failed",
               "stopped": "stopped"}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def seconds(value: Optional[float]) -> str:
    """``3725`` -> ``1h 02m``; ``75`` -> ``1m 15s``; None -> an em dash."""
    if value is None:
        return "—"
    value = int(round(value))
    if value >= 3600:
        return f"{value // 3600}h {value % 3600 // 60:02d}m"
    if value >= 60:
        return f"{value // 60}m {value % 60:02d}s"
    return f"{value}s"


def when(stamp: Optional[float]) -> str:
    if not stamp:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def page(title: str, body: str, script: str = "") -> str:
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><link rel=\"stylesheet\" href=\"/static/farm.css\"></head>\n"
            f"<body>{body}<script src=\"/static/farm.js\"></script>{script}</body></html>\n")


def progress_text(film: dict[str, Any]) -> str:
    return (f"{film['frames_done']}/{film['frames_total']} frames, "
            f"{film['scenes_done']}/{film['scenes_total']} scenes done")


def index_page(out: str, films: list[dict[str, Any]]) -> str:
    rows = "".join(film_row(f) for f in films) or \
        "<tr class=\"empty\"><td colspan=\"7\">No films here yet: farm render writes them into this folder.</td></tr>"
    body = (f"<header><h1>farm</h1><p class=\"where\">films in <code>{esc(out)}</code></p></header>\n"
            "<main><table id=\"films\"><thead><tr><th></th><th>film</th><th>state</th><th>progress</th>"
            "<th>elapsed</th><th>ETA</th><th>changed</th></tr></thead>\n"
            f"<tbody>{rows}</tbody></table></main>")
    return page("farm: films", body, "<script>farm.index();</script>")


def film_row(film: dict[str, Any]) -> str:
    poster = film["files"].get("poster")
    image = f"<img class=\"poster\" src=\"{esc(poster)}\" alt=\"\" loading=\"lazy\">" if poster else ""
    percent = 100 * film["frames_done"] / film["frames_total"] if film["frames_total"] else 0
    return (f"<tr class=\"film\" data-name=\"{esc(film['name'])}\"><td class=\"poster-cell\">{image}</td>"
            f"<td><a class=\"title\" href=\"{esc(film['url'])}\">{esc(film['title'])}</a></td>"
            f"<td><span class=\"state st-{esc(film['state'])}\">{esc(film['state'])}</span></td>"
            f"<td><div class=\"meter\"><div style=\"width:{percent:.1f}%\"></div></div>"
            f"<span class=\"progress\">{esc(progress_text(film))}</span></td>"
            f"<td class=\"elapsed\">{seconds(film['elapsed_s'])}</td><td class=\"eta\">{seconds(film['eta_s'])}</td>"
            f"<td class=\"changed\">{when(film['changed'])}</td></tr>")


def cell_classes(film: dict[str, Any]) -> list[tuple[str, str]]:
    """The frame bar's cells as (class, tooltip): one per frame for short films, else one per scene."""
    cells = []
    for scene in film["scenes"]:
        where = f" on {scene['node']}" if scene["node"] else ""
        retried = " retried" if scene["retried"] else ""
        if film["per_frame"]:
            written = set(scene.get("written", ()))
            for frame in range(scene["frames_expected"]):
                kind = "written" if frame in written else scene["state"]
                last = " last" if frame == scene["frames_expected"] - 1 else ""
                cells.append((f"cell {kind}{retried}{last}",
                              f"scene {scene['index'] + 1} frame {frame + 1}: "
                              f"{'written' if frame in written else scene['state']}{where}"))
        else:
            cells.append((f"cell {scene['state']}{retried}",
                          f"scene {scene['index'] + 1}: {scene['state']}{where}, "
                          f"{scene['frames_written']}/{scene['frames_expected']} frames"))
    return cells


def frame_bar(film: dict[str, Any]) -> str:
    cells = []
    scene_fill = {}
    if not film["per_frame"]:
        scene_fill = {i: s["frames_written"] / s["frames_expected"] if s["frames_expected"] else 0
                      for i, s in enumerate(film["scenes"])}
    for i, (classes, tip) in enumerate(cell_classes(film)):
        fill = f"<i style=\"height:{100 * scene_fill[i]:.0f}%\"></i>" if scene_fill else ""
        cells.append(f"<span class=\"{classes}\" title=\"{esc(tip)}\">{fill}</span>")
    mode = "frame" if film["per_frame"] else "scene"
    return (f"<div id=\"bar\" class=\"bar per-{mode}\" data-frames-done=\"{film['frames_done']}\" "
            f"data-frames-total=\"{film['frames_total']}\">{''.join(cells)}</div>")


def scene_row(scene: dict[str, Any]) -> str:
    thumb = (f"<img src=\"{esc(scene['newest'])}\" alt=\"frame {scene['newest_frame'] + 1}\" loading=\"lazy\">"
             if scene["newest"] else "")
    failures = "".join(f"<li>{esc(f)}</li>" for f in scene["failures"])
    return (f"<tr class=\"scene\" id=\"scene-{scene['index']}\" data-state=\"{esc(scene['state'])}\">"
            f"<td>{scene['index'] + 1}</td><td class=\"thumb\">{thumb}</td>"
            f"<td><span class=\"state st-{esc(scene['state'])}\">{esc(scene['state'])}</span>"
            f"{' <span class=retried-note>retried</span>' if scene['retried'] else ''}</td>"
            f"<td class=\"node\">{esc(scene['node'] or '')}</td>"
            f"<td class=\"frames\">{scene['frames_written']}/{scene['frames_expected']}</td>"
            f"<td>{esc(scene['duration'])} s</td>"
            f"<td class=\"text\"><div class=\"prompt\">{esc(scene['prompt'])}</div>"
            f"<div class=\"narration\">{esc(scene['narration'])}</div>"
            f"{f'<ul class=failures>{failures}</ul>' if failures else ''}</td></tr>")


def running_frames(film: dict[str, Any]) -> str:
    shots = [f"<figure data-scene=\"{s['index']}\"><img src=\"{esc(s['newest'])}\" alt=\"\">"
             f"<figcaption>scene {s['index'] + 1}, frame {s['newest_frame'] + 1}/{s['frames_expected']}"
             f"{' on ' + esc(s['node']) if s['node'] else ''}</figcaption></figure>"
             for s in film["scenes"] if s["state"] == "running" and s["newest"]]
    return "".join(shots)


def player(film: dict[str, Any]) -> str:
    files = film["files"]
    if film["state"] != "done" or not files.get("video"):
        return ""
    language = (film["spec"].get("llm") or {}).get("language") if isinstance(film["spec"].get("llm"), dict) else None
    track = (f"<track kind=\"subtitles\" src=\"{esc(files['vtt'])}\" srclang=\"{esc(language or 'en')}\" "
             f"label=\"narration\" default>" if files.get("vtt") else "")
    poster = f" poster=\"{esc(files['poster'])}\"" if files.get("poster") else ""
    links = [("film.mp4", files.get("video")), ("film.srt", files.get("srt")), ("film.vtt", files.get("vtt")),
             ("frames.zip", f"/films/{film['name']}/frames.zip")]
    downloads = " ".join(f"<a download href=\"{esc(url)}\">{name}</a>" for name, url in links if url)
    return (f"<section id=\"player\"><h2>The film</h2><video id=\"video\" controls preload=\"metadata\"{poster} "
            f"src=\"{esc(files['video'])}\">{track}</video><p class=\"downloads\">download: {downloads}</p></section>")


def film_page(film: dict[str, Any]) -> str:
    story = film["story"]
    candidates = "".join(
        f"<details{' open' if c['number'] == story['candidate'] else ''}><summary>candidate {esc(c['number'])}"
        f"{' (chosen)' if c['number'] == story['candidate'] else ''}</summary><p>{esc(c['text'])}</p></details>"
        for c in film["candidates"])
    story_html = ""
    if story["text"] or candidates:
        phrase = f"<p class=\"phrase\">from the phrase <q>{esc(story['phrase'])}</q></p>" if story["phrase"] else ""
        story_html = (f"<section id=\"story\"><h2>The story</h2>{phrase}<p class=\"story\">{esc(story['text'])}</p>"
                      f"{candidates}</section>")
    contact = film["files"].get("contact")
    sheet = (f"<section id=\"contact\"><h2>Contact sheet</h2><img src=\"{esc(contact)}\" alt=\"contact sheet\">"
             "</section>" if contact else "")
    errors = "".join(f"<p class=\"error\">{esc(e)}</p>" for e in film["errors"] + [film["run_error"]] if e)
    workers = "".join(f"<li>{esc(w['where'])} ({esc(w['state'])})</li>" for w in film["workers"])
    bad = "".join(f"<li>{esc(b['host'])} node {esc(b['node'][:12])}: {esc(b['reason'])}</li>"
                  for b in film["bad_nodes"])
    running = running_frames(film)
    body = (
        f"<header><p class=\"back\"><a href=\"/\">all films</a></p><h1 id=\"title\">{esc(film['title'])}</h1>"
        f"<p class=\"summary\"><span id=\"state\" class=\"state st-{esc(film['state'])}\">{esc(film['state'])}"
        f"</span> <span id=\"progress\">{esc(progress_text(film))}</span> · elapsed "
        f"<span id=\"elapsed\">{seconds(film['elapsed_s'])}</span> · ETA <span id=\"eta\">{seconds(film['eta_s'])}"
        f"</span> · changed <span id=\"changed\">{when(film['changed'])}</span></p>{errors}</header>\n<main>"
        f"<section id=\"frames\"><h2>Frames</h2>{frame_bar(film)}"
        "<p class=\"legend\"><span class=\"cell pending\"></span> pending <span class=\"cell running\"></span> "
        "running <span class=\"cell written\"></span> written <span class=\"cell done\"></span> done "
        "<span class=\"cell failed\"></span> failed <span class=\"cell retried\"></span> retried</p>"
        f"<div id=\"running\">{running}</div>"
        f"<ul id=\"workers\" class=\"workers\">{workers}</ul>"
        f"{f'<p>nodes avoided:</p><ul class=bad>{bad}</ul>' if bad else ''}</section>\n"
        f"{player(film)}{sheet}{story_html}"
        "<section id=\"scenes\"><h2>Scenes</h2><table><thead><tr><th>#</th><th>frame</th><th>state</th>"
        "<th>node</th><th>frames</th><th>duration</th><th>prompt / narration</th></tr></thead><tbody>"
        f"{''.join(scene_row(s) for s in film['scenes'])}</tbody></table></section>\n"
        f"<section id=\"spec\"><h2>Resolved spec <a href=\"/files/{esc(film['name'])}/film.yaml\">film.yaml</a></h2>"
        f"<pre>{esc(film['spec_text'])}</pre></section></main>")
    name = json.dumps(film["name"]).replace("<", "\\u003c")
    return page(f"{film['title']} · farm", body, f"<script>farm.film({name}, {json.dumps(film['state'])});</script>")


def not_found(text: str) -> str:
    return page("farm: not found", f"<header><p class=\"back\"><a href=\"/\">all films</a></p><h1>Not found</h1>"
                                   f"<p>{esc(text)}</p></header>")
