"""Pictures of a SAM evaluation: what the model did with each click and box."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnvision.sam.evaluation import coins_truth, horse_truth, interior_point, segment_object
from attnvision.sam.model import Sam
from attnvision.sam.predictor import SamPredictor
from attnvision.viz.overlays import mask_overlay, save_png


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=float)


def _caption(picture: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (picture.width, picture.height + 18), (255, 255, 255))
    out.paste(picture, (0, 18))
    ImageDraw.Draw(out).text((4, 3), text, fill=(0, 0, 0))
    return out


def _grid(tiles: list[Image.Image], columns: int) -> Image.Image:
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * w, (i // columns) * h))
    return sheet


def synthetic_sheet(sam: Sam, path: str | os.PathLike[str], scenes: int = 4) -> Path:
    """Test scenes, one row each: the ground truth, then every object's mask from one click,
    then from its box, with the IoU of each."""
    from attnvision.data.scenes import make_scene

    predictor = SamPredictor(sam)
    tiles = []
    for seed in range(scenes):
        scene = make_scene(seed, "test", size=sam.img_size)
        predictor.set_image(scene.image)
        truth = [o.mask for o in scene.objects]
        tiles.append(_caption(mask_overlay(scene.image, truth), "ground truth"))
        for mode in ("point", "box"):
            answers = [segment_object(predictor, m, mode) for m in truth]
            prompts = {"points": np.array([interior_point(m) for m in truth]),
                       "labels": np.ones(len(truth))} if mode == "point" else {
                "boxes": np.stack([_box(m) for m in truth])}
            mean = np.mean([a.iou for a in answers])
            tiles.append(_caption(mask_overlay(scene.image, [a.mask for a in answers],
                                               **prompts),
                                  f"{'1 click' if mode == 'point' else 'box'} each: "
                                  f"mIoU {mean:.2f}"))
    return save_png(_grid(tiles, 3), path)


def photo_sheet(sam: Sam, path: str | os.PathLike[str]) -> Path:
    """coins (a click at each coin's centre) and horse (one click), with their IoU."""
    predictor = SamPredictor(sam)
    image, coins = coins_truth()
    predictor.set_image(image)
    answers = [segment_object(predictor, m, "point") for m in coins]
    clicks = np.array([interior_point(m) for m in coins])
    left = _caption(mask_overlay(image, [a.mask for a in answers], points=clicks,
                                 labels=np.ones(len(coins))),
                    f"coins: one click each, mean IoU {np.mean([a.iou for a in answers]):.2f}")
    image, horse = horse_truth()
    predictor.set_image(image)
    answer = segment_object(predictor, horse, "point")
    right = _caption(mask_overlay(image, [answer.mask], points=np.array([interior_point(horse)]),
                                  labels=np.ones(1)), f"horse: one click, IoU {answer.iou:.2f}")
    return save_png(_grid([left, right], 2), path)


def evaluation_pictures(sam: Sam, out: Path) -> dict[str, Path]:
    return {"synthetic": synthetic_sheet(sam, out / "sam_eval_synthetic.png"),
            "photos": photo_sheet(sam, out / "sam_eval_photos.png")}
