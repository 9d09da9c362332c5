"""``attnvision figures``: the course's figures from the library's own functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


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
