"""Reading images as people have them: any mode, EXIF-rotated, possibly not an image at all.

Everything is returned as an (H, W, 3) uint8 RGB array; grayscale, palette, 16-bit, CMYK and
RGBA images are converted (transparent pixels composited on white) rather than refused.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from attnvision.errors import UserError

# Sample images shipped inside the package (public domain, from scikit-image's data).
SAMPLES = {"astronaut": "astronaut.jpg"}


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array, applying its EXIF orientation."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image not found: {path} (check the path)")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(_to_rgb(img), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise UserError(f"{path} is not an image file Pillow can read "
                        "(use PNG, JPEG, TIFF, BMP, GIF or WebP)") from None
    except Image.DecompressionBombError as e:
        raise UserError(f"{path} is too large to open safely ({e}); downscale it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path} is a corrupt or truncated image ({e}); re-export it") from None


def sample_image(name: str = "astronaut") -> np.ndarray:
    """One of the images that ship with attnvision, as (H, W, 3) uint8 RGB."""
    if name not in SAMPLES:
        raise UserError(f"unknown sample image {name!r}: choose one of {sorted(SAMPLES)}")
    with resources.as_file(resources.files("attnvision.data") / "samples" / SAMPLES[name]) as p:
        return load_image(p)


def sample_digits() -> tuple[torch.Tensor, list[int]]:
    """The first test digit of each class of the MNIST-5k split, as shipped with the package.

    Returns images (10, 1, 28, 28) in [0, 1] (bright on dark, as in MNIST) and labels 0..9.
    """
    path = resources.files("attnvision.data") / "samples" / "mnist_digits.png"
    with resources.as_file(path) as p, Image.open(p) as img:
        strip = np.asarray(img.convert("L"), dtype=np.float32) / 255.0  # (28, 280)
    digits = torch.from_numpy(strip).reshape(28, 10, 28).permute(1, 0, 2)[:, None]
    return digits.contiguous(), list(range(10))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
