"""DAVIS-format video object segmentation: JPEG frames beside indexed PNG masks.

A mask is an 8-bit palette ("P" mode) PNG whose pixel values are object ids: 0 background,
1..N the objects, 255 "void" (ignored when measuring). The palette is PASCAL VOC's, which
DAVIS uses, so object 1 is red, 2 green, 3 yellow..., and a mask looks the same in any viewer.

Layouts read (``davis_sequences``): the DAVIS release (``JPEGImages/480p/SEQ/00000.jpg`` and
``Annotations/480p/SEQ/00000.png``), the same without the resolution folder, or one sequence
(``JPEGImages/`` and ``Annotations/`` side by side). A frame without its mask is not measured
(DAVIS gives the first frame's mask, and the test sets only that one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from attnvision.data.video import frame_files
from attnvision.errors import UserError
from attnvision.files import atomic_path

VOID = 255


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: PASCAL VOC's colour of each label (bits of the id spread over R, G, B)."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def write_indexed_png(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """(H, W) object ids 0..255 as an indexed PNG with the VOC palette, written atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"labels must be (H, W) ids in 0..255, got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().tobytes())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def read_indexed_png(path: str | os.PathLike[str]) -> np.ndarray:
    """(H, W) uint8 object ids of an indexed mask PNG (or a grey one, read as ids)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise UserError(f"{path} is an {image.mode} image, not a mask of object ids: "
                                "DAVIS masks are indexed (palette) PNGs, one id per pixel")
            return np.asarray(image).copy()
    except (OSError, SyntaxError) as e:
        raise UserError(f"{path} is not a readable PNG mask ({e})") from None


@dataclass(frozen=True)
class Sequence:
    name: str
    frames: tuple[Path, ...]  # every frame, in order
    masks: dict[int, Path]  # frame index -> its mask, where one is given

    def mask(self, index: int, frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """Frame ``index``'s (H, W) ids; with ``frame_size`` (height, width of its frame),
        a one-line error if the mask's size differs."""
        labels = read_indexed_png(self.masks[index])
        if frame_size is not None and labels.shape != tuple(frame_size):
            raise UserError(f"{self.masks[index]} is {labels.shape[1]}x{labels.shape[0]}, the "
                            f"frames of {self.name} are {frame_size[1]}x{frame_size[0]}: a "
                            "mask must match its frame")
        return labels

    def object_ids(self) -> list[int]:
        """The objects of the sequence: ids (not 0 or void) in any of its masks."""
        ids: set[int] = set()
        for index in self.masks:
            ids.update(int(i) for i in np.unique(self.mask(index)))
        return sorted(ids - {0, VOID})


def _sequence(name: str, frames_dir: Path, masks_dir: Path) -> Sequence:
    frames = frame_files(frames_dir)
    stems = {f.stem: i for i, f in enumerate(frames)}
    masks = {stems[m.stem]: m for m in masks_dir.glob("*.png") if m.stem in stems}
    if not masks:
        raise UserError(f"{masks_dir} holds no PNG mask named like a frame of {frames_dir} "
                        "(00000.png for 00000.jpg)")
    return Sequence(name, tuple(frames), dict(sorted(masks.items())))


def davis_sequences(root: str | os.PathLike[str]) -> list[Sequence]:
    """Every sequence of a DAVIS-format folder (see the module doc for the layouts)."""
    root = Path(root)
    frames_root, masks_root = root / "JPEGImages", root / "Annotations"
    if not frames_root.is_dir() or not masks_root.is_dir():
        raise UserError(f"{root} is not a DAVIS-format folder: it needs JPEGImages/ and "
                        "Annotations/ (one folder per sequence, or the frames themselves)")
    for resolution in ("480p", "Full-Resolution"):
        if (frames_root / resolution).is_dir() and (masks_root / resolution).is_dir():
            frames_root, masks_root = frames_root / resolution, masks_root / resolution
            break
    folders = sorted(p for p in frames_root.iterdir() if p.is_dir())
    if not folders:  # one sequence: the frames sit in JPEGImages/ itself
        return [_sequence(root.name, frames_root, masks_root)]
    missing = [f.name for f in folders if not (masks_root / f.name).is_dir()]
    if missing:
        raise UserError(f"{masks_root} has no masks folder for {', '.join(missing[:3])}: "
                        "each sequence needs Annotations/SEQ/")
    return [_sequence(f.name, f, masks_root / f.name) for f in folders]
