"""``attnvision segment-all`` end to end on a tiny SAM saved in our format: COCO output,
overlays, resume, a corrupt image among good ones, and bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from sam_helpers import small_sam_checkpoint

from attnvision.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools, numpy 2

FAST = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0", "--quiet"]


def _sharpen(model) -> None:
    for mlp in model.mask_decoder.output_hypernetworks_mlps:
        mlp.layers[-1].weight.mul_(40.0)  # sharp masks, so not all are empty


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_small.safetensors",
                                _sharpen)


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name, size in [("a.png", (120, 200)), ("sub/b.jpg", (90, 70))]:
        img = np.full((*size, 3), 40, np.uint8)
        img[10:60, 20:60] = (200, 60, 60)
        img += rng.integers(0, 10, img.shape, dtype=np.uint8)
        Image.fromarray(img).save(root / name)
    (root / "notes.txt").write_text("not an image, not picked from a folder")
    return root


def run(capsys, *args) -> tuple[int, dict]:
    code = main(["segment-all", *map(str, args), "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_folder_to_coco_json_and_overlays(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, result = run(capsys, folder, "--checkpoint", checkpoint, "--out", out, *FAST)
    assert code == 0 and result["skipped"] == []
    assert result["images"] == result["processed"] == 2 and result["already_done"] == 0
    coco = json.loads((out / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.jpg"]
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    assert len(coco["annotations"]) == result["annotations"] > 0
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    sizes = {i["id"]: (i["height"], i["width"]) for i in coco["images"]}
    for a in coco["annotations"]:
        m = coco_mask.decode(a["segmentation"])  # pycocotools reads our RLE
        assert m.shape == sizes[a["image_id"]] == tuple(a["segmentation"]["size"])
        assert int(m.sum()) == a["area"]
        if a["area"]:
            assert a["bbox"] == coco_mask.toBbox(a["segmentation"]).tolist()
        assert {"score", "stability_score", "point_coords", "crop_box"} <= a.keys()
        assert a["category_id"] == 1 and a["iscrowd"] == 0
    for name, (h, w) in [("a", (120, 200)), ("b", (90, 70))]:
        with Image.open(out / "overlays" / f"{name}.png") as overlay:
            assert overlay.size == (w, h)
        assert (out / "json" / f"{name}.json").exists()
    assert str(out / "coco.json") in result["files"]
    assert not list(out.rglob(".*tmp"))


def test_rerun_skips_done_images_and_redoes_missing_ones(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    run(capsys, folder, "--checkpoint", checkpoint, "--out", out, *FAST)
    first = json.loads((out / "coco.json").read_text())
    code, result = run(capsys, folder, "--checkpoint", checkpoint, "--out", out, *FAST)
    assert code == 0 and result["processed"] == 0 and result["already_done"] == 2
    assert json.loads((out / "coco.json").read_text()) == first
    # An interrupted run leaves no json for the image it was on (only a temporary file).
    (out / "json" / "b.json").unlink()
    (out / "json" / ".b.json.123.tmp").write_text("{half")
    code, result = run(capsys, folder, "--checkpoint", checkpoint, "--out", out, *FAST)
    assert code == 0 and result["processed"] == 1 and result["already_done"] == 1
    assert json.loads((out / "coco.json").read_text()) == first


def test_corrupt_image_is_reported_and_skipped(checkpoint, folder, tmp_path, capsys):
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code = main(["segment-all", str(folder), "--checkpoint", str(checkpoint), "--out",
                 str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 3
    assert "skipped" in captured.err and "broken.png" in captured.err
    assert "skipped" in captured.out and "2 of 3 images" in captured.out
    coco = json.loads((out / "coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["a.png", "b.jpg"]
    code, result = run(capsys, folder, "--checkpoint", checkpoint, "--out", out, *FAST)
    assert code == 3 and [s["path"] for s in result["skipped"]] == [str(folder / "broken.png")]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "missing.pth"], "missing.pth"),
    (["--model", "vit_b"], "pass --checkpoint"),  # only sam_tiny ships
])
def test_bad_checkpoint_exits_2(folder, tmp_path, capsys, args, message):
    code = main(["segment-all", str(folder), *args, "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1]
    assert not (tmp_path / "out").exists()


def test_no_images_exits_2(checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for target, message in [(empty, "no images found"), (tmp_path / "nope", "does not exist")]:
        code = main(["segment-all", str(target), "--checkpoint", str(checkpoint), "--out",
                     str(tmp_path / "out"), "--quiet"])
        assert code == 2 and message in capsys.readouterr().err
