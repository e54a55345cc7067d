"""``farm serve``: the films under OUT as web pages and a JSON API, on aiohttp's web server. Read-only.

    GET /                          the films, newest first          /api/films         the same as JSON
    GET /films/NAME                a film: frame bar, frames, story, scenes, spec, player
    GET /api/films/NAME            the film page's record as JSON
    GET /api/events                server-sent events: the films' summaries, whenever one changes
    GET /api/films/NAME/events     server-sent events: the film's record, whenever its files change
    GET /files/NAME/PATH           a file of the film's folder (frames, film.mp4, film.vtt, ...)
    GET /films/NAME/frames.zip     every frame of the film, in one zip
    GET /static/FILE               the pages' script and style

Live updates come from the film folders themselves: each event stream looks at a few
``stat``\\ s every ``POLL_S`` seconds (the folder's manifest, events.jsonl, the folders of the
scenes being rendered) and sends the record again when one changed. Only files inside OUT are
served: a path is plain names (no ``..``, no hidden files, no backslash), and what it resolves
to, links followed, must still be in the film's folder. No route writes anything.
"""

from __future__ import annotations

import asyncio
import errno
import json
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

from aiohttp import web

from farm.errors import InputError
from farm.folder.layout import MANIFEST_NAME, SPEC_NAME, frame_path
from farm.serve.films import Films, NoSuchFilm, frames_on_disk
from farm.serve.pages import film_page, index_page, not_found

STATIC = Path(__file__).resolve().parent / "static"
POLL_S = 0.25  # how often an event stream looks at its film's files
RESEND_S = 2.0  # a rendering film's record is sent at least this often (elapsed and ETA move)
PING_S = 15.0  # a comment line keeps idle streams (and proxies in between) open
LIVE_FIELDS_LEFT_OUT = ("spec", "spec_text", "story", "candidates", "timeline", "watch")
FILMS = web.AppKey("films", Films)
CLOSING = web.AppKey("closing", asyncio.Event)


def to_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def live(record: dict[str, Any]) -> dict[str, Any]:
    """What an event stream sends: the record less what does not change while a film renders."""
    return {k: v for k, v in record.items() if k not in LIVE_FIELDS_LEFT_OUT}


def make_app(out: Path) -> web.Application:
    """The web application serving the films under ``out`` (which must be a folder)."""
    app = web.Application()
    app[FILMS] = Films(out)
    app[CLOSING] = asyncio.Event()

    async def closing(app: web.Application) -> None:
        app[CLOSING].set()  # event streams end, so the server stops at once

    app.on_shutdown.append(closing)
    app.add_routes([
        web.get("/", index),
        web.get("/api/films", api_films),
        web.get("/api/events", index_events),
        web.get("/films/{name}", film),
        web.get("/films/{name}/frames.zip", frames_zip),
        web.get("/api/films/{name}", api_film),
        web.get("/api/films/{name}/events", film_events),
        web.get("/files/{name}/{path:.+}", film_file),
        web.get("/static/{path}", static),
    ])
    return app


def films_of(request: web.Request) -> Films:
    return request.app[FILMS]


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=to_json(data), status=status, content_type="application/json", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


def record_or_404(request: web.Request, api: bool) -> dict[str, Any] | web.Response:
    try:
        return films_of(request).film(request.match_info["name"])
    except NoSuchFilm as exc:
        return json_response({"error": str(exc)}, 404) if api else html(not_found(str(exc)), 404)


# --- pages and JSON ---------------------------------------------------------------------------------

async def index(request: web.Request) -> web.Response:
    films = films_of(request)
    return html(index_page(str(films.out), films.summaries()))


async def api_films(request: web.Request) -> web.Response:
    films = films_of(request)
    return json_response({"out": str(films.out), "films": films.summaries()})


async def film(request: web.Request) -> web.Response:
    record = record_or_404(request, api=False)
    return record if isinstance(record, web.Response) else html(film_page(record))


