"""Uploaded images: accepted only when they truly are images of a sane size, kept on disk.

An upload is decoded with Pillow before anything is stored: the format must be one SAM's
users send (PNG, JPEG, GIF, BMP, TIFF, WebP), the pixel count is checked from the header
*before* the pixels are decoded (a decompression bomb is refused without being expanded),
``verify()`` checks the file's structure, then the library's ``load_image`` decodes it with its
conventions (EXIF orientation, any mode to RGB). What is stored is that RGB picture as a PNG,
``images/<id>.png``, with ``images/<id>.json`` beside it: the pixels the model sees, the pixels
the page shows, and so the coordinates of both agree.

Ids are ``secrets.token_hex(16)``: 32 lowercase hex digits, unguessable. An id from a request
is checked against that form before it is ever joined to a path.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from attnvision.data.images import load_image
from attnvision.errors import UserError
from attnvision.files import atomic_path, write_json
from attnvision.web.errors import ApiError

IMAGE_ID = re.compile(r"[0-9a-f]{32}")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")


@dataclass(frozen=True)
class StoredImage:
    id: str
    name: str  # the uploaded file's name, for display and download names only
    width: int
    height: int
    path: Path  # the RGB PNG


def clean_name(name: str | None) -> str:
    """A display name from a client's file name: its last part, printable, at most 120 chars."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return base[:120] or "image"


def check_image_bytes(data: bytes, max_pixels: int) -> None:
    """Refuse, with a 4xx ``ApiError``, bytes that are not a whole image of at most max_pixels."""
    if not data:
        raise ApiError(400, "the upload is empty: send an image file (PNG, JPEG, ...)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in FORMATS:
                raise ApiError(415, f"{img.format} images are not accepted: send "
                                    f"{', '.join(FORMATS)}")
            width, height = img.size
            if width * height > max_pixels:
                raise ApiError(413, f"the image is {width}x{height} = {width * height:,} "
                                    f"pixels, over the limit of {max_pixels:,}: downscale it "
                                    "first")
            img.verify()
    except ApiError:
        raise
    except UnidentifiedImageError:
        raise ApiError(415, "the upload is not an image Pillow can read: send PNG, JPEG, "
                            "GIF, BMP, TIFF or WebP") from None
    except Image.DecompressionBombError:
        raise ApiError(413, "the image has too many pixels to open safely: downscale it "
                            "first") from None
    except Exception as e:  # Pillow's verify() raises many kinds for broken files
        raise ApiError(400, f"the upload is a corrupt or truncated image ({e})") from None


class ImageStore:
    """Images in ``<root>/images/``: add, look up by id, read back as RGB pixels."""

    def __init__(self, root: Path, max_pixels: int) -> None:
        self.directory = Path(root) / "images"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_pixels = max_pixels

    def path(self, image_id: str, suffix: str) -> Path:
        """``<id><suffix>`` in the store, for a valid id only (else 404)."""
        if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
            raise ApiError(404, f"unknown image id {str(image_id)[:40]!r}: ids are the 32 hex "
                                "digits returned by POST /api/images")
        return self.directory / f"{image_id}{suffix}"

    def add(self, data: bytes, name: str | None) -> StoredImage:
        """Validate, decode and store an uploaded file; its id is new and random."""
        check_image_bytes(data, self.max_pixels)
        image_id = secrets.token_hex(16)
        upload = self.path(image_id, ".upload")
        try:
            upload.write_bytes(data)
            rgb = load_image(upload)  # EXIF orientation, every mode -> (H, W, 3) uint8
        except UserError as e:  # its message names the file: say "the upload" instead
            raise ApiError(400, str(e).replace(str(upload), "the upload")) from None
        finally:
            upload.unlink(missing_ok=True)
        height, width = rgb.shape[:2]
        if width * height > self.max_pixels:  # EXIF rotation keeps the count; be sure
            raise ApiError(413, f"the image has {width * height:,} pixels, over the limit of "
                                f"{self.max_pixels:,}: downscale it first")
        png = self.path(image_id, ".png")
        with atomic_path(png) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG", compress_level=1)
        image = StoredImage(image_id, clean_name(name), int(width), int(height), png)
        write_json(self.path(image_id, ".json"),
                   {"name": image.name, "width": image.width, "height": image.height,
                    "created": time.time()})
        return image

    def get(self, image_id: str) -> StoredImage:
        """The stored image with this id, or a 404 ``ApiError``."""
        meta_path = self.path(image_id, ".json")
        png = self.path(image_id, ".png")
        try:
            meta = json.loads(meta_path.read_text())
            width, height = int(meta["width"]), int(meta["height"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ApiError(404, f"unknown image id {image_id!r}: upload the image again "
                                "(POST /api/images)") from None
        if not png.is_file():
            raise ApiError(404, f"image {image_id} has no pixels on disk: upload it again")
        return StoredImage(image_id, clean_name(str(meta.get("name"))), width, height, png)

    def pixels(self, image: StoredImage) -> np.ndarray:
        """The stored (H, W, 3) uint8 RGB pixels."""
        return load_image(image.path)

    def remove(self, image_id: str) -> None:
        """Delete an image and every file kept beside it (404 if there is none)."""
        self.get(image_id)
        for f in self.directory.glob(f"{image_id}.*"):  # the id is 32 hex digits: no pattern
            f.unlink(missing_ok=True)

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob("*.png"))
