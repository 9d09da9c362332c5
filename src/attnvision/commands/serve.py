"""``attnvision serve``: the click-to-segment web app (FastAPI + uvicorn), one command.

Safe by default: it listens on 127.0.0.1 only. Listening on any other address exposes the
app to the network, so it needs ``--token`` (every API call then carries it as a bearer
token); without one the command refuses to start (exit 2). FastAPI, uvicorn and
python-multipart are the optional ``web`` dependencies: without them the command says which
``pip install`` brings them (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import (
    SAM_SIZES,
    add_command,
    common,
    img_size_option,
    precision_option,
)
from attnvision.errors import UserError

WEB_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "serve", "the click-to-segment web app: open an image in the "
                                       "browser, click objects, download masks (PNG, COCO JSON)")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours "
                                        "(without it the page says how to load one)")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback needs --token")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--token", help="bearer token every API call must carry (or set "
                                   "ATTNVISION_TOKEN)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow this origin to call the API from its pages (repeatable; "
                        "default: none)")
    p.add_argument("--data-dir", help="folder for uploaded images (default: "
                                      "~/.cache/attnvision/web)")
    p.add_argument("--cache-mb", type=float, default=512,
                   help="memory for image embeddings (vit_b: 18 MB each, with the decoder's "
                        "image-only work); older ones are "
                        "read back from the disk cache")
    p.add_argument("--max-upload-mb", type=float, default=25, help="largest upload accepted")
    p.add_argument("--max-megapixels", type=float, default=40,
                   help="largest image accepted, in millions of pixels")
    p.add_argument("--points-per-side", type=int, default=16,
                   help="segment everything prompts an N x N grid of points")
    img_size_option(p)
    precision_option(p)
    common(p, serve)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_web_dependencies() -> None:
    missing = [pkg for mod, pkg in WEB_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise UserError(f"the web app needs {', '.join(missing)}: pip install "
                        "'attnvision[web]'")


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        raise UserError(f"{flag} must be positive, got {value:g}")
    return value


def serve(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.sam.embedding_cache import default_cache_dir

    host = args.host.strip("[]")
    token = args.token or os.environ.get("ATTNVISION_TOKEN") or None
    if not is_loopback(host) and not token:
        raise UserError(f"--host {args.host} would expose the app to the network: add --token "
                        "SECRET (clients send 'Authorization: Bearer SECRET') or use --host "
                        "127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    for flag in ("cache_mb", "max_upload_mb", "max_megapixels"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.points_per_side < 1:
        raise UserError("--points-per-side must be at least 1")
    check_web_dependencies()

    from attnvision.web.config import LOOPBACK_NAMES, ServerConfig
    from attnvision.web.model import NO_MODEL, load_model
    from attnvision.web.server import bind, create_app, run

    data_dir = Path(args.data_dir) if args.data_dir else default_cache_dir() / "web"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the data folder {data_dir} ({e.strerror}): choose "
                        "another --data-dir") from None
    config = ServerConfig(
        data_dir=data_dir, token=token, cors_origins=tuple(args.cors_origin or ()),
        # Without a token only loopback Host headers pass (DNS rebinding); with one, any.
        allowed_hosts=None if token else (*LOOPBACK_NAMES, host.lower()),
        cache_bytes=int(args.cache_mb * 2**20), max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=int(args.max_megapixels * 1e6), points_per_side=args.points_per_side)
    sock = bind(host, args.port)  # before the model loads: a busy port fails fast
    model = load_model(args.checkpoint, args.model, args.precision, img_size=args.img_size)
    app = create_app(config, model)
    port = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    shown = url + (f"#token={token}" if token else "")
    print(f"attnvision serve: {shown}", file=sys.stderr)
    print(f"attnvision serve: model {model.describe()}; images in {data_dir}", file=sys.stderr)
    if model.sam is None:
        print(f"attnvision serve: {NO_MODEL}", file=sys.stderr)
    run(app, sock, log_level="warning" if args.quiet else "info")
    return {"command": "serve", "url": url, "model": model.describe(),
            "data_dir": str(data_dir), "images": app.state.engine.store.count()}
