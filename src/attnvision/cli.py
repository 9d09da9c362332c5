"""The ``attnvision`` command: one entry point, one sub-command per verb.

Conventions (shared/DESIGN.md): ``--json`` prints exactly one JSON document on stdout; logs and
progress go to stderr; exit 0 success, 2 bad input (one line, no traceback), 1 unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from attnvision import __version__
from attnvision.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _report(args: argparse.Namespace, result: dict[str, Any], lines: list[str]) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        for line in lines:
            print(line)


def _load_user_image(path: str | None):
    if path is None:
        return None
    from attnvision.data.images import load_image

    return load_image(path)


def cmd_figures(args: argparse.Namespace) -> int:
    from attnvision.files import ensure_dir
    from attnvision.viz.course import check_geometry, course_figures

    check_geometry(args.patch_size, args.size)
    ensure_dir(args.out)
    image = _load_user_image(args.image)
    if image is None:
        _log("attnvision: using the built-in sample image 'astronaut' (pass --image for yours)")
    files = course_figures(args.out, image=image, patch_size=args.patch_size, size=args.size,
                           progress=not args.quiet)
    result = {"command": "figures", "out": str(Path(args.out)),
              "files": {k: str(v) for k, v in files.items()}}
    _report(args, result, [f"wrote {v}" for v in files.values()])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from attnvision.files import ensure_dir
    from attnvision.viz.course import course_figures
    from attnvision.viz.index import write_index

    out = ensure_dir(args.out)
    _log(f"attnvision demo: writing pictures to {out}/")
    files = course_figures(out / "figures", progress=not args.quiet)
    index = write_index(out / "index.html", "attnvision demo", files, base=out)
    result = {"command": "demo", "out": str(out), "index": str(index),
              "files": {k: str(v) for k, v in files.items()}}
    _report(args, result, [*(f"wrote {v}" for v in files.values()),
                           f"open {index} to see them all"])
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON document with the results on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnvision",
                     description="Attention models for image analysis, from patch tokens to "
                                 "Segment Anything.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("figures", help="write the course's figures (positional encoding, "
                                       "P.P^T, patch grid, attention maps) as PNG files")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--image", help="image to cut into patches (default: built-in astronaut)")
    p.add_argument("--patch-size", type=int, default=16, help="patch width P in pixels")
    p.add_argument("--size", type=int, default=224,
                   help="the image is centre-cropped and resized to SIZE x SIZE")
    _add_common(p)
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("demo", help="run every capability on built-in examples and write "
                                    "the pictures with an index.html")
    p.add_argument("--out", default="attnvision-demo", help="output folder")
    _add_common(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except UserError as e:
        print(f"attnvision {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnvision: interrupted", file=sys.stderr)
        return 130
