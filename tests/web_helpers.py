"""Shared pieces of the web app tests: a small SAM that finds objects, apps, a live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sam_helpers import small_sam_checkpoint

from attnvision.sam import Sam
from attnvision.web.config import ServerConfig
from attnvision.web.model import load_model
from attnvision.web.server import bind, create_app

TIMEOUT_S = 30.0


def _confident(model: Sam) -> None:
    """Sharp masks (stable under threshold shifts) and high predicted IoUs, so that segment
    everything's default filters (IoU 0.88, stability 0.95) keep some of the random model's
    masks."""
    for mlp in model.mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(400.0)
    model.mask_decoder.iou_prediction_head.layers[-1].bias.add_(2.0)


def web_checkpoint(path: Path) -> Path:
    return small_sam_checkpoint(path, _confident)


def coffee_png(path: Path) -> Path:
    """scikit-image's coffee cup photo (400 x 600) as a PNG file."""
    import skimage.data

    Image.fromarray(skimage.data.coffee()).save(path)
    return path


def scene_png(path: Path, size: tuple[int, int] = (120, 200)) -> Path:
    """A small synthetic picture: a red rectangle on a dark, slightly noisy background."""
    rng = np.random.default_rng(0)
    img = np.full((*size, 3), 40, np.uint8)
    img[size[0] // 4: 3 * size[0] // 4, size[1] // 4: 3 * size[1] // 4] = (200, 60, 60)
    img += rng.integers(0, 10, img.shape, dtype=np.uint8)
    Image.fromarray(img).save(path)
    return path


def make_app(root: Path, checkpoint: Path | None, **settings: Any):
    """An app with its images in ``root/data`` and its disk cache in ``root/embeddings``."""
    config = ServerConfig(data_dir=root / "data", embedding_dir=root / "embeddings", **settings)
    return create_app(config, load_model(checkpoint, shipped=False))


def wait_ready(client, image_id: str, timeout: float = TIMEOUT_S,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Poll GET /api/images/{id} until its embedding is ready (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get(f"/api/images/{image_id}", headers=headers).json()
        if info["state"] == "ready":
            return info
        assert info["state"] in ("queued", "encoding"), info
        assert time.monotonic() < deadline, f"embedding not ready after {timeout} s: {info}"
        time.sleep(0.05)


@contextmanager
def live_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive(), "the server thread died while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def http_upload(base_url: str, path: Path, timeout: float = TIMEOUT_S) -> str:
    """Upload an image file to a live server (stdlib only); wait until it is embedded; its id."""
    import json
    import secrets
    import urllib.request

    boundary = secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{path.name}\"\r\nContent-Type: image/png\r\n\r\n").encode()
    body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{base_url}/api/images", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        image_id = json.loads(r.read())["id"]
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{base_url}/api/images/{image_id}", timeout=timeout) as r:
            state = json.loads(r.read())["state"]
        if state == "ready":
            return image_id
        assert state in ("queued", "encoding") and time.monotonic() < deadline, state
        time.sleep(0.05)


# --- load and latency measurements (tests and benchmarks/web_latency.py) ------------------------

def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def load_test(base_url: str, image_id: str, requests: int = 200, clients: int = 20,
              timeout: float = TIMEOUT_S, headers: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """``requests`` point prompts from ``clients`` concurrent keep-alive connections.

    Each client sends its share in turn and times each request from send to the last byte
    of the answer. Returns the latencies (ms), the error descriptions and the wall time.
    """
    import http.client
    import json
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlsplit

    request = urllib.request.Request(f"{base_url}/api/images/{image_id}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        info = json.loads(r.read())
    width, height = info["width"], info["height"]
    url = urlsplit(base_url)
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]
    rng = np.random.default_rng(0)
    points = rng.uniform(0.05, 0.95, (requests, 2))

    def client(index: int) -> tuple[list[float], list[str]]:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        latencies: list[float] = []
        errors: list[str] = []
        start_at = sum(per_client[:index])
        try:
            for k in range(per_client[index]):
                x, y = points[start_at + k]
                body = json.dumps({"points": [[float(x * width), float(y * height)]],
                                   "labels": [1]})
                t = time.perf_counter()
                try:
                    conn.request("POST", f"/api/images/{image_id}/predict", body=body,
                                 headers={"Content-Type": "application/json", **(headers or {})})
                    response = conn.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
                    continue
                latencies.append((time.perf_counter() - t) * 1000)
                if response.status != 200:
                    errors.append(f"{response.status}: {payload[:200]!r}")
                elif len(json.loads(payload)["masks"]) != 3:
                    errors.append("an answer without 3 masks")
        finally:
            conn.close()
        return latencies, errors

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - t0
    latencies = [v for lat, _ in results for v in lat]
    errors = [e for _, err in results for e in err]
    return {"requests": requests, "clients": clients, "latencies_ms": latencies,
            "errors": errors, "seconds": wall,
            "p50_ms": percentile(latencies, 50) if latencies else None,
            "p95_ms": percentile(latencies, 95) if latencies else None,
            "per_second": len(latencies) / wall}


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium chromium-driver)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-ci.txt)"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    timeout=TIMEOUT_S * 1000)
        try:
            yield browser
        finally:
            browser.close()


def until(page, expression: str) -> None:
    """Wait for a JavaScript expression to be truthy in the page. (Passed as a function: the
    page's Content-Security-Policy forbids eval, which a bare expression string needs.)"""
    page.wait_for_function(f"() => ({expression})")


def open_image(page, base_url: str, image: Path, timeout: float = TIMEOUT_S) -> None:
    """Load the page, upload ``image`` through the file input, wait for the embedding."""
    page.set_default_timeout(timeout * 1000)
    page.goto(base_url + "/")
    until(page, "window.attnvision && document.querySelector("
                           "'[data-testid=status]').textContent.includes('Open an image')")
    page.set_input_files("[data-testid=upload]", str(image))
    until(page, "document.querySelector('[data-testid=status]').dataset.state "
                           "=== 'ready'")


def click_image(page, x: float, y: float, **kw: Any) -> None:
    """Click the image canvas at image pixel (x, y)."""
    box = page.locator("[data-testid=image-canvas]").bounding_box()
    size = page.evaluate("[window.attnvision.state.image.width, "
                         "window.attnvision.state.image.height]")
    page.click("[data-testid=image-canvas]",
               position={"x": x * box["width"] / size[0], "y": y * box["height"] / size[1]},
               **kw)


def click_to_mask_latencies(page, clicks: int, size: tuple[int, int]) -> list[float]:
    """Clear, click a new point, wait for its mask, ``clicks`` times; the page's own
    pointer-up-to-mask-frame times (ms)."""
    rng = np.random.default_rng(1)
    for x, y in rng.uniform(0.1, 0.9, (clicks, 2)) * np.array(size):
        page.keyboard.press("c")
        until(page, "window.attnvision.idle() && window.attnvision.maskPixels() === 0")
        n = page.evaluate("window.attnvision.metrics.clickToMask.length")
        click_image(page, float(x), float(y))
        until(page, f"window.attnvision.metrics.clickToMask.length > {n}")
    return page.evaluate("window.attnvision.metrics.clickToMask")[-clicks:]
