"""The ``farm`` command: parses arguments, builds the spec, calls the library. Nothing else.

Exit codes: 0 success, 2 bad input (one line naming the problem), 1 a render
that failed after its retries, 130 interrupted.
"""

from __future__ import annotations

import argparse
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
    render.add_argument("--out", default="out", help="folder the film's folder goes in (default: out)")
    render.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a spec field, e.g. --set render.cutouts=16 (repeatable)")
    render.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    render.add_argument("--quiet", action="store_true", help="print only the film's path")
    render.set_defaults(handler=cmd_render)

    check = commands.add_parser(
        "check", help="validate a film spec and print it resolved",
        description="Load FILM.yaml with its preset and overrides, check it, and print the resolved spec.")
    check.add_argument("spec", metavar="FILM.yaml", help="the film spec")
    check.add_argument("--preset", help="named defaults: tiny, draft, final")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a spec field (repeatable)")
    check.set_defaults(handler=cmd_check)

    stitch = commands.add_parser(
        "stitch", help="stitch a rendered film again with other video settings",
        description="Join the frames already rendered in FILM_DIR into film.mp4 again, with other transition, "
                    "subtitle, narration or encoding settings (--set video.KEY=VALUE). Renders nothing; "
                    "the frames are only read.")
    stitch.add_argument("film_dir", metavar="FILM_DIR", help="a film's folder, e.g. out/yeti-tardigrade")
    stitch.add_argument("--set", dest="overrides", action="append", default=[], metavar="video.KEY=VALUE",
                        help="override a video setting, e.g. --set video.transition=cut (repeatable)")
    stitch.add_argument("--quiet", action="store_true", help="print only the film's path")
    stitch.set_defaults(handler=cmd_stitch)
    return parser


def cmd_render(args: argparse.Namespace) -> int:
    from farm.driver.render import render_film
    from farm.spec import load_spec

    spec = load_spec(args.spec, preset=args.preset, overrides=args.overrides)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = render_film(spec, out=args.out, address=args.address, progress=None if args.quiet else progress)
    if not args.quiet:
        progress(f"{result.frames} frames, {result.scenes_rendered} scene(s) rendered in {result.seconds:.1f}s")
    print(result.video)
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
        print(message, file=sys.stderr, flush=True)

    result = stitch_film(args.film_dir, args.overrides, progress=None if args.quiet else progress)
    print(result.video)
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
