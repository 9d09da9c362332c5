"""The web app's HTTP API through FastAPI's TestClient: the happy path, every kind of bad
request, the token rule, the memory cache over the disk cache, and a restart."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from web_helpers import TIMEOUT_S, make_app, scene_png, wait_ready, web_checkpoint

from attnvision.cli import main
from attnvision.data.rle import rle_to_mask

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

BASE = "http://127.0.0.1"
W, H = 200, 120


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return web_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_web.safetensors")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return scene_png(tmp_path_factory.mktemp("img") / "scene.png", (H, W))


def upload(client, path_or_bytes, name="scene.png", **kw):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return client.post("/api/images", files={"file": (name, data, "image/png")}, **kw)


@pytest.fixture(scope="module")
def served(tmp_path_factory, checkpoint, scene):
    """A client of an app with one image embedded: (client, image id, app)."""
    root = tmp_path_factory.mktemp("served")
    app = make_app(root, checkpoint)
    with TestClient(app, base_url=BASE) as client:
        r = upload(client, scene)
        assert r.status_code == 201, r.text
        image_id = r.json()["id"]
        wait_ready(client, image_id)
        yield client, image_id, app


def png_mask(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        assert img.format == "PNG" and img.mode == "L" and img.size == (W, H)
        a = np.asarray(img)
    assert set(np.unique(a)) <= {0, 255}
    return a > 0


def predict(client, image_id, **body):
    return client.post(f"/api/images/{image_id}/predict", json=body)


# --- happy path ---------------------------------------------------------------------------------


def test_upload_gives_a_random_id_and_the_embedding_becomes_ready(served, scene):
    client, image_id, app = served
    assert re.fullmatch(r"[0-9a-f]{32}", image_id)
    info = client.get(f"/api/images/{image_id}").json()
    assert info == {"id": image_id, "name": "scene.png", "width": W, "height": H,
                    "state": "ready", "progress": 1.0, "error": None}
    with Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/image").content)) as img:
        assert img.size == (W, H)
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(Image.open(scene)))
    status = client.get("/api/status").json()
    assert status["images"] == 1 and not status["token_required"]
    # The size recorded in the file, and the options that make it a smaller variant.
    assert status["model"].startswith("vit_b (img_size=")
    assert status["model"].endswith("(sam_web.safetensors)")
    assert status["text"] is False  # the small SAM has no text prompts (test_web_text.py)
    assert app.state.engine.encodes == 1


def test_point_prompt_gives_three_masks_with_scores(served):
    client, image_id, _ = served
    r = predict(client, image_id, points=[[100, 60]], labels=[1])
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (W, H)
    assert len(body["masks"]) == 3
    scores = [m["score"] for m in body["masks"]]
    assert body["best"] == int(np.argmax(scores))
    for m in body["masks"]:
        mask = png_mask(m["png"])
        assert mask.sum() == m["area"] > 0
        x, y, w, h = m["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                ys.max() - ys.min() + 1)
        assert m["rle"] is None
    assert body["decoder_ms"] > 0


def test_negative_point_and_box_change_the_mask(served):
    client, image_id, _ = served
    positive = predict(client, image_id, points=[[100, 60]], labels=[1]).json()
    negative = predict(client, image_id, points=[[100, 60], [20, 20]], labels=[1, 0]).json()
    boxed = predict(client, image_id, box=[50, 30, 150, 90]).json()
    both = predict(client, image_id, points=[[100, 60]], labels=[1], box=[50, 30, 150, 90])
    assert both.status_code == 200
    masks = [png_mask(answer["masks"][0]["png"])
             for answer in (positive, negative, boxed, both.json())]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not np.array_equal(masks[i], masks[j]), (i, j)


def test_zoom_gives_the_libraries_windowed_mask(served, scene):
    from attnvision.sam import SamPredictor
    from attnvision.sam.zoom import predict_zoomed
    from attnvision.web.engine import Job

    client, image_id, app = served
    box = [90, 40, 130, 80]
    engine = app.state.engine
    elsewhere = engine._current = Job(progress=0.5)  # another image halfway through encoding
    try:
        body = predict(client, image_id, box=box, multimask=False, zoom=True).json()
    finally:
        engine._current = None
    assert elsewhere.progress == 0.5  # the window's encoding is not that image's progress
    assert len(body["masks"]) == 1 and body["decoder_ms"] > 0
    predictor = SamPredictor(app.state.engine.sam)
    predictor.set_image(np.asarray(Image.open(scene)))
    expected, score, _ = predict_zoomed(predictor, np.array(box))
    assert np.array_equal(png_mask(body["masks"][0]["png"]), expected)
    assert body["masks"][0]["score"] == pytest.approx(score, abs=1e-5)
    plain = predict(client, image_id, box=box, multimask=False).json()
    assert not np.array_equal(png_mask(plain["masks"][0]["png"]), expected)
    # A kept zoomed-in object is exported with the same mask, and its prompt says zoom.
    doc = client.post(f"/api/images/{image_id}/coco", json={
        "objects": [{"box": box, "zoom": True}], "everything": False}).json()
    (annotation,) = doc["annotations"]
    assert annotation["prompt"]["zoom"] is True
    assert np.array_equal(rle_to_mask(annotation["segmentation"]), expected)
    bad = client.post(f"/api/images/{image_id}/coco", json={
        "objects": [{"box": box, "zoom": True, "candidate": 1}]})
    assert bad.status_code == 400 and "candidate must be 0" in bad.json()["detail"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")
def test_single_mask_and_rle_output(served):
    client, image_id, _ = served
    body = predict(client, image_id, points=[[100, 60]], labels=[1], multimask=False,
                   format="both").json()
    assert len(body["masks"]) == 1 and body["best"] == 0
    m = body["masks"][0]
    assert m["rle"]["size"] == [H, W] and isinstance(m["rle"]["counts"], str)
    assert np.array_equal(rle_to_mask(m["rle"]), png_mask(m["png"]))
    from pycocotools import mask as coco_mask

    decoded = coco_mask.decode({"size": m["rle"]["size"], "counts": m["rle"]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), png_mask(m["png"]))
    only_rle = predict(client, image_id, points=[[100, 60]], labels=[1], format="rle").json()
    assert all(x["png"] is None and x["rle"] for x in only_rle["masks"])


def test_segment_everything_and_coco_export(served):
    client, image_id, _ = served
    t = time.perf_counter()
    r = client.post(f"/api/images/{image_id}/everything")
    first_s = time.perf_counter() - t
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["masks"]) >= 1
    with Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))) as overlay:
        assert overlay.mode == "RGBA" and overlay.size == (W, H)
        assert np.asarray(overlay)[..., 3].any()
    areas = [m["area"] for m in body["masks"]]
    assert areas == sorted(areas, reverse=True)
    for m in body["masks"]:
        assert rle_to_mask(m["segmentation"]).sum() == m["area"]
    t = time.perf_counter()
    again = client.post(f"/api/images/{image_id}/everything").json()
    assert again["masks"] == body["masks"] and time.perf_counter() - t < first_s + 1

    coco = client.get(f"/api/images/{image_id}/coco")
    assert coco.status_code == 200
    assert coco.headers["content-disposition"] == 'attachment; filename="scene_coco.json"'
    doc = coco.json()
    assert doc["images"] == [{"id": 1, "file_name": "scene.png", "width": W, "height": H}]
    assert doc["categories"] == [{"id": 1, "name": "object"}]
    assert [a["id"] for a in doc["annotations"]] == list(range(1, body["count"] + 1))
    assert all(a["source"] == "everything" and a["image_id"] == 1 for a in doc["annotations"])

    prompted = predict(client, image_id, points=[[100, 60]], labels=[1]).json()
    doc = client.post(f"/api/images/{image_id}/coco", json={
        "objects": [{"points": [[100, 60]], "labels": [1], "candidate": 2}],
        "everything": True}).json()
    assert len(doc["annotations"]) == 1 + body["count"]
    first = doc["annotations"][0]
    assert first["source"] == "prompt" and first["prompt"]["points"] == [[100.0, 60.0]]
    assert np.array_equal(rle_to_mask(first["segmentation"]),
                          png_mask(prompted["masks"][2]["png"]))
    assert first["score"] == pytest.approx(prompted["masks"][2]["score"], abs=1e-6)
    only_objects = client.post(f"/api/images/{image_id}/coco", json={
        "objects": [{"box": [50, 30, 150, 90]}], "everything": False}).json()
    assert len(only_objects["annotations"]) == 1


def test_the_page_and_its_files_are_served_with_the_hooks(served):
    client, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers[
        "content-security-policy"]
    for hook in ("upload", "image-canvas", "mask-layer", "mask-candidates", "status",
                 "download-png", "download-coco", "text-prompt", "text-submit"):
        assert f'data-testid="{hook}"' in page.text
    assert "http://" not in page.text.replace('http://www.w3.org/2000/svg', "")
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and "http" not in r.text.replace(
            "http://www.w3.org/2000/svg", "")
    docs = client.get("/openapi.json").json()
    assert {"/api/images", "/api/images/{image_id}", "/api/images/{image_id}/predict",
            "/api/images/{image_id}/everything", "/api/images/{image_id}/coco"} <= set(
        docs["paths"])
    # The interactive API page works offline: its scripts come from this server.
    page = client.get("/docs")
    assert page.status_code == 200 and "https://" not in page.text
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


# --- bad requests -------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny compressed row: a
    decompression bomb's shape without its size on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def ico_bytes() -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (16, 16)).save(b, format="ICO")
    return b.getvalue()


@pytest.mark.parametrize("data, status, message", [
    (b"hello, not an image", 415, "not an image"),
    (b"", 400, "empty"),
    (ico_bytes(), 415, "ICO images are not accepted"),
    (png_header_only(10_000, 5_000), 413, "50,000,000 pixels, over the limit of 40,000,000"),
    (png_header_only(100_000, 100_000), 413, "too many pixels to open safely"),
    ("truncated", 400, "corrupt or truncated"),
    ("truncated-jpeg", 400, "the upload is a corrupt or truncated image"),
], ids=["text", "empty", "ico", "too-many-pixels", "bomb", "truncated", "truncated-jpeg"])
def test_bad_uploads_are_refused(served, scene, data, status, message):
    client, _, _ = served
    if data == "truncated":
        data = scene.read_bytes()[:300]
    elif data == "truncated-jpeg":
        jpeg = io.BytesIO()
        Image.open(scene).save(jpeg, format="JPEG")
        data = jpeg.getvalue()[:len(jpeg.getvalue()) // 2]
    before = client.get("/api/status").json()["images"]
    r = upload(client, data)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert ".upload" not in r.json()["detail"]  # no server paths in answers
    assert client.get("/api/status").json()["images"] == before


def test_upload_limits_in_bytes_and_pixels(tmp_path, checkpoint, scene):
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
                    ).save(noisy, format="PNG")
    assert len(noisy.getvalue()) > 5000
    with TestClient(make_app(tmp_path / "bytes", checkpoint, max_upload_bytes=5000),
                    base_url=BASE) as client:
        r = upload(client, noisy.getvalue())
        assert r.status_code == 413 and "over the limit of 5,000 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold while the body streams in
            for _ in range(200):
                yield b"x" * 1024

        r = client.post("/api/images", content=chunks(),
                        headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 413 and "request body is over the limit" in r.json()["detail"]
        r = client.post("/api/images", files={"other": ("a.png", b"x", "image/png")})
        assert r.status_code == 422 and "file" in r.json()["detail"]
        assert list((tmp_path / "bytes" / "data" / "images").iterdir()) == []
    with TestClient(make_app(tmp_path / "pixels", checkpoint, max_pixels=W * H - 1),
                    base_url=BASE) as client:
        r = upload(client, scene)
        assert r.status_code == 413 and f"{W}x{H}" in r.json()["detail"]
        assert list((tmp_path / "pixels" / "data" / "images").iterdir()) == []


@pytest.mark.parametrize("body, status, message", [
    ({"points": [[250, 60]], "labels": [1]}, 400, "outside the 200x120 image"),
    ({"points": [[-1, 60]], "labels": [1]}, 400, "outside"),
    ({"box": [150, 20, 40, 100]}, 400, "x1 < x0"),
    ({"box": [0, 0, 300, 100]}, 400, "extends outside"),
    ({"points": [[10, 10]], "labels": []}, 400, "1 points but 0 labels"),
    ({}, 400, "give a prompt"),
    ({"points": [[10, 10]], "labels": [2]}, 422, "labels.0"),
    ({"points": [[10]], "labels": [1]}, 422, "points.0"),
    ({"points": [["a", 1]], "labels": [1]}, 422, "valid number"),
    ({"points": [[10, 10]] * 65, "labels": [1] * 65}, 422, "at most 64"),
    ({"points": [[10, 10]], "labels": [1], "colour": "red"}, 422, "colour"),
    ({"points": [[10, 10]], "labels": [1], "format": "jpeg"}, 422, "format"),
    ({"box": [50, 30, 150, 90], "zoom": True}, 400, "zoom re-segments a box"),
    ({"points": [[10, 10]], "labels": [1], "multimask": False, "zoom": True}, 400,
     "send a box alone"),
])
def test_bad_prompts_get_a_clear_4xx(served, body, status, message):
    client, image_id, _ = served
    r = predict(client, image_id, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_malformed_json_nan_and_oversized_bodies(served):
    client, image_id, _ = served
    url = f"/api/images/{image_id}/predict"
    json_type = {"content-type": "application/json"}
    r = client.post(url, content=b'{"points": [[1, 2]', headers=json_type)
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON body")
    r = client.post(url, content=b'{"points": [[NaN, 2]], "labels": [1]}', headers=json_type)
    assert r.status_code == 422 and "finite" in r.json()["detail"]
    r = client.post(url, content=b"[1, 2]", headers=json_type)
    assert r.status_code == 422
    big = json.dumps({"points": [[1, 1]], "labels": [1], "pad": "x" * (2 << 20)})
    r = client.post(url, content=big.encode(), headers=json_type)
    assert r.status_code == 413


@pytest.mark.parametrize("image_id", ["0" * 32, "abc", "../../etc/passwd", "A" * 32,
                                      "0" * 31 + "g"])
def test_unknown_or_malformed_ids_are_404(served, image_id):
    client, _, _ = served
    for method, suffix in [("get", ""), ("get", "/image"), ("post", "/predict"),
                           ("post", "/everything"), ("get", "/coco")]:
        kw = {"json": {"points": [[1, 1]], "labels": [1]}} if suffix == "/predict" else {}
        r = getattr(client, method)(f"/api/images/{image_id}{suffix}", **kw)
        assert r.status_code == 404, (method, suffix, r.text)
        assert isinstance(r.json()["detail"], str)


def test_unknown_endpoints_methods_and_hosts(served):
    client, image_id, _ = served
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "no such endpoint" in r.json()["detail"]
    r = client.put(f"/api/images/{image_id}")
    assert r.status_code == 405 and r.json()["detail"]
    r = client.get("/api/status", headers={"host": "evil.example:8000"})
    assert r.status_code == 400 and "evil.example" in r.json()["detail"]
    assert client.get("/api/status", headers={"host": "localhost:8000"}).status_code == 200


def test_prompts_wait_for_the_embedding_and_failures_are_reported(tmp_path, checkpoint, scene):
    app = make_app(tmp_path, checkpoint)
    engine = app.state.engine
    release = threading.Event()
    crash = threading.Event()
    original = engine.disk.set_image

    def slow_set_image(predictor, image):
        assert release.wait(TIMEOUT_S)
        if crash.is_set():
            raise RuntimeError("simulated encoder crash")
        return original(predictor, image)

    engine.disk.set_image = slow_set_image
    with TestClient(app, base_url=BASE) as client:
        image_id = upload(client, scene).json()["id"]
        r = predict(client, image_id, points=[[10, 10]], labels=[1])
        assert r.status_code == 409 and "poll GET" in r.json()["detail"]
        assert client.post(f"/api/images/{image_id}/everything").status_code == 409
        assert client.get(f"/api/images/{image_id}").json()["state"] in ("queued", "encoding")
        release.set()
        wait_ready(client, image_id)
        assert predict(client, image_id, points=[[10, 10]], labels=[1]).status_code == 200

        crash.set()
        broken = upload(client, scene_png(tmp_path / "other.png", (50, 60))).json()["id"]
        deadline = time.monotonic() + TIMEOUT_S
        while (info := client.get(f"/api/images/{broken}").json())["state"] != "failed":
            assert time.monotonic() < deadline, info
            time.sleep(0.05)
        assert info["error"] == "RuntimeError: simulated encoder crash"
        r = predict(client, broken, points=[[10, 10]], labels=[1])
        assert r.status_code == 422 and "could not be embedded" in r.json()["detail"]
        assert predict(client, image_id, points=[[10, 10]], labels=[1]).status_code == 200


def test_without_a_model_the_app_says_how_to_load_one(tmp_path, scene):
    app = make_app(tmp_path, None)
    with TestClient(app, base_url=BASE) as client:
        status = client.get("/api/status").json()
        assert status["model"] is None and status["text"] is False
        assert "--checkpoint sam_vit_b_01ec64.pth" in status["message"]
        assert "No model is loaded" in client.get("/").text
        r = upload(client, scene)
        assert r.status_code == 201 and r.json()["state"] == "unavailable"
        image_id = r.json()["id"]
        for r in (predict(client, image_id, points=[[10, 10]], labels=[1]),
                  client.post(f"/api/images/{image_id}/everything")):
            assert r.status_code == 503
            assert "--checkpoint sam_vit_b_01ec64.pth" in r.json()["detail"]
        assert client.get(f"/api/images/{image_id}/image").status_code == 200


# --- the token rule and CORS -------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_serve_refuses_a_non_loopback_host_without_a_token(host, capsys, monkeypatch):
    monkeypatch.delenv("ATTNVISION_TOKEN", raising=False)
    assert main(["serve", "--host", host, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--token" in err and host in err


def test_the_library_works_without_the_web_extra_and_serve_names_the_install():
    code = ("import sys\n"
            "for name in ('fastapi', 'uvicorn', 'starlette', 'multipart', 'pydantic'):\n"
            "    sys.modules[name] = None  # as if not installed\n"
            "import attnvision, attnvision.sam, attnvision.cli, attnvision.web.engine\n"
            "sys.exit(attnvision.cli.main(['serve']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "fastapi, uvicorn, python-multipart" in err and "pip install 'attnvision[web]'" in err


def test_is_loopback():
    from attnvision.commands.serve import is_loopback

    assert all(map(is_loopback, ["127.0.0.1", "127.5.5.5", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org", ""]))


def test_token_is_checked_on_every_api_call(tmp_path, checkpoint, scene):
    app = make_app(tmp_path, checkpoint, token="s3cret-token", allowed_hosts=None)
    with TestClient(app, base_url="http://0.0.0.0") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            for method, url in [("get", "/api/status"), ("post", "/api/images"),
                                ("get", f"/api/images/{'0' * 32}"),
                                ("post", f"/api/images/{'0' * 32}/predict")]:
                r = getattr(client, method)(url, headers=headers)
                assert r.status_code == 401, (url, headers)
                assert "token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret-token"}
        assert client.get("/api/status", headers=good).json()["token_required"] is True
        image_id = upload(client, scene, headers=good).json()["id"]
        wait_ready(client, image_id, headers=good)
        r = client.post(f"/api/images/{image_id}/predict", headers=good,
                        json={"points": [[10, 10]], "labels": [1]})
        assert r.status_code == 200
        assert client.get("/").status_code == 200  # the page holds no data


def test_cors_only_when_asked(tmp_path, checkpoint):
    origin = {"Origin": "http://tool.example"}
    with TestClient(make_app(tmp_path / "a", checkpoint), base_url=BASE) as client:
        assert "access-control-allow-origin" not in client.get("/api/status",
                                                               headers=origin).headers
    with TestClient(make_app(tmp_path / "b", checkpoint, cors_origins=("http://tool.example",)),
                    base_url=BASE) as client:
        r = client.get("/api/status", headers=origin)
        assert r.headers["access-control-allow-origin"] == "http://tool.example"
        r = client.get("/api/status", headers={"Origin": "http://other.example"})
        assert "access-control-allow-origin" not in r.headers


def test_delete_forgets_the_image(tmp_path, checkpoint, scene):
    app = make_app(tmp_path, checkpoint)
    with TestClient(app, base_url=BASE) as client:
        image_id = upload(client, scene).json()["id"]
        wait_ready(client, image_id)
        assert predict(client, image_id, points=[[100, 60]], labels=[1]).status_code == 200
        assert client.delete(f"/api/images/{image_id}").status_code == 204
        assert image_id not in app.state.engine.memory
        assert not list(app.state.engine.store.directory.glob(f"{image_id}.*"))
        for r in (client.get(f"/api/images/{image_id}"), client.delete(f"/api/images/{image_id}"),
                  predict(client, image_id, points=[[100, 60]], labels=[1]),
                  client.delete("/api/images/..%2F..%2Fetc")):
            assert r.status_code == 404 and "detail" in r.json()


# --- caches and restarts ------------------------------------------------------------------------


def test_memory_bound_evicts_and_disk_cache_reloads_without_encoding(tmp_path, checkpoint):
    # The small model's (1, 256, 16, 16) float32 embedding with its decoder context: image
    # tokens and their positions (2 x 256 x 256), three 128-wide projections, one 256 vector.
    one = 4 * (256 * 16 * 16 + 2 * 256 * 256 + 3 * 256 * 128 + 256)
    app = make_app(tmp_path, checkpoint, cache_bytes=int(one * 1.5))
    engine = app.state.engine
    with TestClient(app, base_url=BASE) as client:
        ids = []
        for i, size in enumerate([(H, W), (90, 70), (64, 64)]):
            ids.append(upload(client, scene_png(tmp_path / f"s{i}.png", size)).json()["id"])
            wait_ready(client, ids[-1])
        assert engine.encodes == 3 and engine.memory.nbytes <= engine.memory.max_bytes
        assert len(engine.memory) == 1 and engine.memory.evictions == 2
        assert ids[0] not in engine.memory
        loads = engine.disk_loads
        r = predict(client, ids[0], points=[[10, 10]], labels=[1])
        assert r.status_code == 200
        assert engine.encodes == 3 and engine.disk_loads == loads + 1
        assert ids[0] in engine.memory and ids[2] not in engine.memory
        info = client.get(f"/api/images/{ids[1]}").json()  # evicted: back from disk
        assert info["state"] in ("queued", "encoding", "ready")
        wait_ready(client, ids[1])
        assert engine.encodes == 3


def test_a_restart_keeps_images_embeddings_and_everything(tmp_path, checkpoint, scene):
    with TestClient(make_app(tmp_path, checkpoint), base_url=BASE) as client:
        image_id = upload(client, scene).json()["id"]
        wait_ready(client, image_id)
        before = predict(client, image_id, points=[[100, 60]], labels=[1]).json()
        everything = client.post(f"/api/images/{image_id}/everything").json()
    app = make_app(tmp_path, checkpoint)  # a new process would see the same folders
    with TestClient(app, base_url=BASE) as client:
        info = client.get(f"/api/images/{image_id}").json()
        assert (info["name"], info["width"], info["height"]) == ("scene.png", W, H)
        after = predict(client, image_id, points=[[100, 60]], labels=[1])
        assert after.status_code == 200
        assert [m["png"] for m in after.json()["masks"]] == [m["png"] for m in before["masks"]]
        assert app.state.engine.encodes == 0
        doc = client.get(f"/api/images/{image_id}/coco").json()
        assert len(doc["annotations"]) == everything["count"]


# --- the command --------------------------------------------------------------------------------


def test_attnvision_serve_starts_answers_and_stops(tmp_path, checkpoint):
    env = {**os.environ, "ATTNVISION_CACHE": str(tmp_path / "cache")}
    env.pop("ATTNVISION_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnvision", "serve", "--checkpoint", str(checkpoint),
         "--port", "0", "--data-dir", str(tmp_path / "data"), "--quiet"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 60
        lines = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            assert line or proc.poll() is None, "".join(lines)
            found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = found and found.group(1)
        assert url, "".join(lines)
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                    status = json.loads(r.read())
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status["model"] and status["images"] == 0
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b'data-testid="image-canvas"' in r.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
