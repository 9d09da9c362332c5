"""From a picture people have to the tensor a ViT was trained on.

- RGB configs (ImageNet): resize the short side to img_size / crop_pct (bicubic), centre crop,
  normalise with the config's mean and std, as timm's evaluation transform does.
- Digit configs (one channel): MNIST's own recipe. Convert to gray, make the strokes bright on
  a dark ground (photos and scans of digits are usually dark on light), crop to the digit,
  fit it in a box (20 px of 28 for MNIST, the whole 8 px for scikit-learn's digits) keeping
  its aspect, and centre it by its centre of mass.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from attnvision.vit.configs import ViTConfig

CROP_PCT = 0.9


def _gray(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32) / 255.0


def normalize_digit(gray: np.ndarray, size: int, box: int) -> np.ndarray:
    """A (size, size) float image in [0, 1] with a bright digit centred as in MNIST."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper
        gray = 1.0 - gray
    lo, hi = float(gray.min()), float(gray.max())
    if hi - lo < 1e-6:
        return np.zeros((size, size), dtype=np.float32)
    gray = (gray - lo) / (hi - lo)
    ink = gray > 0.25
    rows, cols = np.nonzero(ink)
    if len(rows) == 0:
        return np.zeros((size, size), dtype=np.float32)
    crop = gray[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray((crop * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS)
    digit = np.asarray(small, dtype=np.float32) / 255.0
    out = np.zeros((size, size), dtype=np.float32)
    mass = digit.sum()
    cy = (digit.sum(1) @ np.arange(nh)) / mass if mass > 0 else nh / 2
    cx = (digit.sum(0) @ np.arange(nw)) / mass if mass > 0 else nw / 2
    top = int(np.clip(round((size - 1) / 2 - cy), 0, size - nh))
    left = int(np.clip(round((size - 1) / 2 - cx), 0, size - nw))
    out[top:top + nh, left:left + nw] = digit
    return out


def preprocess(image: np.ndarray, config: ViTConfig) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, C, img_size, img_size) float, ready for the model."""
    size = config.img_size
    if config.in_chans == 1:
        box = size if size <= 8 else round(size * 20 / 28)
        x = torch.from_numpy(normalize_digit(_gray(image), size, box))[None, None]
    else:
        h, w = image.shape[:2]
        short = round(size / CROP_PCT)
        scale = short / min(h, w)
        resized = Image.fromarray(image).resize((max(size, round(w * scale)),
                                                 max(size, round(h * scale))), Image.BICUBIC)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        crop = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32)
        x = torch.from_numpy(crop / 255.0).permute(2, 0, 1)[None]
    mean = torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std
