"""Masks in the forms the API sends: PNG, COCO RLE, a coloured overlay, COCO documents.

Conventions are the command line's (``attnvision segment`` / ``segment-all``): a mask PNG is
8-bit grayscale, 255 inside and 0 outside, at the image's size; COCO boxes count pixels
(pycocotools' ``toBbox``); every annotation has category 1, "object". PNGs are written with
zlib level 1: a mask compresses almost as well as at level 6, several times faster, and
prompt answers are on the click-to-mask path.
"""

from __future__ import annotations

import base64
import colorsys
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from PIL import Image

from attnvision.data.rle import masks_to_rle, rle_to_coco, rle_to_mask

CATEGORY = {"id": 1, "name": "object"}


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) bool -> grayscale PNG, 255 inside."""
    return png_bytes(np.asarray(mask, dtype=np.uint8) * np.uint8(255))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO RLE ``{"size": [H, W], "counts": str}``."""
    return rle_to_coco(masks_to_rle(torch.from_numpy(np.asarray(mask, dtype=bool))[None])[0])


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO XYWH of an (H, W) bool mask, width and height in pixels; [0, 0, 0, 0] if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def colour(i: int) -> tuple[int, int, int]:
    """The i-th of a sequence of distinct, bright colours (golden-angle hues)."""
    r, g, b = colorsys.hsv_to_rgb((0.58 + i * 0.618034) % 1.0, 0.7, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def overlay_png(masks: Iterable[np.ndarray], size: tuple[int, int], alpha: int = 115) -> bytes:
    """Masks, each in its own colour with an opaque outline, on a transparent (H, W) RGBA PNG;
    later masks are drawn over earlier ones (give the large ones first)."""
    out = np.zeros((*size, 4), dtype=np.uint8)
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        inner = m.copy()
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m, :3] = colour(i)
        out[m, 3] = alpha
        out[m & ~inner, 3] = 230
    return png_bytes(out)


def automatic_annotation(record: dict[str, Any]) -> dict[str, Any]:
    """A ``SamAutomaticMaskGenerator`` record (``coco_rle`` mode) as a COCO annotation.

    The generator's boxes are the official XYWH with w = x1 - x0; COCO's count pixels (+1).
    """
    x, y, w, h = record["bbox"]
    return {"segmentation": record["segmentation"], "area": int(record["area"]),
            "bbox": [0, 0, 0, 0] if record["area"] == 0 else [x, y, w + 1, h + 1],
            "score": round(float(record["predicted_iou"]), 6),
            "stability_score": round(float(record["stability_score"]), 6),
            "point_coords": record["point_coords"], "source": "everything",
            "category_id": CATEGORY["id"], "iscrowd": 0}


def prompt_annotation(mask: np.ndarray, score: float, prompt: dict[str, Any]
                      ) -> dict[str, Any]:
    """A mask from a prompt as a COCO annotation, with the prompt that made it."""
    return {"segmentation": mask_rle(mask), "area": int(mask.sum()), "bbox": mask_bbox(mask),
            "score": round(float(score), 6), "prompt": prompt, "source": "prompt",
            "category_id": CATEGORY["id"], "iscrowd": 0}


def coco_document(file_name: str, width: int, height: int,
                  annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """One image's annotations as a COCO file (image id 1, annotation ids from 1)."""
    return {"info": {"description": "attnvision serve: Segment Anything masks"},
            "images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
            "annotations": [{"id": i, "image_id": 1, **a}
                            for i, a in enumerate(annotations, start=1)],
            "categories": [CATEGORY]}


def decode_rles(records: list[dict[str, Any]]) -> Iterable[np.ndarray]:
    """The (H, W) bool masks of COCO-RLE records, one at a time."""
    for r in records:
        yield rle_to_mask(r["segmentation"])
