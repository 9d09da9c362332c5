"""``attnvision demo``: every capability on built-in examples, pictures plus an index.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from attnvision.errors import UserError


def vit_pictures(out: Path) -> dict[str, Path]:
    """The shipped MNIST ViT on one test digit per class: predictions and attention."""
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
    index = write_index(out / "index.html", "attnvision demo", files, base=out)
    return {"command": "demo", "out": str(out), "index": str(index),
            "files": {k: str(v) for k, v in files.items()}, "skipped": skipped}
