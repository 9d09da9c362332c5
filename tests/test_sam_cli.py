"""``attnvision segment`` end to end on a small SAM saved in our format, and its errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sam_helpers import small_sam_checkpoint

from attnvision.cli import main
from attnvision.errors import UserError
from attnvision.sam import build_sam
from attnvision.weights import shipped_path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_small.safetensors")


@pytest.fixture()
def image(tmp_path):
    rng = np.random.default_rng(0)
    img = np.full((120, 200, 3), 40, np.uint8)
    img[30:90, 50:150] = (200, 60, 60)
    img += rng.integers(0, 10, img.shape, dtype=np.uint8)
    path = tmp_path / "scene.png"
    Image.fromarray(img).save(path)
    return path


def test_segment_writes_masks_overlay_and_json(checkpoint, image, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(image), "--checkpoint", str(checkpoint), "--point", "100,60",
                 "--point", "10,10,0", "--box", "40,20,160,100", "--multimask",
                 "--out", str(out), "--json", "--quiet"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["masks"]) == 3
    scores = [m["score"] for m in result["masks"]]
    assert scores == sorted(scores, reverse=True)
    for m in result["masks"]:
        with Image.open(m["file"]) as mask:
            assert mask.size == (200, 120) and mask.mode == "L"
            assert int((np.asarray(mask) > 0).sum()) == m["area"]
    with Image.open(result["overlay"]) as overlay:
        assert overlay.size == (200, 120)
    assert json.loads((out / "scene_masks.json").read_text())["masks"] == result["masks"]
    assert not list(out.glob(".*tmp"))


@pytest.mark.parametrize("points, box, candidates", [
    ([(100, 60, 1)], None, 3),  # a lone click: three masks, the best kept
    ([(100, 60, 1), (10, 10, 0)], None, 1),  # several points: the single mask
    ([], (40, 20, 160, 100), 1),
])
def test_a_lone_click_keeps_the_best_of_three_masks(checkpoint, image, tmp_path, capsys,
                                                    points, box, candidates):
    from attnvision.sam import SamPredictor, build_sam

    prompts = [a for x, y, label in points for a in ("--point", f"{x},{y},{label}")]
    prompts += ["--box", ",".join(map(str, box))] if box else []
    code = main(["segment", str(image), "--checkpoint", str(checkpoint), *prompts, "--out",
                 str(tmp_path / "out"), "--json", "--no-cache"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["candidates"] == candidates and len(result["masks"]) == 1
    predictor = SamPredictor(build_sam(None, checkpoint))
    predictor.set_image(np.asarray(Image.open(image)))
    masks, scores, _ = predictor.predict(
        point_coords=np.array([p[:2] for p in points], float) if points else None,
        point_labels=np.array([p[2] for p in points]) if points else None,
        box=np.array(box, float) if box else None, multimask_output=candidates == 3)
    best = int(np.argmax(scores))
    with Image.open(result["masks"][0]["file"]) as written:
        assert np.array_equal(np.asarray(written) > 127, masks[best])
    assert result["masks"][0]["score"] == pytest.approx(float(scores[best]), abs=1e-6)


def test_zoom_gives_the_windowed_mask_with_and_without_the_cache(checkpoint, image, tmp_path,
                                                                 capsys):
    from attnvision.sam import SamPredictor, build_sam
    from attnvision.sam.zoom import predict_zoomed

    predictor = SamPredictor(build_sam(None, checkpoint))
    predictor.set_image(np.asarray(Image.open(image)))
    expected, _, window = predict_zoomed(predictor, np.array([90, 40, 130, 80]))
    assert 0 < expected.sum() < expected.size
    for run in ("computed", "cache"):
        out = tmp_path / run
        code = main(["segment", str(image), "--checkpoint", str(checkpoint), "--box",
                     "90,40,130,80", "--zoom", "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(out), "--json", "--quiet"])
        result = json.loads(capsys.readouterr().out)
        assert code == 0 and result["embedding"] == run
        assert result["zoom_window"] == list(window)
        with Image.open(result["masks"][0]["file"]) as mask:
            assert np.array_equal(np.asarray(mask) > 0, expected)


@pytest.mark.parametrize("args, message", [
    (["--point", "250,60"], "outside the 200x120 image"),
    (["--point", "abc"], "is not X,Y or X,Y,LABEL"),
    (["--box", "150,20,40,100"], "x1 < x0"),
    ([], "give a prompt"),
    (["--point", "10,10", "--model", "vit_l"], "holds SAM vit_b weights, not vit_l"),
    (["--point", "10,10", "--zoom"], "--zoom re-segments a box"),
    (["--box", "40,20,160,100", "--multimask", "--zoom"], "--zoom re-segments a box"),
])
def test_bad_prompts_and_models_exit_2_and_write_nothing(checkpoint, image, tmp_path, capsys,
                                                         args, message):
    out = tmp_path / "out"
    code = main(["segment", str(image), "--checkpoint", str(checkpoint), *args,
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1]
    assert not out.exists() or not any(out.iterdir())


def test_bad_checkpoints(image, tmp_path, capsys, checkpoint):
    cases = {"missing": (tmp_path / "sam_vit_b_01ec64.pth", "sam_vit_b_01ec64.pth")}
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(checkpoint.read_bytes()[:5000])
    cases["truncated"] = (trunc, "corrupt, truncated")
    other = tmp_path / "vit.safetensors"
    from attnvision.vit import create_model, save_checkpoint

    save_checkpoint(create_model("vit_digits", depth=1), other)
    cases["not sam"] = (other, "is not a SAM checkpoint")
    cases["sam 2"] = (shipped_path("attnvision.sam2", "sam2_tiny.safetensors"),
                      "is a SAM 2 checkpoint, not a SAM one: load it with "
                      "attnvision.sam2.build_sam2 (or the segment-video command)")
    for path, message in cases.values():
        code = main(["segment", str(image), "--checkpoint", str(path), "--point", "5,5",
                     "--out", str(tmp_path / "o"), "--quiet"])
        assert code == 2 and message in capsys.readouterr().err


def test_a_file_of_unknown_size_asks_for_the_name(tmp_path):
    # Weights of a width no official size has, and no record of the name (not our format).
    from safetensors.torch import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"image_encoder.patch_embed.proj.weight": torch.zeros(40, 3, 16, 16)}, str(path))
    with pytest.raises(UserError, match=r"cannot tell the SAM size of .*odd.safetensors from "
                                        r"its weights: name it, one of \['sam_tiny'"):
        build_sam(None, path)
