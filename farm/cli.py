"""The ``farm`` command: parses arguments, builds the spec, calls the library. Nothing else.

Exit codes: 0 success, 2 bad input (one line naming the problem), 1 a render
that failed after its retries, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from farm import __version__
from farm.errors import FarmError


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
    render.add_argument("--preset", help="named defaults: tiny (CPU, random weights), draft, final")
    render.add_argument("--out", default="out",
                        help="folder the film's folder goes in (default: out), or a film store URI "
                             "(s3://bucket/films, gs://..., file:///shared/films)")
    render.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set render.cutouts=16 (repeatable)")
    render.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    render.add_argument("--quiet", action="store_true", help="print only the film's path")
    # issue 9: resume, progress
    render.add_argument("--resume", action="store_true",
                        help="continue the film already in --out (say what is done and part-done); "
                             "refuse a folder holding no film")
    render.add_argument("--rerender-changed", action="store_true",
                        help="accept a spec that differs from the film in --out: render again the scenes "
                             "the changes touch (every changed field is listed)")
    render.add_argument("--progress", choices=["auto", "bar", "plain", "json"], default="auto",
                        help="auto: a live bar in a terminal, plain lines otherwise; json: JSON lines on stdout")
    render.set_defaults(handler=cmd_render)

    # --- Ray Jobs (issue 9) -------------------------------------------------------------------
    dashboard = dict(default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                     help="the Ray dashboard's job server (default: $RAY_API_SERVER_ADDRESS, else "
                          "http://127.0.0.1:8265; reach a remote one through an ssh tunnel)")
    submit = commands.add_parser(
        "submit", help="render a film on a Ray cluster as a Ray Job",
        description="Resolve FILM.yaml here and submit a Ray Job that renders it on the cluster "
                    "(farm render --address auto there). Prints the job id.")
    submit.add_argument("spec", metavar="FILM.yaml", help="the film spec")
    submit.add_argument("--address", **dashboard)
    submit.add_argument("--preset", help="named defaults: tiny, draft, final")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field (repeatable)")
    submit.add_argument("--out", default="~/farm-films",
                        help="the film store on the cluster's head node (default: ~/farm-films)")
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
    check.add_argument("--preset", help="named defaults: tiny, draft, final")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field (repeatable)")
    check.set_defaults(handler=cmd_check)
    return parser


def cmd_render(args: argparse.Namespace) -> int:
    from farm.driver.progress import reporter
    from farm.driver.render import render_film
    from farm.spec import load_spec

    spec = load_spec(args.spec, preset=args.preset, overrides=args.overrides)
    report = reporter(args.progress, quiet=args.quiet)
    try:
        result = render_film(spec, out=args.out, address=args.address,
                             progress=report.message if report else None,
                             events=report.event if report else None,
                             resume=args.resume, rerender_changed=args.rerender_changed)
    finally:
        if report:
            report.close()
    video = f"{result.location}/film.mp4" if "://" in result.location else str(result.video)
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


def cmd_check(args: argparse.Namespace) -> int:
    from farm.spec import load_spec
    from farm.writing.plan import plan_film

    spec = plan_film(load_spec(args.spec, preset=args.preset, overrides=args.overrides))
    print(spec.to_yaml(), end="")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FarmError as exc:
        print(f"farm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("farm: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
