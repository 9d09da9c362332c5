"""The web app's prompt latency: a loopback load test and click-to-mask in a real browser.

    python benchmarks/web_latency.py                      # vit_b prompt path, ~1 min
    python benchmarks/web_latency.py --checkpoint sam_vit_b_01ec64.pth   # real weights
    python benchmarks/web_latency.py --requests 400 --clients 40 --clicks 50 --json

The prompt path (prompt encoder, mask decoder, upsampling to the image, PNG encoding) is the
same for every SAM size: what differs between vit_b, vit_l and vit_h is the image encoder,
which runs once per image, before any prompt. Without ``--checkpoint`` the script therefore
builds a SAM with the full vit_b prompt path (1024 px input, 64 x 64 x 256 embeddings, the
full decoder) and a small encoder (2 blocks, 64 wide), seeded, so the figures are the real
vit_b's prompt figures without a 375 MB download or a minute of encoding.

1. A real uvicorn server on a free 127.0.0.1 port (in this process, another thread) gets the
   image (default: scikit-image's coffee, 600 x 400) and embeds it.
2. Load test: ``--requests`` point prompts from ``--clients`` concurrent keep-alive
   connections, each timed from send to the answer's last byte (three masks as PNG).
3. Browser: Debian's headless Chromium (Playwright) opens the page, uploads the image, and
   clicks ``--clicks`` points one after another (clearing in between); the page times each
   from pointer-up to the animation frame that shows the mask (performance.now()).

Percentiles are of all requests / clicks after a warm-up. Progress goes to stderr; the last
lines (or one JSON document with ``--json``) are the figures, with the machine's load average
before and after: on 2 cores, another busy process doubles every figure, so rerun then.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from web_helpers import (  # noqa: E402
    chromium,
    chromium_missing,
    click_image,
    click_to_mask_latencies,
    coffee_png,
    http_upload,
    live_server,
    load_test,
    make_app,
    open_image,
    percentile,
    until,
)

from attnvision.sam import build_sam  # noqa: E402
from attnvision.sam.checkpoints import save_sam  # noqa: E402

# The vit_b prompt path with a cheap encoder (the encoder does not touch prompts).
VIT_B_PROMPT_PATH = {"img_size": 1024, "embed_dim": 64, "depth": 2, "num_heads": 2,
                     "global_attn_indexes": [1], "window_size": 14}


def vit_b_prompt_path_checkpoint(path: Path) -> Path:
    build = dict(VIT_B_PROMPT_PATH)
    img_size = build.pop("img_size")
    torch.manual_seed(0)
    model = build_sam("vit_b", img_size=img_size,
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in build.items()})
    return save_sam(model, path, "vit_b", build=VIT_B_PROMPT_PATH)


def log(message: str) -> None:
    print(f"web_latency: {message}", file=sys.stderr, flush=True)


def browser_latency(url: str, image: Path, clicks: int) -> dict[str, Any]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        open_image(page, url, image, timeout=300)
        width, height = page.evaluate("[window.attnvision.state.image.width, "
                                      "window.attnvision.state.image.height]")
        for x, y in [(0.5, 0.5), (0.3, 0.6), (0.7, 0.4)]:  # warm-up
            page.keyboard.press("c")
            click_image(page, x * width, y * height)
            until(page, "window.attnvision.idle() && window.attnvision.maskPixels() > 0")
        latencies = click_to_mask_latencies(page, clicks, (width, height))
        fetch = page.evaluate("window.attnvision.metrics.fetchMs")[-clicks:]
        decoder = page.evaluate("window.attnvision.metrics.decoderMs")[-clicks:]
    return {"clicks": clicks, "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95), "max_ms": max(latencies),
            "request_p50_ms": percentile(fetch, 50), "decoder_p50_ms": percentile(decoder, 50),
            "latencies_ms": latencies}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a SAM checkpoint (default: the vit_b prompt "
                                             "path with a small encoder)")
    parser.add_argument("--image", help="image file (default: scikit-image's coffee)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="attnvision-web-latency-") as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else (
            vit_b_prompt_path_checkpoint(tmp / "vit_b_prompt_path.safetensors"))
        image = Path(args.image) if args.image else coffee_png(tmp / "coffee.png")
        app = make_app(tmp, checkpoint)
        result: dict[str, Any] = {
            "model": app.state.engine.loaded.describe(),
            "checkpoint": str(args.checkpoint or "vit_b prompt path, small encoder"),
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}
        load_before = os.getloadavg()[0]
        with live_server(app) as url:
            log(f"server at {url}; embedding {image.name}")
            t = time.perf_counter()
            image_id = http_upload(url, image, timeout=600)
            result["embed_s"] = round(time.perf_counter() - t, 2)
            load_test(url, image_id, requests=10, clients=1)  # warm-up
            log(f"load test: {args.requests} requests from {args.clients} clients")
            load = load_test(url, image_id, requests=args.requests, clients=args.clients,
                             timeout=120)
            if load["errors"]:
                log(f"{len(load['errors'])} errors, e.g. {load['errors'][0]}")
            result["load"] = {k: v for k, v in load.items() if k != "latencies_ms"}
            result["load"]["errors"] = len(load["errors"])
            serial = load_test(url, image_id, requests=50, clients=1, timeout=120)
            result["one_client"] = {"p50_ms": serial["p50_ms"], "p95_ms": serial["p95_ms"]}
            if not args.no_browser:
                missing = chromium_missing()
                if missing:
                    log(f"no browser figures: {missing}")
                else:
                    log(f"browser: {args.clicks} clicks")
                    browser = browser_latency(url, image, args.clicks)
                    result["browser"] = {k: v for k, v in browser.items()
                                         if k != "latencies_ms"}

    # Other processes on a small machine slow every figure: say how busy it was.
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        load = result["load"]
        print(f"model: {result['model']}; {result['machine']}; load average "
              f"{result['load_average'][0]} before, {result['load_average'][1]} after")
        print(f"embedding: {result['embed_s']} s")
        print(f"load test: {load['requests']} prompts from {load['clients']} clients in "
              f"{load['seconds']:.1f} s ({load['per_second']:.0f}/s), {load['errors']} errors:"
              f" p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms")
        one = result["one_client"]
        print(f"one client, 50 prompts: p50 {one['p50_ms']:.1f} ms, p95 {one['p95_ms']:.1f} ms")
        if "browser" in result:
            b = result["browser"]
            print(f"browser click-to-mask, {b['clicks']} clicks: p50 {b['p50_ms']:.1f} ms, "
                  f"p95 {b['p95_ms']:.1f} ms, max {b['max_ms']:.1f} ms "
                  f"(of which the request p50 {b['request_p50_ms']:.1f} ms, the decoder p50 "
                  f"{b['decoder_p50_ms']:.1f} ms)")
    return 1 if result["load"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