async def api_film(request: web.Request) -> web.Response:
    record = record_or_404(request, api=True)
    return record if isinstance(record, web.Response) else json_response({k: v for k, v in record.items()
                                                                          if k not in ("watch", "spec_text")})


# --- live ---------------------------------------------------------------------------------------------

async def event_stream(request: web.Request, signature: Callable[[], Any], payload: Callable[[], Any],
                       moving: Callable[[Any], bool]) -> web.StreamResponse:
    """Send ``payload()`` now and again whenever ``signature()`` changes (or every RESEND_S while
    ``moving(payload)``), until the client goes or the server stops."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    closing = request.app[CLOSING]
    loop = asyncio.get_running_loop()
    last_sign, last_sent, last_ping = object(), 0.0, loop.time()
    try:
        while not closing.is_set():
            sign, now = signature(), loop.time()
            data = None
            if sign != last_sign or (now - last_sent >= RESEND_S and moving(data := payload())):
                data = payload() if data is None else data
                await response.write(f"data: {to_json(data)}\n\n".encode())
                last_sign, last_sent, last_ping = sign, now, now
            elif now - last_ping >= PING_S:
                await response.write(b": ping\n\n")
                last_ping = now
            try:
                await asyncio.wait_for(closing.wait(), POLL_S)
            except asyncio.TimeoutError:
                pass
    except (ConnectionResetError, ConnectionError, NoSuchFilm):
        pass  # the page was closed, or the film's folder removed
    return response


async def index_events(request: web.Request) -> web.StreamResponse:
    films = films_of(request)

    def signature() -> Any:
        return tuple((name, films.signature(name)) for name in films.names())

    return await event_stream(request, signature, lambda: {"films": films.summaries()},
                              lambda data: any(f["state"] == "rendering" for f in data["films"]))


async def film_events(request: web.Request) -> web.StreamResponse:
    films, name = films_of(request), request.match_info["name"]
    try:
        films.folder(name)
    except NoSuchFilm as exc:
        return json_response({"error": str(exc)}, 404)
    return await event_stream(request, lambda: films.signature(name), lambda: live(films.film(name)),
                              lambda data: data["state"] == "rendering")


# --- files --------------------------------------------------------------------------------------------

def inside(root: Path, relative: str) -> Optional[Path]:
    """``root/relative`` when it is a file inside ``root`` (links followed), else None.

    ``relative`` (already percent-decoded by the router) must be plain names: no empty, ``.``,
    ``..`` or hidden (``.name``) part, no backslash or NUL.
    """
    parts = relative.split("/")
    if any(not p or p.startswith(".") or "\\" in p or "\0" in p for p in parts):
        return None
    try:
        path = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def film_file(request: web.Request) -> web.StreamResponse:
    films = films_of(request)
    try:
        folder = films.folder(request.match_info["name"]).resolve()
    except NoSuchFilm:
        raise web.HTTPNotFound()
    path = inside(folder, request.match_info["path"])
    if path is None or not path.is_relative_to(films.out):
        raise web.HTTPNotFound()
    headers = {"X-Content-Type-Options": "nosniff"}
    if path.name in (MANIFEST_NAME, SPEC_NAME) or path.suffix in (".json", ".jsonl", ".yaml"):
        headers["Content-Type"] = "text/plain; charset=utf-8"  # shown as text, never run as a page
    if path.suffix == ".vtt":
        headers["Content-Type"] = "text/vtt; charset=utf-8"
    return web.FileResponse(path, headers=headers)


async def static(request: web.Request) -> web.StreamResponse:
    path = inside(STATIC, request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def frames_zip(request: web.Request) -> web.StreamResponse:
    """Every frame on disk, scene by scene (scenes/NNN/frame_KKKKK.png), stored (PNGs are compressed)."""
    films = films_of(request)
    name = request.match_info["name"]
    try:
        folder = films.folder(name)
        record = films.film(name)
    except NoSuchFilm:
        raise web.HTTPNotFound()

    def build() -> Any:
        spool = tempfile.SpooledTemporaryFile(max_size=64 << 20)
        with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
            for scene in record["scenes"]:
                for frame in frames_on_disk(folder, scene["index"]):
                    relative = frame_path(Path(), scene["index"], frame).as_posix()
                    path = inside(folder.resolve(), relative)
                    if path is not None:
                        archive.write(path, f"{name}/{relative}")
        size = spool.tell()
        spool.seek(0)
        return spool, size

    spool, size = await asyncio.get_running_loop().run_in_executor(None, build)
    response = web.StreamResponse(headers={"Content-Type": "application/zip", "Content-Length": str(size),
                                           "Content-Disposition": f"attachment; filename=\"{name}-frames.zip\""})
    await response.prepare(request)
    with spool:
        while chunk := spool.read(1 << 20):
            await response.write(chunk)
    await response.write_eof()
    return response


# --- running it -----------------------------------------------------------------------------------------

def check_out(out: str | Path) -> Path:
    """OUT as a folder of films, or one line saying what it is instead."""
    path = Path(out).expanduser()  # farm submit's films are in ~/farm-films on the head node
    if not path.exists():
        raise InputError(f"{out}: no such folder (farm render --out writes films there; default: out)")
    if not path.is_dir():
        raise InputError(f"{out}: not a folder")
    if (path / SPEC_NAME).is_file() or (path / MANIFEST_NAME).is_file():
        raise InputError(f"{out}: is one film's folder; serve the folder it is in ({path.resolve().parent})")
    return path.resolve()


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


async def warm(films: Films) -> None:
    """Read every film once as the server starts, one at a time between requests, so that the first
    page a person opens is answered from what is already read (a 1,000-scene film's film.yaml takes
    tens of milliseconds to parse)."""
    for name in films.names():
        try:
            films.film(name)
        except Exception:  # a film that cannot be read says so when its page is asked for
            pass
        await asyncio.sleep(0)


class Server:
    """``farm serve`` on ``host``:``port`` (0: a free one) in a thread of its own, with its own event loop.

    ``start()`` returns once it listens (``url`` then says where) or raises InputError (port in
    use, a host that cannot be bound); ``stop()`` ends it. ``farm serve`` waits on it; tests and
    the benchmark use it beside other work.
    """

    def __init__(self, out: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
        if not 0 <= port <= 65535:
            raise InputError(f"--port {port}: a port is 0 (any free one) to 65535")
        self.out, self.host, self.port = check_out(out), host, port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="farm-serve", daemon=True)
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.runner: Optional[web.AppRunner] = None
        self.stopped: Optional[asyncio.Event] = None
        self.warming: Optional[asyncio.Task] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def _start(self) -> None:
        app = make_app(self.out)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port, reuse_address=False)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"port {self.port} on {self.host} is in use; choose another with --port") from exc
            raise InputError(f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc})") from exc
        self.port = self.runner.addresses[0][1]  # the port given, or the free one chosen
        self.warming = asyncio.get_running_loop().create_task(warm(app[FILMS]))


    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # given to start()'s caller
            self.error = exc
            self.ready.set()
            return
        self.stopped = asyncio.Event()
        self.ready.set()
        self.loop.run_until_complete(self.stopped.wait())
        if self.warming is not None:
            self.warming.cancel()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def start(self) -> "Server":
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self.stopped is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(timeout=10)

    def wait(self) -> None:
        while self.thread.is_alive():
            self.thread.join(timeout=0.5)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(out: str | Path, host: str = "127.0.0.1", port: int = 8000,
          say: Callable[[str], None] = lambda m: None) -> None:
    """``farm serve``: serve OUT's films until interrupted."""
    server = Server(out, host, port).start()
    say(f"farm serve: films in {server.out} at {server.url}/ (read-only; Ctrl-C stops)")
    if not is_loopback(host):
        say(f"farm serve: listening on {host}, not only on this machine: anyone who can reach port {server.port} "
            "sees these films (there is no login)")
    try:
        server.wait()
    finally:
        server.stop()

