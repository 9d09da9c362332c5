"""Video object segmentation measures as the DAVIS benchmark defines them: J, F and J&F.

- J, region similarity: the IoU of the predicted and true masks (1 when both are empty).
- F, contour accuracy: the F-measure of the two masks' boundaries, a boundary pixel counting
  as matched when the other boundary passes within a tolerance of it: a disc of
  ``ceil(0.008 x image diagonal)`` pixels (8 px in a 480 x 854 DAVIS frame). A boundary pixel
  is a mask pixel whose right, lower or lower-right neighbour differs (DAVIS' ``seg2bmap``).
- J&F: the mean of the two. Over a sequence, DAVIS averages each object's per-frame values
  over the frames between the first (which holds the prompt) and the last, then the objects.

Pixels marked void (255 in DAVIS masks) are taken out of both masks before either measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOUNDARY_TOLERANCE = 0.008  # of the image diagonal, as DAVIS


def region_similarity(predicted: np.ndarray, truth: np.ndarray,
                      void: np.ndarray | None = None) -> float:
    """J: IoU of two (H, W) boolean masks, void pixels left out; 1 when both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    if void is not None:
        predicted, truth = predicted & ~void, truth & ~void
    union = np.logical_or(predicted, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(predicted, truth).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right, lower or lower-right neighbour differs (on the last
    row only the right one, on the last column only the lower one; never the corner)."""
    mask = np.asarray(mask, bool)
    right, down, diagonal = (np.zeros_like(mask) for _ in range(3))
    right[:, :-1] = mask[:, 1:]
    down[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    edge = (mask ^ right) | (mask ^ down) | (mask ^ diagonal)
    edge[-1, :] = mask[-1, :] ^ right[-1, :]
    edge[:, -1] = mask[:, -1] ^ down[:, -1]
    edge[-1, -1] = False
    return edge


def disc(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) bool: the pixels within ``radius`` of the centre."""
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return x * x + y * y <= radius * radius


def tolerance_pixels(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """The matching distance in pixels: ``tolerance`` itself if >= 1, else that share of the
    image diagonal, rounded up."""
    if tolerance >= 1:
        return int(tolerance)
    return math.ceil(tolerance * math.hypot(*shape))


def contour_accuracy(predicted: np.ndarray, truth: np.ndarray,
                     void: np.ndarray | None = None,
                     tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: the boundary F-measure of two (H, W) boolean masks (module doc)."""
    from scipy.ndimage import binary_dilation

    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    if void is not None:
        predicted, truth = predicted & ~void, truth & ~void
    ours, theirs = boundary_map(predicted), boundary_map(truth)
    near = disc(tolerance_pixels(truth.shape, tolerance))
    n_ours, n_theirs = int(ours.sum()), int(theirs.sum())
    if n_ours == 0 and n_theirs == 0:
        return 1.0
    if n_ours == 0 or n_theirs == 0:
        return 0.0  # precision or recall is 0
    precision = (ours & binary_dilation(theirs, near)).sum() / n_ours
    recall = (theirs & binary_dilation(ours, near)).sum() / n_theirs
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def sequence_scores(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray],
                    object_ids: Sequence[int], skip_first_and_last: bool = True
                    ) -> dict[str, float | dict[int, dict[str, float]]]:
    """J, F and J&F of one sequence: ``predicted`` and ``truth`` are (H, W) id maps per frame
    (0 background, 255 void in the truth). Each object's J and F are averaged over the
    frames (without the first and the last, as DAVIS, when there are more than two), then
    over the objects."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted frames for {len(truth)} true ones")
    frames = range(1, len(truth) - 1) if skip_first_and_last and len(truth) > 2 else range(
        len(truth))
    per_object: dict[int, dict[str, float]] = {}
    for obj in object_ids:
        j, f = [], []
        for t in frames:
            void = np.asarray(truth[t]) == 255
            mine, theirs = np.asarray(predicted[t]) == obj, np.asarray(truth[t]) == obj
            j.append(region_similarity(mine, theirs, void))
            f.append(contour_accuracy(mine, theirs, void))
        per_object[obj] = {"J": float(np.mean(j)), "F": float(np.mean(f)),
                           "J_recall": float(np.mean(np.array(j) > 0.5))}
    j_mean = float(np.mean([v["J"] for v in per_object.values()])) if per_object else 0.0
    f_mean = float(np.mean([v["F"] for v in per_object.values()])) if per_object else 0.0
    return {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2, "objects": per_object}
