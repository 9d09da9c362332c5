"""COCO-format instance masks: a folder of images and one annotations JSON.

The JSON holds ``images`` ({id, file_name, height, width}) and ``annotations`` ({image_id,
segmentation, iscrowd}); a segmentation is a list of polygons ([x0, y0, x1, y1, ...] in
pixels), an uncompressed RLE ({"size": [h, w], "counts": [ints]}) or a COCO-compressed RLE
(``counts`` a string), exactly as pycocotools reads them. Crowd regions (``iscrowd: 1``)
describe many objects at once and are skipped, as SAM's training skips them.

A polygon covers the pixels whose centre (x + 0.5, y + 0.5) lies inside it (even-odd rule),
which is pycocotools' rasterisation to within a few boundary pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnvision.data.rle import rle_to_mask
from attnvision.errors import UserError


@dataclass(frozen=True)
class CocoImage:
    path: Path
    height: int
    width: int
    segmentations: tuple[Any, ...]  # one per object, as in the JSON


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the union of COCO polygons."""
    mask = np.zeros((height, width), bool)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"a polygon needs at least 3 (x, y) pairs, got {len(poly)} numbers")
        xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        # Only the polygon's bounding box can be inside it.
        x0, y0 = np.floor(xy.min(0)).astype(int).clip(0)
        x1, y1 = np.ceil(xy.max(0)).astype(int) + 1
        x1, y1 = min(x1, width), min(y1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        inside = np.zeros(px.shape, bool)
        for (ax, ay), (bx, by) in zip(xy, np.roll(xy, -1, axis=0), strict=True):
            if ay == by:
                continue  # a horizontal edge crosses no horizontal ray
            crosses = (ay > py) != (by > py)
            at = ax + (py - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (px < at)
        mask[y0:y1, x0:x1] |= inside
    return mask


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """One annotation's ``segmentation`` (polygons or RLE) -> (H, W) bool."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        mask = rle_to_mask(segmentation)
        if mask.shape != (height, width):
            raise ValueError(f"RLE of size {list(mask.shape)} on a {height}x{width} image")
        return mask
    raise ValueError("segmentation is neither a list of polygons nor an RLE {size, counts}")


def read_coco(annotations: str | os.PathLike[str], images: str | os.PathLike[str] | None = None
              ) -> list[CocoImage]:
    """The images of a COCO annotations file that have at least one non-crowd object.

    ``images`` is the folder of the ``file_name``s (default: the JSON's folder). Errors name
    the file and the fix in one line.
    """
    path = Path(annotations)
    if not path.is_file():
        raise UserError(f"COCO annotations not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): give a COCO annotations file") from None
    if not isinstance(data, dict) or not {"images", "annotations"} <= data.keys():
        raise UserError(f"{path} is not a COCO annotations file: it needs 'images' and "
                        "'annotations' lists")
    folder = Path(images) if images is not None else path.parent
    objects: dict[Any, list[Any]] = {}
    for a in data["annotations"]:
        if not isinstance(a, dict) or "image_id" not in a or "segmentation" not in a:
            raise UserError(f"{path}: every annotation needs 'image_id' and 'segmentation'")
        if not a.get("iscrowd", 0):
            objects.setdefault(a["image_id"], []).append(a["segmentation"])
    records = []
    for im in data["images"]:
        if im.get("id") not in objects:
            continue
        try:
            file, h, w = folder / im["file_name"], int(im["height"]), int(im["width"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: every image needs 'id', 'file_name', 'height' and "
                            "'width'") from None
        if not file.is_file():
            raise UserError(f"{path} names {im['file_name']}, which is not in {folder}: "
                            "pass the images folder")
        records.append(CocoImage(file, h, w, tuple(objects[im["id"]])))
    if not records:
        raise UserError(f"{path} has no image with a non-crowd object annotation")
    return records
