"""The ``farm`` command: parses arguments, builds the spec, calls the library. Nothing else.

Exit codes: 0 success, 2 bad input (one line naming the problem), 1 a render
that failed after its retries, 130 interrupted.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from typing import Optional, Sequence

from farm import __version__
from farm.errors import FarmError, printable
from farm.spec import PRESETS_DIR, RenderSpec, preset_names

# Where farm render and farm film put a film's folder when --out is not given.
FILMS_DIR = "out"


def preset_summary(name: str) -> str:
    """A preset in a few words: the first sentence of its file's opening comment, less the name."""
    header = []
    for line in (PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = " ".join(header).removeprefix(f"{name}:").strip()
    return re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")


@functools.cache
def preset_help() -> str:
    """``--preset``'s help, the same on every command: the presets and what each is, from farm/presets."""
    listing = "; ".join(f"{name}: {preset_summary(name)}" for name in preset_names())
    return (f"named defaults (farm/presets/NAME.yaml), which the spec overrides: {listing} "
            f"(default: the spec's render.preset, else {RenderSpec.preset})")


def add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", metavar="NAME", help=preset_help())


def add_overrides(parser: argparse.ArgumentParser, text: str, metavar: str = "KEY=VALUE") -> None:
    """``--set KEY=VALUE``, repeatable: spec fields over the file (see farm.spec.apply_override)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar,
                        help=f"{text} (repeatable)")
    parser.add_argument("--trust-spec-endpoints", action="store_true",
                        help="send API keys to the servers the spec names (llm.base_url, video.speech_base_url); "
                             "without it a key goes only to a server named on the command line or in the "
                             "environment ($OPENAI_BASE_URL, $FARM_TRUSTED_ENDPOINTS), or to OpenAI's")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="farm",
        description="A render farm for AI-made short films: story -> scenes -> Big Sleep on Ray -> film.mp4",
    )
    parser.add_argument("--version", action="version", version=f"farm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    render = commands.add_parser(
        "render", help="render a film spec into out/<film>/film.mp4",
        description="Render every scene of FILM.yaml on a Ray cluster and stitch the film. "
                    "Scenes already rendered into the same folder are kept, not rendered again.")
    render.add_argument("spec", metavar="FILM.yaml", help="the film spec")
    add_preset(render)
    render.add_argument("--out", default=FILMS_DIR,
                        help="folder the film's folder goes in (default: %(default)s), or a film store URI "
                             "(s3://bucket/films, gs://..., file:///shared/films)")
    add_overrides(render, "override a spec field, e.g. --set render.cutouts=16")
    render.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    render.add_argument("--quiet", action="store_true", help="print only the film's path")
    render.add_argument("--resume", action="store_true",
                        help="continue the film already in --out (say what is done and part-done); "
                             "refuse a folder holding no film")
    render.add_argument("--rerender-changed", action="store_true",
                        help="accept a spec that differs from the film in --out: render again the scenes "
                             "the changes touch (every changed field is listed)")
    render.add_argument("--progress", choices=["auto", "bar", "plain", "json"], default="auto",
                        help="auto: a live bar in a terminal, plain lines otherwise; json: JSON lines on stdout")
    render.set_defaults(handler=cmd_render)

    # --- Ray Jobs ------------------------------------------------------------------------------
    from farm.driver.submit import DEFAULT_OUT as JOBS_FILMS_DIR  # light: no Ray until a job is sent

    dashboard = dict(default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                     help="the Ray dashboard's job server (default: $RAY_API_SERVER_ADDRESS, else "
                          "http://127.0.0.1:8265; reach a remote one through an ssh tunnel)")
    submit = commands.add_parser(
        "submit", help="render a film on a Ray cluster as a Ray Job",
        description="Resolve FILM.yaml here and submit a Ray Job that renders it on the cluster "
                    "(farm render --address auto there). Prints the job id.")
    submit.add_argument("spec", metavar="FILM.yaml", help="the film spec")
    submit.add_argument("--address", **dashboard)
    add_preset(submit)
    add_overrides(submit, "override a spec field")
    submit.add_argument("--out", default=JOBS_FILMS_DIR,
                        help="the film store on the cluster's head node (default: %(default)s)")
    submit.set_defaults(handler=cmd_submit)
    status = commands.add_parser("status", help="the status of a farm job, or of every farm job")
    status.add_argument("job", nargs="?", metavar="JOB", help="a job id from farm submit")
    status.add_argument("--address", **dashboard)
    status.set_defaults(handler=cmd_status)
    logs = commands.add_parser("logs", help="a farm job's output")
    logs.add_argument("job", metavar="JOB", help="a job id from farm submit")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--address", **dashboard)
    logs.set_defaults(handler=cmd_logs)
    stop = commands.add_parser("stop", help="stop a farm job (what it rendered is kept)")
    stop.add_argument("job", metavar="JOB", help="a job id from farm submit")
    stop.add_argument("--address", **dashboard)
    stop.set_defaults(handler=cmd_stop)

    check = commands.add_parser(
        "check", help="validate a film spec and print it resolved",
        description="Load FILM.yaml with its preset and overrides, check it, and print the resolved spec.")
    check.add_argument("spec", metavar="FILM.yaml", help="the film spec")
    add_preset(check)
    add_overrides(check, "override a spec field")
    check.set_defaults(handler=cmd_check)

    stitch = commands.add_parser(
        "stitch", help="stitch a rendered film again with other video settings",
        description="Join the frames already rendered in FILM_DIR into film.mp4 again, with other transition, "
                    "subtitle, narration or encoding settings (--set video.KEY=VALUE). Renders nothing; "
                    "the frames are only read.")
    stitch.add_argument("film_dir", metavar="FILM_DIR", help="a film's folder, e.g. out/yeti-tardigrade")
    add_overrides(stitch, "override a video setting, e.g. --set video.transition=cut", metavar="video.KEY=VALUE")
    stitch.add_argument("--quiet", action="store_true", help="print only the film's path")
    stitch.set_defaults(handler=cmd_stitch)

    story = commands.add_parser(
        "story", help="write candidate stories from a seed phrase and save the chosen one as a film spec",
        description="Ask the LLM (llm section; any OpenAI-compatible server) for candidate stories from PHRASE, "
                    "save each in FILM.candidates/, show them, and write the chosen one into FILM.yaml.")
    story.add_argument("phrase", metavar="PHRASE", help='the seed phrase, e.g. "Yeti Tardigrade"')
    story.add_argument("--candidates", type=int, metavar="N", help="stories to write (default: llm.candidates)")
    story.add_argument("--pick", type=int, metavar="K",
                       help="choose candidate K (a saved one if there is one) instead of being asked")
    story.add_argument("--new", action="store_true", help="write new candidates even when some are saved")
    story.add_argument("--out", metavar="FILM.yaml", help="the film spec to write (default: <film>.yaml)")
    story.add_argument("--force", action="store_true", help="replace the film spec --out names when it exists")
    add_overrides(story, "a spec field for the new film, e.g. --set llm.model=llama3.1")
    story.set_defaults(handler=cmd_story)

    plan = commands.add_parser(
        "plan", help="split a film spec's story into scenes (LLM, or offline)",
        description="Split story.text of FILM.yaml into scenes (narration, CLIP prompt, duration) and write them "
                    "into FILM.yaml, or into --out.")
    plan.add_argument("spec", metavar="FILM.yaml", help="the film spec holding story.text")
    plan.add_argument("--out", metavar="PLANNED.yaml", help="write here instead of changing FILM.yaml")
    plan.add_argument("--force", action="store_true", help="plan again when the spec already has scenes")
    add_overrides(plan, "override a spec field, kept in the written file")
    plan.set_defaults(handler=cmd_plan)

    film = commands.add_parser(
        "film", help="seed phrase -> story -> scenes -> film.mp4, in one command",
        description="Write stories from PHRASE, choose one, plan its scenes, save them in out/<film>/film.yaml, "
                    "render and stitch. Run again to continue the same film without the LLM.")
    film.add_argument("phrase", metavar="PHRASE", help='the seed phrase, e.g. "Yeti Tardigrade"')
    add_preset(film)
    film.add_argument("--pick", type=int, metavar="K", help="choose story K instead of being asked")
    film.add_argument("--candidates", type=int, metavar="N", help="stories to write (default: llm.candidates)")
    film.add_argument("--new", action="store_true", help="write new candidates even when some are saved")
    film.add_argument("--out", default=FILMS_DIR, help="folder the film's folder goes in (default: %(default)s)")
    add_overrides(film, "override a spec field, e.g. --set video.fps=8")
    film.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    film.add_argument("--quiet", action="store_true", help="print only the film's path")
    film.set_defaults(handler=cmd_film)

    serve = commands.add_parser(
        "serve", help="a web page to watch films being made under OUT, and to play them",
        description="Serve every film folder under OUT (read-only): an index of the films, a page per film "
                    "(frame bar, newest frames, story, scenes, spec, the finished film with its subtitles), "
                    "live while renders write into OUT, and a JSON API (/api/films, /api/films/NAME).")
    serve.add_argument("out", nargs="?", default=FILMS_DIR, metavar="OUT",
                       help="the folder the films' folders are in, as farm render --out (default: %(default)s)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s, this machine only; reach it from "
                            "elsewhere through an ssh tunnel)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s; 0: a free one)")
    serve.set_defaults(handler=cmd_serve)

    weights = commands.add_parser(
        "weights", help="fetch or check the pretrained weights a preset or film needs",
        description="Pretrained CLIP and BigGAN weights: `fetch` downloads them (where there is internet) into "
                    "the libraries' caches, or into a folder to stage on offline machines; `check` says what "
                    "is present and where, without the network.")
    actions = weights.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("fetch", "download the weights (into the caches, or --to DIR)"),
                       ("check", "say which weights are on this machine and where (no network)")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("spec", nargs="?", metavar="FILM.yaml", help="the film spec (default: the preset alone)")
        add_preset(action)
        add_overrides(action, "override a spec field, e.g. --set models.cache_dir=/weights")
        if name == "fetch":
            action.add_argument("--to", metavar="DIR", help="also copy the weights here, ready to stage")
        action.set_defaults(handler=cmd_weights)
    return parser


def _say(message: str) -> None:
    print(printable(message), file=sys.stderr, flush=True)


def _terminal_ask():
    """A prompt on the terminal, or None when there is none to ask at (never prompt without one)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None

    def ask(question: str) -> str:
        print(printable(question), end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    return ask


def cmd_story(args: argparse.Namespace) -> int:
    from farm.writing.steps import write_story

    path = write_story(args.phrase, out=args.out, candidates=args.candidates, pick=args.pick,
                       overrides=args.overrides, ask=_terminal_ask(), say=_say, new=args.new, force=args.force)
    print(path)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from farm.writing.steps import plan_file

    print(plan_file(args.spec, out=args.out, overrides=args.overrides, force=args.force, say=_say))
    return 0


def cmd_film(args: argparse.Namespace) -> int:
    from farm.film import make_film

    say = (lambda message: None) if args.quiet else _say
    ask = _terminal_ask()
    # Candidates are shown even with --quiet when the user is to choose among them.
    result = make_film(args.phrase, out=args.out, preset=args.preset, pick=args.pick, candidates=args.candidates,
                       overrides=args.overrides, address=args.address, ask=ask, say=say, new=args.new,
                       show_to=_say if ask and args.pick is None else say)
    say(f"{result.frames} frames, {result.scenes_rendered} scene(s) rendered in {result.seconds:.1f}s")
    print(result.video)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from farm.driver.cluster import start_in_background
    from farm.driver.progress import reporter
    from farm.film import render_film
    from farm.folder.layout import SPEC_NAME, VIDEO_NAME
    from farm.folder.remote import is_uri
    from farm.spec import load_spec

    spec = load_spec(args.spec, preset=args.preset, overrides=args.overrides)
    # Ray's cluster starts while the film is planned, its cut made and its store opened; not for a
    # film already in its local folder, which may need no render at all.
    on_disk = not is_uri(args.out) and (Path(args.out).expanduser() / spec.slug / SPEC_NAME).is_file()
    cluster = None if on_disk else start_in_background(args.address)
    report = reporter(args.progress, quiet=args.quiet)
    try:
        result = render_film(spec, out=args.out, address=args.address,
                             progress=report.message if report else None,
                             events=report.event if report else None,
                             resume=args.resume, rerender_changed=args.rerender_changed)
    except BaseException:
        if cluster is not None:
            cluster.abandon()  # the error is told now, not after Ray's start
        raise
    finally:
        if cluster is not None:
            cluster.close()  # a start the render never took (nothing left to render) is stopped
        if report:
            report.close()
    video = f"{result.location}/{VIDEO_NAME}" if is_uri(result.location) else str(result.video)
    if report and args.progress == "json":
        report.event({"event": "done", "video": video, "frames": result.frames,
                      "scenes_rendered": result.scenes_rendered, "seconds": round(result.seconds, 3)})
        return 0
    if report:
        report.message(f"{result.frames} frames, {result.scenes_rendered} scene(s) rendered in {result.seconds:.1f}s")
    print(video)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from farm.driver.submit import submit
    from farm.spec import load_spec

    spec = load_spec(args.spec, preset=args.preset, overrides=args.overrides)
    print(submit(spec, args.address, out=args.out))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from farm.driver.submit import status

    for job in status(args.address, args.job):
        print(f"{job['job']}  {job['status']:<9}  {job['film']}  {job['message']}".rstrip())
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from farm.driver.submit import logs

    for text in logs(args.address, args.job, follow=args.follow):
        print(text, end="", flush=True)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from farm.driver.submit import stop

    print(stop(args.address, args.job))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from pathlib import Path

    from farm.render import weights

    models, preset = weights.spec_models(args.spec, args.preset, args.overrides)
    if args.action == "check":
        lines, complete = weights.report(models)
        print("\n".join(lines))
        return 0 if complete else 1
    for item, path in weights.fetch(models, preset, Path(args.to) if args.to else None):
        if item.kind != "builtin":
            print(f"{item.field}: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from farm.serve.app import serve

    try:
        serve(args.out, host=args.host, port=args.port, say=_say)
    except KeyboardInterrupt:
        _say("farm serve: stopped")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from farm.spec import load_spec
    from farm.writing.plan import plan_film

    spec = plan_film(load_spec(args.spec, preset=args.preset, overrides=args.overrides))
    print(spec.to_yaml(), end="")
    return 0


def cmd_stitch(args: argparse.Namespace) -> int:
    from farm.cutting.stitch import stitch_film

    def progress(message: str) -> None:
        print(printable(message), file=sys.stderr, flush=True)

    result = stitch_film(args.film_dir, args.overrides, progress=None if args.quiet else progress)
    print(result.video)
    return 0


def trust_named_endpoints(args: argparse.Namespace, environ: dict[str, str]) -> None:
    """Servers the user names here (``--set llm.base_url=URL``) may get API keys (farm/keys.py)."""
    from farm.keys import TRUST_SPEC_ENV, trust_endpoint

    for item in getattr(args, "overrides", None) or []:
        key, _, value = item.partition("=")
        if key.strip() in ("llm.base_url", "video.speech_base_url") and value.strip():
            trust_endpoint(value, environ)
    if getattr(args, "trust_spec_endpoints", False):
        environ[TRUST_SPEC_ENV] = "1"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from farm.keys import TRUST_SPEC_ENV, TRUSTED_ENV

    saved = {name: os.environ.get(name) for name in (TRUSTED_ENV, TRUST_SPEC_ENV)}
    trust_named_endpoints(args, os.environ)
    try:
        return args.handler(args)
    except FarmError as exc:
        print(f"farm: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("farm: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    finally:
        for name, value in saved.items():  # what this command trusted ends with it (main runs in tests too)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
