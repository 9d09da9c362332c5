"""Mask bookkeeping for automatic segmentation: boxes, NMS, stability, crops, clean-up.

Small, dependency-free versions of what the official generator takes from torchvision
(``batched_nms``) and OpenCV (connected components), with the same conventions, so results
are interchangeable (COCO RLE, a data format, is :mod:`attnvision.data.rle`):

- boxes are XYXY with the *last* covered pixel as x1 / y1 (the official ``batched_mask_to_box``);
  an empty mask has the box (0, 0, 0, 0);
- NMS keeps, greedily by decreasing score (ties in input order), every box whose IoU with a
  kept box of its category is not above the threshold (torchvision's rule, areas without +1);
- connected components are 8-connected (OpenCV's ``connectedComponentsWithStats(m, 8)``).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch
from torch import Tensor

# --- boxes and NMS ----------------------------------------------------------------------------

def masks_to_boxes(masks: Tensor) -> Tensor:
    """(..., H, W) bool -> (..., 4) XYXY int64, x1/y1 the last pixel; (0, 0, 0, 0) if empty."""
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.long, device=masks.device)
    rows, cols = masks.any(-1), masks.any(-2)  # (..., H), (..., W)

    def first_last(hit: Tensor, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(n, device=hit.device)
        last = torch.where(hit, idx, -1).amax(-1)
        first = torch.where(hit, idx, n).amin(-1)
        return first, last

    y0, y1 = first_last(rows, h)
    x0, x1 = first_last(cols, w)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where((y1 >= 0)[..., None], boxes, 0)


def box_area(boxes: Tensor) -> Tensor:
    """(N, 4) XYXY -> (N,) (x1 - x0) * (y1 - y0)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(N, 4), (M, 4) XYXY -> (N, M) IoU; 0/0 (two empty boxes) stays NaN, which never
    exceeds a threshold, so NMS keeps both, as torchvision does."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def batched_nms(boxes: Tensor, scores: Tensor, categories: Tensor,
                iou_threshold: float) -> Tensor:
    """Indices of the boxes NMS keeps, by decreasing score; boxes of different categories
    never suppress each other. boxes (N, 4) XYXY, scores (N,), categories (N,)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, categories = boxes[order].float(), categories[order]
    # One IoU matrix in score order; a box can only be suppressed by an earlier (kept) one.
    # IoU in float32 compared in float64, as torchvision does, so ties at the threshold agree.
    iou = box_iou(boxes, boxes).double()
    over = (iou > iou_threshold) & (categories[:, None] == categories[None])
    over = over.cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    for i in range(n):
        if not removed[i]:
            removed[i + 1:] |= over[i, i + 1:]
    return order[torch.from_numpy(np.flatnonzero(~removed)).to(order.device)]


# --- scores -----------------------------------------------------------------------------------

def stability_score(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """(..., H, W) logits -> (...): IoU of the masks cut at threshold + offset and
    threshold - offset. One contains the other, so the IoU is a ratio of pixel counts
    (NaN when both are empty, as in the official code)."""
    high = (logits > mask_threshold + offset).sum((-2, -1), dtype=torch.int32)
    low = (logits > mask_threshold - offset).sum((-2, -1), dtype=torch.int32)
    return high / low


# --- point grids and crops --------------------------------------------------------------------

def point_grid(n_per_side: int) -> np.ndarray:
    """(n², 2) (x, y) points at the centres of an n x n grid of cells of [0, 1]², row-major."""
    centres = (np.arange(n_per_side) + 0.5) / n_per_side
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, layer i with n / scale^i points per side."""
    return [point_grid(int(n_per_side / scale_per_layer ** i)) for i in range(n_layers + 1)]


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float
               ) -> tuple[list[list[int]], list[int]]:
    """XYXY crops (the whole image, then 2^i x 2^i overlapping crops for layer i = 1..n) and
    the layer of each. Crops of a layer overlap by ``overlap_ratio`` of the short side,
    scaled down as crops get smaller; the order is the official one (columns outer)."""
    h, w = image_size
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w = math.ceil((overlap * (n - 1) + w) / n)
        crop_h = math.ceil((overlap * (n - 1) + h) / n)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer)
    return boxes, layers


# --- small holes and islands ------------------------------------------------------------------

def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of an (H, W) bool mask: labels (H, W) int (0 = background,
    1..K in raster order of first pixel) and sizes (K,).

    Works on horizontal runs: runs in adjacent rows that touch (diagonals included) are
    joined by union-find with pointer jumping, all in numpy, so a megapixel mask costs a
    few milliseconds whatever its shape.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # +1 where a run starts, -1 one past its end
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)  # exclusive; same raster order as the starts
    n = rows.size
    if n == 0:
        return np.zeros((h, w), dtype=np.int32), np.zeros(0, dtype=np.int64)
    # Run j in the next row touches run i if start_j <= end_i and start_i <= end_j (8-conn,
    # ends exclusive). Those j are contiguous: find them by search on (row, column) keys.
    stride = w + 2
    key_start, key_end = rows * stride + starts, rows * stride + ends
    lo = np.searchsorted(key_end, (rows + 1) * stride + starts, side="left")
    hi = np.searchsorted(key_start, (rows + 1) * stride + ends, side="right")
    counts = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), counts)
    b = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
         + np.repeat(lo, counts))
    parent = np.arange(n)
    while True:  # hook each edge's larger root onto the smaller, then flatten
        ra, rb = parent[a], parent[b]
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        if np.array_equal(parent[a], parent[b]):
            break
    roots, run_label = np.unique(parent, return_inverse=True)  # roots ascend: raster order
    sizes = np.bincount(run_label, weights=ends - starts, minlength=roots.size).astype(np.int64)
    labels = np.zeros((h, w), dtype=np.int32)
    lengths = ends - starts
    flat_pos = np.repeat(rows * w + starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
        lengths.sum())
    labels.reshape(-1)[flat_pos] = np.repeat(run_label + 1, lengths)
    return labels, sizes


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str
                         ) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) smaller than
    ``area_thresh`` pixels; returns the mask and whether anything changed. If every island
    is small, the largest stays, so a mask never vanishes."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    labels, sizes = label_components(mask != holes)  # holes: components of the background
    small = np.flatnonzero(sizes < area_thresh) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(labels, small), True
    big = np.flatnonzero(sizes >= area_thresh) + 1
    if big.size == 0:
        big = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, big), True
