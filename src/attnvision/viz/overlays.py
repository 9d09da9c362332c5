"""Masks and prompts drawn over the image with Pillow: what a person checks a result with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from attnvision.files import atomic_path

PALETTE = [(30, 144, 255), (255, 140, 0), (50, 205, 50), (220, 20, 60), (148, 0, 211),
           (255, 215, 0), (0, 206, 209), (255, 105, 180)]


def mask_overlay(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5,
                 points: np.ndarray | None = None, labels: np.ndarray | None = None,
                 boxes: np.ndarray | None = None) -> Image.Image:
    """The image with each (H, W) bool mask tinted in its own colour and outlined, points
    (green = foreground, red = background) and boxes drawn on top."""
    out = image.astype(np.float32).copy()
    edges = np.zeros(image.shape[:2], dtype=bool)
    colours = np.zeros_like(out)
    for i, m in enumerate(masks):
        m = np.asarray(m, dtype=bool)
        colour = np.array(PALETTE[i % len(PALETTE)], dtype=np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
        colours[edge] = colour
        edges |= edge
    out[edges] = colours[edges]
    picture = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    r = max(3, round(max(image.shape[:2]) / 120))
    for (x, y), label in zip(np.asarray(points if points is not None else []).reshape(-1, 2),
                             np.asarray(labels if labels is not None else []).reshape(-1),
                             strict=True):
        fill = (0, 200, 0) if label == 1 else (230, 0, 0)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(255, 255, 255), width=2)
    for x0, y0, x1, y1 in np.asarray(boxes if boxes is not None else []).reshape(-1, 4):
        draw.rectangle((x0, y0, x1, y1), outline=(0, 255, 0), width=max(2, r // 2))
    return picture


def heat_overlay(image: np.ndarray, heat: np.ndarray, colour: tuple[int, int, int] = (255, 40, 0)
                 ) -> Image.Image:
    """The image dimmed to grey, with an (H, W) map of values in 0..1 glowing in ``colour``
    where it is high: where a model looks, or where a phrase points."""
    grey = image.astype(np.float32).mean(-1, keepdims=True) * 0.6
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)[..., None]
    out = (1 - h) * grey + h * np.array(colour, dtype=np.float32)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def save_png(picture: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
