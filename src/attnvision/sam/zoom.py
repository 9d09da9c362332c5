"""Zoom in on a box: segment it again in a crop that the model sees at its full resolution.

A SAM sees its input through 16-pixel patches and answers with a mask of 4-pixel cells (at
512 px for the shipped sam_tiny, at 1024 px for the official models). An object 30 pixels
wide in its input is two patches across, and its outline is guessed from them. Cutting a window
around the box (the box and ``margin`` of its longer side on every side), resizing that
window to the model's input and prompting it with the same box gives a small object the
whole of the model's resolution. It costs one more image encoding per box: cheap for
sam_tiny, seconds for vit_b on a CPU. The held-out gain is in ``benchmarks/RESULTS.md``
(``python benchmarks/box_zoom.py``); FocalClick's focus crop does the same for clicks.
"""

from __future__ import annotations

import math

import numpy as np

from attnvision.errors import UserError
from attnvision.sam.predictor import SamPredictor, check_boxes

# Chosen on test scenes 0-63 (the scenes training picks its best epoch on), not on the
# scenes the figures are reported on: a tighter window shows the model objects larger than
# any it was trained on, a wider one gives back the resolution zooming is for.
ZOOM_MARGIN = 0.75


def zoom_window(box: np.ndarray, size: tuple[int, int], margin: float = ZOOM_MARGIN
                ) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (ends exclusive) of the square window centred on an XYXY ``box``,
    (1 + 2 margin) times its longer side, clipped to an image of ``size`` (H, W). It always
    holds the box's pixels."""
    if margin < 0:
        raise UserError(f"the zoom margin must be >= 0, got {margin}")
    h, w = size
    bx0, by0, bx1, by1 = (float(v) for v in box)
    half = (1 + 2 * margin) * max(bx1 - bx0, by1 - by0, 1.0) / 2
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    x0, y0 = max(0, math.floor(min(cx - half, bx0))), max(0, math.floor(min(cy - half, by0)))
    # A box's x1, y1 may be its last pixels (inclusive) or just past them: keep both inside.
    x1 = min(w, max(math.ceil(cx + half), math.floor(bx1) + 1))
    y1 = min(h, max(math.ceil(cy + half), math.floor(by1) + 1))
    return x0, y0, x1, y1


def predict_zoomed(predictor: SamPredictor, box: np.ndarray, margin: float = ZOOM_MARGIN,
                   return_logits: bool = False) -> tuple[np.ndarray, float, tuple[int, ...]]:
    """The single mask of one XYXY ``box`` on the predictor's image, segmented in the
    :func:`zoom_window` around it: (H, W) mask (bool, or logits with ``return_logits``,
    -inf outside the window), its predicted IoU, and the window. The predictor keeps its
    own image and embedding; the window is encoded apart."""
    predictor._require_image()
    if predictor.image is None:
        raise UserError("zooming needs the image itself: give it with set_image (an "
                        "embedding alone cannot be cropped)")
    if tuple(predictor.image.shape[:2]) != predictor.original_size:
        raise UserError(f"the predictor's image is {predictor.image.shape[1]}x"
                        f"{predictor.image.shape[0]} but its embedding is of a "
                        f"{predictor.original_size[1]}x{predictor.original_size[0]} image: set "
                        "the image again with set_image")
    box = np.asarray(box, dtype=float)
    if box.shape != (4,):
        raise UserError(f"zooming takes one box (4,) as x0, y0, x1, y1, got {box.shape}")
    check_boxes(box, predictor.original_size)
    x0, y0, x1, y1 = window = zoom_window(box, predictor.original_size, margin)
    crop = SamPredictor(predictor.model)
    crop.set_image(predictor.image[y0:y1, x0:x1])
    masks, scores, _ = crop.predict(box=box - np.array([x0, y0, x0, y0]),
                                    multimask_output=False, return_logits=return_logits)
    full = np.full(predictor.original_size, -np.inf if return_logits else False,
                   dtype=masks.dtype)
    full[y0:y1, x0:x1] = masks[0]
    return full, float(scores[0]), window
