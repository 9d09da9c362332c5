"""Pictures of a SAM evaluation: what the model did with each click and box."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnvision.sam.evaluation import (
    coins_truth,
    horse_clicks,
    horse_truth,
    interior_point,
    iou,
    segment_click,
    segment_object,
    tight_box,
)
from attnvision.sam.model import Sam
from attnvision.sam.predictor import SamPredictor
from attnvision.viz.overlays import heat_overlay, mask_overlay, save_png


def _caption(picture: Image.Image, text: str) -> Image.Image:
    lines = textwrap.wrap(text, width=max(10, (picture.width - 8) // 6))  # ~6 px a character
    top = 4 + 12 * len(lines)
    out = Image.new("RGB", (picture.width, picture.height + top), (255, 255, 255))
    out.paste(picture, (0, top))
    ImageDraw.Draw(out).multiline_text((4, 2), "\n".join(lines), fill=(0, 0, 0), spacing=2)
    return out


def _grid(tiles: list[Image.Image], columns: int) -> Image.Image:
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % columns) * w, (i // columns) * h))
    return sheet


LABELS = {"point": "1 click", "box": "box", "box_zoom": "box, zoomed in"}


def synthetic_sheet(sam: Sam, path: str | os.PathLike[str], scenes: int = 4,
                    zoom: bool = True, style: str = "standard") -> Path:
    """Test scenes of a ``style``, one row each: the ground truth, then every object's mask
    from one click, from its box, and (with ``zoom``) from its box zoomed in on, with the mIoU
    of each."""
    from attnvision.data.scenes import make_scene

    modes = ("point", "box", "box_zoom") if zoom else ("point", "box")
    predictor = SamPredictor(sam)
    tiles = []
    for seed in range(scenes):
        scene = make_scene(seed, "test", size=sam.img_size, style=style)
        predictor.set_image(scene.image)
        truth = [o.mask for o in scene.objects]
        tiles.append(_caption(mask_overlay(scene.image, truth), "ground truth"))
        for mode in modes:
            answers = [segment_object(predictor, m, mode) for m in truth]
            prompts = {"points": np.array([interior_point(m) for m in truth]),
                       "labels": np.ones(len(truth))} if mode == "point" else {
                "boxes": np.stack([tight_box(m) for m in truth])}
            mean = np.mean([a.iou for a in answers])
            tiles.append(_caption(mask_overlay(scene.image, [a.mask for a in answers],
                                               **prompts),
                                  f"{LABELS[mode]} each: mIoU {mean:.2f}"))
    return save_png(_grid(tiles, 1 + len(modes)), path)


def zoom_sheet(sam: Sam, path: str | os.PathLike[str], seed: int = 1003) -> Path:
    """One held-out scene, every object's box answered in one pass and zoomed in (a window
    around the box encoded again), side by side with the mIoU of each."""
    from attnvision.data.scenes import make_scene

    predictor = SamPredictor(sam)
    scene = make_scene(seed, "test", size=sam.img_size)
    predictor.set_image(scene.image)
    truth = [o.mask for o in scene.objects]
    boxes = np.stack([tight_box(m) for m in truth])
    tiles = []
    for mode in ("box", "box_zoom"):
        answers = [segment_object(predictor, m, mode) for m in truth]
        picture = mask_overlay(scene.image, [a.mask for a in answers], boxes=boxes)
        big = picture.resize((2 * picture.width, 2 * picture.height), Image.NEAREST)
        tiles.append(_caption(big, f"{LABELS[mode]} each: mIoU "
                                   f"{np.mean([a.iou for a in answers]):.2f}"))
    return save_png(_grid(tiles, 2), path)


def photo_sheet(sam: Sam, path: str | os.PathLike[str]) -> Path:
    """coins (a click at each coin's centre) and horse (three of its clicks, each alone),
    with their IoU."""
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
    tiles = [left]
    for click in horse_clicks(horse)[:3]:  # three of the clicks measured, one at a time
        mask = segment_click(predictor, click)
        tiles.append(_caption(mask_overlay(image, [mask], points=click[None], labels=np.ones(1)),
                              f"horse: one click, IoU {iou(mask, horse):.2f}"))
    return save_png(_grid(tiles, 2), path)


def text_sheet(sam: Sam, path: str | os.PathLike[str], scenes: int = 4, per_scene: int = 3,
               style: str = "standard") -> Path | None:
    """Test scenes prompted by phrases alone: for each phrase (its object's full description,
    or a shorter phrase that still names it), where the text locator says it points, then the
    mask the decoder gave, with its IoU. None if no phrase names one object of those scenes
    (a tray of look-alikes can have none)."""
    from attnvision.data.scenes import make_scene
    from attnvision.text.phrases import attributes, describe, naming_phrases

    predictor = SamPredictor(sam)
    tiles = []
    for seed in range(scenes):
        scene = make_scene(seed, "test", size=sam.img_size, style=style)
        attrs = [attributes(o) for o in scene.objects]
        predictor.set_image(scene.image)
        shown = 0
        for i, obj in enumerate(scene.objects):
            phrases = naming_phrases(i, attrs)
            if not phrases or shown == per_scene:
                continue
            # Alternate the full description and the shortest phrase that names the object.
            phrase = describe(attrs[i]) if shown % 2 == 0 else min(phrases, key=len)
            if phrase not in phrases:
                phrase = min(phrases, key=len)
            tiles.append(_caption(heat_overlay(scene.image, predictor.locate_text(phrase)),
                                  f'where "{phrase}" points'))
            masks, _, _ = predictor.predict(text=phrase, multimask_output=False)
            tiles.append(_caption(mask_overlay(scene.image, [masks[0]]),
                                  f"its mask: IoU {iou(masks[0], obj.mask):.2f}"))
            shown += 1
    return save_png(_grid(tiles, 2 * per_scene), path) if tiles else None


def evaluation_pictures(sam: Sam, out: Path, zoom: bool = True, style: str = "standard"
                        ) -> dict[str, Path]:
    files = {"synthetic": synthetic_sheet(sam, out / "sam_eval_synthetic.png", zoom=zoom,
                                          style=style),
             "photos": photo_sheet(sam, out / "sam_eval_photos.png")}
    if sam.prompt_encoder.text_projection is not None:
        text = text_sheet(sam, out / "sam_eval_text.png", style=style)
        if text is not None:
            files["text"] = text
    return files
