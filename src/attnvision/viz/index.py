"""A plain HTML page that shows the pictures a command wrote, with captions."""

from __future__ import annotations

import html
import os
from pathlib import Path

from attnvision.files import atomic_path

CAPTIONS = {
    "positional_encoding": "Sinusoidal positional encoding p_t (50 positions x 128 dimensions): "
                           "p_t[2k] = sin(w_k t), p_t[2k+1] = cos(w_k t), w_k = 1/10000^(2k/D).",
    "position_similarity": "K = P . P^T: the similarity of two positions depends on their "
                           "distance, and peaks on the diagonal.",
    "patch_grid": "An image cut into 16 x 16 patches; each patch is one token of P*P*C values.",
    "attention_maps": "Rows of the attention matrix A of one encoder block, for three query "
                      "patches and four heads.",
    "vit_digits": "The shipped ViT (trained here on MNIST-5k) on one test digit per class: "
                  "prediction and confidence, and the attention rollout from the class token.",
    "vit_explain": "One digit explained: what the model sees, the attention rollout over all "
                   "blocks, the class token's attention in the last block, the top classes.",
    "sam_clicks_coins": "The shipped sam_tiny (trained here on synthetic scenes only): one "
                        "click at the centre of six coins, the best of its three masks each.",
    "sam_click_horse": "One click on the horse silhouette.",
    "sam_box_coffee": "A box around the coffee cup: the single-mask answer. sam_tiny learnt "
                      "from synthetic shapes only; photos like this one are beyond it.",
    "sam_box_zoom_scene": "Boxes on a held-out synthetic scene, answered in one pass (left) and "
                          "zoomed in (right): each box segmented again in a window around it, "
                          "which the model sees at its full input size. Small and thin objects "
                          "gain most.",
    "sam_clicks_astronaut": "One click on the helmet, one on the suit: a natural photo, far "
                            "from the synthetic scenes sam_tiny learnt from.",
    "sam_text_phrases": "Text prompts on held-out synthetic scenes: each tile is one phrase "
                        "alone (a full description or a shorter phrase that names one object) "
                        "and the mask it gave, with its IoU.",
    "sam_everything_scene": "Segment everything on a held-out synthetic scene: a 16 x 16 grid "
                            "of clicks, masks kept above predicted IoU 0.7 and stability 0.85 "
                            "(sam_tiny's IoU head is modest), then non-maximum suppression.",
    "sam_everything_coins": "Segment everything on scikit-image's coins, the same way: most "
                            "coins come out whole, a few twice; deeply embossed coins often "
                            "fall under the filters.",
}


def write_index(path: str | os.PathLike[str], title: str, files: dict[str, Path],
                base: str | os.PathLike[str]) -> Path:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "img{max-width:100%;border:1px solid #ccc}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, file in files.items():
        rel = os.path.relpath(file, base)
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>"
                     f"<p>{html.escape(CAPTIONS.get(name, ''))}</p>"
                     f"<img src='{html.escape(rel)}' alt='{html.escape(name)}'>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return Path(path)
