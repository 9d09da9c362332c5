"""Image embeddings on disk, keyed by the image's pixels and the model: never encode twice.

Encoding is SAM's expensive step (seconds on a CPU); prompting is milliseconds. A second
``attnvision segment`` on the same image, or the web app after a restart, finds the embedding
here instead. The key is a hash of the RGB pixels (not the file name or bytes: the same picture
re-saved still hits), the model's fingerprint and the precision the encoder ran in, so an
embedding is never used with another model. Files are written atomically and the folder is
kept under a size limit, oldest use first out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from attnvision.errors import UserError
from attnvision.sam.predictor import ImageLike, SamPredictor, as_rgb_uint8, model_fingerprint


def default_cache_dir() -> Path:
    """``$ATTNVISION_CACHE``, else ``$XDG_CACHE_HOME/attnvision``, else ``~/.cache/attnvision``;
    embeddings go in its ``embeddings/`` folder."""
    root = os.environ.get("ATTNVISION_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "attnvision"


def image_digest(image: np.ndarray) -> str:
    """SHA-256 of an (H, W, 3) uint8 image's shape and pixels."""
    h = hashlib.sha256(f"{image.shape}".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class EmbeddingCache:
    """A folder of ``<model>-<precision>-<image>.safetensors`` embedding files.

    ``set_image(predictor, image)`` does what ``predictor.set_image(image)`` does, reading the
    embedding from the folder when it is there and writing it there when it was computed.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None,
                 max_bytes: int = 2 << 30) -> None:
        self.directory = Path(directory) if directory is not None else (
            default_cache_dir() / "embeddings")
        self.max_bytes = max_bytes
        self.hits = self.misses = 0

    def path_for(self, predictor: SamPredictor, image: np.ndarray) -> Path:
        precision = getattr(predictor.model, "precision", "fp32")
        return self.directory / (f"{model_fingerprint(predictor.model)}-{precision}-"
                                 f"{image_digest(image)[:32]}.safetensors")

    def load(self, predictor: SamPredictor, image: ImageLike) -> bool:
        """Set ``image``'s embedding on ``predictor`` if the folder has it; never encodes.
        True on a hit."""
        rgb = as_rgb_uint8(image)
        path = self.path_for(predictor, rgb)
        if not path.is_file():
            return False
        try:
            predictor.load_embedding(path)
        except UserError:
            path.unlink(missing_ok=True)  # truncated or foreign: compute it again
            return False
        if predictor.original_size != rgb.shape[:2]:
            return False
        os.utime(path)  # most recently used
        self.hits += 1
        return True

    def set_image(self, predictor: SamPredictor, image: ImageLike) -> bool:
        """Set ``image`` on ``predictor``; True when the embedding came from the cache."""
        rgb = as_rgb_uint8(image)
        if self.load(predictor, rgb):
            predictor.keep_image(rgb, image)  # the embedding is this image's: zoomable
            return True
        self.misses += 1
        path = self.path_for(predictor, rgb)
        predictor.set_image(rgb)
        try:
            predictor.save_embedding(path)
        except OSError:
            return False  # a read-only or full cache must not stop segmentation
        self.prune()
        return False

    def prune(self) -> None:
        """Delete the least recently used files until the folder holds at most max_bytes."""
        files = []
        for f in self.directory.glob("*.safetensors"):
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, f))
        total = sum(size for _, size, _ in files)
        for _, size, f in sorted(files, key=lambda item: item[0]):
            if total <= self.max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size
