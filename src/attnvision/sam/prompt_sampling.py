"""Prompts simulated from ground-truth masks, as SAM is trained (Segment Anything, §3 and
appendix A): the first prompt of an example is a point drawn uniformly from the object, or
its box with noise (standard deviation 10 % of the side, at most 20 pixels); each further
point is drawn uniformly from the error region between the last prediction and the object,
positive where the prediction missed the object, negative where it spilled over.

All functions take a batch of (B, H, W) boolean masks and a ``torch.Generator``, and return
(x, y) pixel coordinates as the predictor takes them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnvision.sam.masks import masks_to_boxes


def _uniform_pixel(region: Tensor, generator: torch.Generator | None) -> Tensor:
    """One pixel drawn uniformly from each (H, W) region of a (B, H, W) batch: (B, 2) x, y.
    Every region must hold at least one pixel."""
    b, w = region.shape[0], region.shape[2]
    inside = region.reshape(b, -1)
    counts = inside.sum(-1)  # (B,)
    if (counts == 0).any():
        raise ValueError("cannot draw a point from an empty mask")
    # The k-th pixel of the region, k uniform: found by a running count, which is about 50x
    # faster than torch.multinomial over the whole image (10 % of a training step before).
    k = (torch.rand(b, generator=generator, device=region.device) * counts).long()
    k = torch.minimum(k, counts - 1)  # (B,) in 0..count-1
    running = inside.cumsum(-1, dtype=torch.int32)  # (B, H*W)
    flat = torch.searchsorted(running, (k + 1).to(torch.int32)[:, None])[:, 0]
    return torch.stack([flat % w, flat // w], dim=-1).float()


def sample_points(masks: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A point inside each object, uniformly: (B, H, W) bool -> (B, 2) x, y."""
    return _uniform_pixel(masks.bool(), generator)


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes (x0, y0, x1, y1), inclusive pixel coordinates: (B, H, W) -> (B, 4) float."""
    return masks_to_boxes(masks.bool()).float()


def noisy_boxes(masks: Tensor, generator: torch.Generator | None = None,
                relative_std: float = 0.1, max_noise: float = 20.0) -> Tensor:
    """Each object's box with every coordinate moved by N(0, (relative_std * side)²), clipped
    to ±max_noise pixels and to the image: (B, H, W) -> (B, 4) x0, y0, x1, y1."""
    boxes = mask_boxes(masks)
    side = torch.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], -1)
    std = relative_std * side.repeat(1, 2)  # (B, 4): width for x, height for y
    noise = torch.randn(boxes.shape, generator=generator, device=boxes.device) * std
    boxes = boxes + noise.clamp(-max_noise, max_noise)
    h, w = masks.shape[1:]
    limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], device=boxes.device, dtype=boxes.dtype)
    boxes = torch.minimum(boxes.clamp_min(0), limit)
    # Noise may cross the corners over: keep x0 <= x1 and y0 <= y1.
    lo, hi = torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])
    return torch.cat([lo, hi], dim=-1)


def error_points(predicted: Tensor, masks: Tensor, generator: torch.Generator | None = None
                 ) -> tuple[Tensor, Tensor]:
    """The next click: a point drawn uniformly from where the prediction and the object
    disagree, labelled 1 (the object was missed there) or 0 (the prediction spilled over).
    Where they agree everywhere, a positive point inside the object.

    predicted, masks: (B, H, W) bool -> points (B, 2) x, y and labels (B,) int64.
    """
    predicted, masks = predicted.bool(), masks.bool()
    error = predicted ^ masks
    perfect = ~error.flatten(1).any(dim=1)
    region = torch.where(perfect[:, None, None], masks, error)
    points = _uniform_pixel(region, generator)
    x, y = points[:, 0].long(), points[:, 1].long()
    labels = masks[torch.arange(len(masks), device=masks.device), y, x].long()
    return points, labels
