"""COCO run-length encoding of masks, as pycocotools writes it, without pycocotools.

RLE counts run over the mask in column-major order, starting with a run of zeros; ``coco``
strings use pycocotools' 6-bit, delta-coded alphabet. Masks read from COCO files and masks
written by the segmenters go through the same functions, so the two are interchangeable
with pycocotools' (tested against it).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import Tensor

RLE = dict[str, Any]  # {"size": [h, w], "counts": list[int] (uncompressed) or str (COCO)}


def masks_to_rle(masks: Tensor) -> list[RLE]:
    """(B, H, W) bool masks -> uncompressed RLEs (column-major runs, zeros first)."""
    b, h, w = masks.shape
    flat = masks.transpose(1, 2).reshape(b, h * w)  # column-major, as COCO
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(b)]
    # A run ends wherever the next pixel differs; one nonzero() for the whole batch.
    change = torch.nonzero(flat[:, 1:] != flat[:, :-1])  # (K, 2): (mask, position)
    per_mask = torch.bincount(change[:, 0], minlength=b).tolist()
    ends = (change[:, 1] + 1).tolist()
    first = flat[:, 0].tolist()
    out, start = [], 0
    for i in range(b):
        bounds = [0, *ends[start:start + per_mask[i]], h * w]
        start += per_mask[i]
        runs = [q - p for p, q in pairwise(bounds)]
        out.append({"size": [h, w], "counts": [0, *runs] if first[i] else runs})
    return out


def rle_to_mask(rle: RLE) -> np.ndarray:
    """An uncompressed or COCO RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_string_to_counts(counts)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, not {h}x{w} = {h * w}")
    return flat.reshape(w, h).T


def rle_area(rle: RLE) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = coco_string_to_counts(counts)
    return int(sum(counts[1::2]))


def counts_to_coco_string(counts: list[int]) -> str:
    """pycocotools' compressed counts: each count minus the one two before it (from the
    third on), written 5 bits at a time, low bits first, as characters 48 + (0..63); bit 5
    says "more follows", bit 4 of the last group carries the sign."""
    chars = []
    for i, count in enumerate(counts):
        x = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end at -1
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr(48 + (c | 0x20 if more else c)))
    return "".join(chars)


def coco_string_to_counts(s: str | bytes) -> list[int]:
    """Inverse of :func:`counts_to_coco_string`."""
    data = s.encode() if isinstance(s, str) else s
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)  # sign-extend
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_coco(rle: RLE) -> RLE:
    """Uncompressed RLE -> COCO RLE with a JSON-ready string (pycocotools' ``frPyObjects``)."""
    return {"size": list(rle["size"]), "counts": counts_to_coco_string(rle["counts"])}


def coco_to_rle(rle: RLE) -> RLE:
    return {"size": list(rle["size"]), "counts": coco_string_to_counts(rle["counts"])}
