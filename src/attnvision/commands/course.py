"""``attnvision figures``: the course's figures from the library's own functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "figures", "write the course's figures (positional encoding, "
                                         "P.P^T, patch grid, attention maps) as PNG files")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--image", help="image to cut into patches (default: built-in astronaut)")
    p.add_argument("--patch-size", type=int, default=16, help="patch width P in pixels")
    p.add_argument("--size", type=int, default=224,
                   help="the image is centre-cropped and resized to SIZE x SIZE")
    common(p, figures)


def figures(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.data.images import load_image
    from attnvision.files import ensure_dir
    from attnvision.viz.course import check_geometry, course_figures

    check_geometry(args.patch_size, args.size)
    ensure_dir(args.out)
    if args.image is None:
        print("attnvision: using the built-in sample image 'astronaut' (pass --image for yours)",
              file=sys.stderr)
    image = None if args.image is None else load_image(args.image)
    files = course_figures(args.out, image=image, patch_size=args.patch_size, size=args.size,
                           progress=not args.quiet)
    return {"command": "figures", "out": str(Path(args.out)),
            "files": {k: str(v) for k, v in files.items()}}
