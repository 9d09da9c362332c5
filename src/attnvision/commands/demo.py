"""``attnvision demo``: every capability on built-in examples, pictures plus an index.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common
from attnvision.errors import UserError


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "demo", "run every capability on built-in examples and write the "
                                      "pictures with an index.html")
    p.add_argument("--out", default="attnvision-demo", help="output folder")
    common(p, demo)


def vit_pictures(out: Path) -> dict[str, Path]:
    """The shipped MNIST ViT on one test digit per class: predictions and attention."""
    import torch

    from attnvision.data.images import sample_digits
    from attnvision.vit.explain import explain
    from attnvision.vit.pretrained import load_shipped
    from attnvision.viz.classification import explanation_figure, gallery_figure

    model = load_shipped()
    digits, labels = sample_digits()  # (10, 1, 28, 28) in [0, 1], MNIST's own format
    e = explain(model, digits)
    confidence, predictions = e.probabilities.max(dim=-1)
    correct = int((predictions == torch.tensor(labels)).sum())
    names = model.config.class_names
    files = {"vit_digits": gallery_figure(
        digits, labels, predictions.tolist(), confidence.tolist(), e.rollout, names,
        out / "vit_digits.png",
        f"Shipped ViT on one MNIST test digit per class: {correct}/10 right "
        "(top: prediction, bottom: attention rollout)")}
    image = (digits[3, 0] * 255).to(torch.uint8).numpy()
    image = image[..., None].repeat(3, axis=-1)
    files["vit_explain"] = explanation_figure(image, digits[3], e.probabilities[3], e.rollout[3],
                                              e.cls_attention[3], names,
                                              out / "vit_explain.png")
    return files


def sam_pictures(out: Path) -> dict[str, Path]:
    """The shipped sam_tiny on scikit-image photos: clicks on coins, a click on the horse, a
    box around the coffee cup, clicks on the astronaut, and every mask of a held-out scene and
    of the coins."""
    import numpy as np

    from attnvision.data.images import sample_image
    from attnvision.data.scenes import make_scene
    from attnvision.sam import SamAutomaticMaskGenerator, SamPredictor
    from attnvision.sam.evaluation import coins_truth, horse_truth, interior_point, segment_click
    from attnvision.sam.pretrained import EVERYTHING_THRESHOLDS, load_shipped
    from attnvision.viz.overlays import mask_overlay, save_png
    from attnvision.viz.sam_eval import text_sheet, zoom_sheet

    try:
        from skimage import data
    except ImportError:
        raise UserError("the SAM pictures use scikit-image's photos: "
                        "pip install 'attnvision[data]'") from None
    sam = load_shipped()
    predictor = SamPredictor(sam)
    files: dict[str, Path] = {}

    def clicks_picture(image: np.ndarray, clicks: np.ndarray, name: str) -> None:
        """One click per object, the best of its three masks by predicted IoU, drawn."""
        predictor.set_image(image)
        masks = [segment_click(predictor, click) for click in clicks]
        files[name] = save_png(mask_overlay(image, masks, points=clicks,
                                            labels=np.ones(len(clicks))), out / f"{name}.png")

    coins, truth = coins_truth()
    clicks_picture(coins, np.array([interior_point(m) for m in truth[::4]], dtype=float),
                   "sam_clicks_coins")  # 6 of the 24
    horse, silhouette = horse_truth()
    clicks_picture(horse, np.array([interior_point(silhouette)], dtype=float), "sam_click_horse")
    coffee = np.asarray(data.coffee())
    box = np.array([125.0, 10.0, 410.0, 245.0])  # the cup
    predictor.set_image(coffee)
    m, _, _ = predictor.predict(box=box, multimask_output=False)
    files["sam_box_coffee"] = save_png(mask_overlay(coffee, [m[0]], boxes=box),
                                       out / "sam_box_coffee.png")
    files["sam_box_zoom_scene"] = zoom_sheet(sam, out / "sam_box_zoom_scene.png")
    astronaut = sample_image("astronaut")
    h, w = astronaut.shape[:2]
    clicks_picture(astronaut, np.array([[0.74 * w, 0.8 * h], [0.25 * w, 0.75 * h]]),
                   "sam_clicks_astronaut")  # the helmet, the suit
    if sam.prompt_encoder.text_projection is not None:
        try:
            text = text_sheet(sam, out / "sam_text_phrases.png")
            if text is not None:  # standard scenes always have phrases that name one object
                files["sam_text_phrases"] = text
        except UserError as e:  # no sentence encoder installed: the rest still shows
            print(f"attnvision demo: skipped the text prompts: {e}", file=sys.stderr)
    # Segment everything on a held-out synthetic scene (a scikit-image photo behind shapes)
    # and on the coins photo: sam_tiny's IoU head is modest, so its filters are set lower than
    # the official defaults (0.88 and 0.95), which it passes on almost nothing.
    iou, stability = EVERYTHING_THRESHOLDS
    generator = SamAutomaticMaskGenerator(sam, points_per_side=16, pred_iou_thresh=iou,
                                          stability_score_thresh=stability)
    for name, image in (("sam_everything_scene", make_scene(1001, "test").image),
                        ("sam_everything_coins", coins)):
        records = generator.generate(image)
        files[name] = save_png(mask_overlay(image, [r["segmentation"] for r in records]),
                               out / f"{name}.png")
    return files


def demo(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.files import ensure_dir
    from attnvision.viz.course import course_figures
    from attnvision.viz.index import write_index

    out = ensure_dir(args.out)
    print(f"attnvision demo: writing pictures to {out}/", file=sys.stderr)
    files = course_figures(out / "figures", progress=not args.quiet)
    skipped = []
    try:
        files.update(vit_pictures(out / "vit"))
    except UserError as e:  # an install without the shipped weights still shows the rest
        print(f"attnvision demo: skipped the ViT pictures: {e}", file=sys.stderr)
        skipped.append({"part": "vit", "error": str(e)})
    try:
        files.update(sam_pictures(out / "sam"))
    except UserError as e:
        print(f"attnvision demo: skipped the SAM pictures: {e}", file=sys.stderr)
        skipped.append({"part": "sam", "error": str(e)})
    index = write_index(out / "index.html", "attnvision demo", files, base=out)
    return {"command": "demo", "out": str(out), "index": str(index),
            "files": {k: str(v) for k, v in files.items()}, "skipped": skipped}
