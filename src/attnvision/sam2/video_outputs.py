"""The video predictor's outputs: every object's logits on a frame, at the video's size.

Logits are low-res (S/4 square) per object until shown; small background holes are filled
first (as the official, on the low-res logits), and with ``non_overlap_masks`` each pixel
goes to its highest-scoring object.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnvision.sam2.tracking import NO_OBJECT_LOGIT
from attnvision.sam2.transforms import _small_components
from attnvision.sam2.video_state import InferenceState


def fill_holes(logits: Tensor, max_area: int) -> Tensor:
    """Background regions (logits <= 0, 8-connected) of at most ``max_area`` pixels set to
    0.1: just foreground, as the official clean-up."""
    # logits: (B, 1, h, w)
    if max_area <= 0:
        return logits
    flat = logits.detach().flatten(0, 1).cpu().numpy()
    holes = torch.stack([torch.from_numpy(_small_components(m <= 0, max_area)) for m in flat])
    return torch.where(holes.view_as(logits).to(logits.device), 0.1, logits)


def non_overlapping(masks: Tensor) -> Tensor:
    """Each pixel kept by its highest-scoring object only; the others' logits there capped
    at -10."""
    # masks: (N, 1, H, W)
    best = masks.argmax(dim=0, keepdim=True)
    mine = best == torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(mine, masks, masks.clamp(max=-10.0))


def frame_masks(state: InferenceState, non_overlap: bool, frame_idx: int) -> Tensor:
    """Every object's latest masks on the frame at video size; "absent" where unseen."""
    h, w = state.video_height, state.video_width
    out = torch.full((len(state.objects), 1, h, w), NO_OBJECT_LOGIT, device=state.device)
    for i, obj in enumerate(state.objects.values()):
        logits = obj.latest_logits(frame_idx)
        if logits is not None:
            out[i:i + 1] = F.interpolate(logits.to(state.device, torch.float32),
                                         size=(h, w), mode="bilinear",
                                         align_corners=False)
    return non_overlapping(out) if non_overlap and len(out) else out


def video_res(state: InferenceState, non_overlap: bool, logits: Tensor) -> Tensor:
    # logits: (N, 1, S/4, S/4) -> (N, 1, H, W)
    masks = F.interpolate(logits.float(), size=(state.video_height, state.video_width),
                          mode="bilinear", align_corners=False)
    return non_overlapping(masks) if non_overlap else masks
