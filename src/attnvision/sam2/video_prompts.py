"""The video predictor's prompts checked and put in model-input pixels.

Clicks and boxes arrive as the official predictor takes them (lists, numpy arrays or tensors;
(N, 2) or (1, N, 2) points, (N,) or (1, N) labels, a box (4,) XYXY) in video pixels, or in
[0, 1] with ``normalize_coords=False``. A box becomes two corner points with labels 2 and 3,
first, as SAM 2 was trained. Mistakes are one-line :class:`UserError`s, raised before the
state changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnvision.errors import UserError
from attnvision.sam2.tracking import Points


def check_frame_index(frame_idx: Any, num_frames: int, what: str = "frame_idx") -> int:
    if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
        raise UserError(f"{what} must be an integer frame number, not {frame_idx!r}")
    if not 0 <= frame_idx < num_frames:
        raise UserError(f"{what} {frame_idx} is out of range: the video has {num_frames} "
                        f"frames (0 to {num_frames - 1})")
    return int(frame_idx)


def _array(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values,
                           dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be numbers, not {type(values).__name__}") from None
    if not np.isfinite(array).all():
        raise UserError(f"{what} hold NaN or infinite values")
    return array


def prompt_points(points: Any, labels: Any, box: Any, clear_old_points: bool,
                  video_hw: tuple[int, int], image_size: int, normalize_coords: bool) -> Points:
    """((1, N, 2) float32 model-input pixels, (1, N) int32 labels), box corners first."""
    if (points is None) != (labels is None):
        raise UserError("give points and labels together (one label, 1 or 0, per point)")
    if points is None and box is None:
        raise UserError("give points with labels, or a box, to prompt an object")
    if box is not None and not clear_old_points:
        raise UserError("a box must come before any clicks on its frame: pass it with "
                        "clear_old_points=True (and the clicks in the same call)")
    h, w = video_hw
    # Where coordinates may lie: the frame in pixels, or [0, 1] when already normalised.
    limit = np.array([w, h], dtype=np.float64) if normalize_coords else np.ones(2)
    unit = "pixels of the video" if normalize_coords else "normalised [0, 1] units"
    coords, codes = [], []
    if box is not None:
        corners = _array(box, "box").reshape(-1)
        if corners.size != 4:
            raise UserError(f"a box is 4 numbers x0, y0, x1, y1, not {corners.size}")
        corners = corners.reshape(2, 2)
        if (corners < 0).any() or (corners > limit).any():
            raise UserError(f"box {corners.reshape(-1).tolist()} is off the frame "
                            f"({w}x{h}); give it in {unit}")
        coords.append(corners)
        codes.append(np.array([2, 3]))
    if points is not None:
        xy = _array(points, "points")
        if xy.ndim == 3 and xy.shape[0] == 1:
            xy = xy[0]
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise UserError(f"points must be (N, 2) x, y pairs, not shape {xy.shape}")
        lab = _array(labels, "labels").reshape(-1)
        if lab.size != len(xy):
            raise UserError(f"{len(xy)} points but {lab.size} labels: give one label each")
        if not np.isin(lab, (0, 1)).all():
            raise UserError(f"labels must be 1 (object) or 0 (background), not "
                            f"{sorted(set(lab.tolist()) - {0.0, 1.0})}")
        off = (xy < 0).any(axis=1) | (xy > limit).any(axis=1)
        if off.any():
            raise UserError(f"point {xy[off][0].tolist()} is off the frame ({w}x{h}); give "
                            f"points in {unit}")
        coords.append(xy)
        codes.append(lab)
    # In float32, in the official order, so the same clicks give the same numbers.
    xy_t = torch.from_numpy(np.concatenate(coords)).float()
    if normalize_coords:
        xy_t = xy_t / torch.tensor([w, h])
    return ((xy_t * image_size)[None],
            torch.from_numpy(np.concatenate(codes)).to(torch.int32)[None])


def prompt_mask(mask: Any, image_size: int, device: torch.device) -> Tensor:
    """An (H, W) mask (any size, bool or 0/1) -> (1, 1, S, S) float 0/1, as the official
    resize: antialiased bilinear then >= 0.5."""
    array = _array(mask, "mask")
    if array.ndim != 2 or 0 in array.shape:
        raise UserError(f"a mask must be a 2-D (H, W) array, not shape {array.shape}")
    x = torch.from_numpy(array > 0).float().to(device)[None, None]
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
        x = (x >= 0.5).float()
    return x
