"""SAM's training losses: focal + dice on the best of the ambiguous masks, MSE on the IoU head.

From the Segment Anything paper: the mask loss is a linear combination of focal loss and dice
loss in the ratio 20:1; with several masks per prompt, only the mask of lowest loss is
back-propagated (the prompt is ambiguous, any one right answer is right); the IoU head learns
the IoU of each predicted mask with the ground truth by mean squared error.

    focal(p, t) = mean over pixels of −α_t (1 − p_t)^γ log p_t,   p = σ(logit),
                  p_t = p if t else 1 − p,  α_t = α if t else 1 − α   (α = 0.25, γ = 2)
    dice(p, t)  = 1 − (2 Σ p t + 1) / (Σ p + Σ t + 1)

SAM 2 (:func:`sam2_loss`, its released training configs) keeps focal + dice 20:1 on the best
candidate, learns every candidate's IoU by L1 instead of MSE, adds a binary cross-entropy on
the decoder's object score (is the object in the frame at all), and counts the mask and IoU
terms only on frames where the object is present.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FOCAL_WEIGHT = 20.0  # focal : dice = 20 : 1


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> Tensor:
    """Focal loss of (..., H, W) logits against {0, 1} targets, averaged over pixels: (...)."""
    logits, targets = logits.float(), targets.float()
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # −log p_t
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (alpha_t * (1 - p_t) ** gamma * ce).flatten(-2).mean(-1)


def dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0) -> Tensor:
    """Soft dice loss of (..., H, W) logits against {0, 1} targets: (...)."""
    p, t = torch.sigmoid(logits.float()).flatten(-2), targets.float().flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)


def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """IoU of the thresholded (..., H, W) logits (> 0) with the targets: (...)."""
    pred, t = (logits > 0).flatten(-2), targets.bool().flatten(-2)
    union = (pred | t).sum(-1)
    return torch.where(union > 0, (pred & t).sum(-1) / union.clamp_min(1), 1.0)


def sam_loss(mask_logits: Tensor, iou_pred: Tensor, targets: Tensor,
             allowed: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """SAM's loss for B prompts with M candidate masks each.

    mask_logits: (B, M, H, W), iou_pred: (B, M), targets: (B, H, W) {0, 1} at the masks'
    resolution; allowed: (B, M) bool, the candidates each prompt is answered with (default
    all; SAM answers a lone point with its three ambiguous masks and anything else with its
    single-mask output). Returns the mean loss and its parts (focal, dice, iou_mse, the chosen
    mask index per prompt).
    """
    t = targets[:, None].expand_as(mask_logits)
    focal, dice = sigmoid_focal_loss(mask_logits, t), dice_loss(mask_logits, t)  # (B, M)
    per_mask = FOCAL_WEIGHT * focal + dice
    if allowed is None:
        allowed = torch.ones_like(per_mask, dtype=torch.bool)
    # Only the best allowed candidate learns: the prompt is ambiguous, any right answer is right.
    best = per_mask.masked_fill(~allowed, float("inf")).argmin(dim=1)  # (B,)
    rows = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        actual = mask_iou(mask_logits, t)  # (B, M): what the IoU head should predict
    # Every allowed candidate's IoU is learnt.
    iou_mse = ((iou_pred.float() - actual) ** 2)[allowed].mean()
    loss = per_mask[rows, best].mean() + iou_mse
    return loss, {"focal": focal[rows, best].mean().detach(),
                  "dice": dice[rows, best].mean().detach(), "iou_mse": iou_mse.detach(),
                  "best": best, "iou": actual[rows, best]}


# SAM 2's weights (the official training configs): mask focal 20, dice 1, IoU 1, object score 1.
IOU_WEIGHT = 1.0
OBJECT_SCORE_WEIGHT = 1.0


def object_score_loss(logits: Tensor, present: Tensor) -> Tensor:
    """Binary cross-entropy of SAM 2's object-score logits (N, 1) against whether the object
    has any pixel in the frame (N,) bool: (N,). (The official loss is a focal loss with
    γ = 0 and no α, which is this.)"""
    return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), present.float(),
                                              reduction="none")


def sam2_loss(mask_logits: Tensor, iou_pred: Tensor, object_score_logits: Tensor,
              targets: Tensor, present: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """SAM 2's loss for one decoder answer on one frame, per object: (N,) and its parts.

    mask_logits: (N, M, H, W) every candidate the decoder gave (M = 3 or 1), iou_pred: (N, M),
    object_score_logits: (N, 1), targets: (N, H, W) {0, 1} at the masks' resolution,
    present: (N,) bool, the object has pixels in the frame (at full resolution).

    As the official SAM 2 recipe: focal + dice (20:1) on the candidate of lowest focal + dice;
    the IoU head learns every candidate's IoU by L1 (``supervise_all_iou``, ``iou_use_l1_loss``:
    its prediction picks the mask on every tracked frame, and L1 keeps pushing on the small
    differences that decide that pick where MSE's gradient fades); mask and IoU terms count
    only where the object is present (an absent object has no mask to learn; the object
    score says so); the object score learns presence everywhere.
    """
    t = targets[:, None].expand_as(mask_logits)
    focal, dice = sigmoid_focal_loss(mask_logits, t), dice_loss(mask_logits, t)  # (N, M)
    per_mask = FOCAL_WEIGHT * focal + dice
    best = per_mask.argmin(dim=1)  # (N,)
    rows = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        actual = mask_iou(mask_logits, t)  # (N, M)
    iou_l1 = (iou_pred.float() - actual).abs().mean(dim=1)  # (N,)
    weight = present.float()
    mask_term = per_mask[rows, best] * weight
    iou_term = IOU_WEIGHT * iou_l1 * weight
    object_term = OBJECT_SCORE_WEIGHT * object_score_loss(object_score_logits, present)
    return mask_term + iou_term + object_term, {
        "focal": (focal[rows, best] * weight).detach(), "dice": (dice[rows, best] * weight)
        .detach(), "iou_l1": iou_term.detach(), "object": object_term.detach(), "best": best,
        "iou": actual[rows, best]}
