"""Where a ViT looks: attention rollout and the class token's attention.

Attention rollout (Abnar & Zuidema, 2020) follows information from the input patches to the
class token through every block: each block's head-averaged attention A_l, with the residual
connection counted as an identity (A_l <- (A_l + I) / 2, rows renormalised), multiplied
layer after layer, R = A_L ... A_1. Row 0 of R, over the patch tokens, is the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnvision.vit.model import VisionTransformer


def attention_rollout(maps: list[Tensor], residual: float = 0.5) -> Tensor:
    """R = prod_l normalise(residual I + (1 - residual) mean_heads(A_l)): (B, N, N)."""
    if not maps:
        raise ValueError("attention_rollout needs the attention maps of at least one block")
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, dtype=maps[0].dtype, device=maps[0].device).expand(b, n, n)
    rollout = eye
    for attn in maps:
        a = residual * eye + (1 - residual) * attn.mean(dim=1)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    return rollout


@dataclass
class Explanation:
    probabilities: Tensor  # (B, num_classes)
    rollout: Tensor  # (B, h, w): the class token's rollout over the patch grid, sums to <= 1
    cls_attention: Tensor  # (B, heads, h, w): last block, class token -> patches


@torch.no_grad()
def explain(model: VisionTransformer, images: Tensor) -> Explanation:
    """Predictions with the class-token rollout and last-block attention over the patches."""
    if not model.config.class_token:
        raise ValueError("explanations need a class-token ViT (pool='token')")
    logits, maps = model(images, return_attention=True)
    gh = images.shape[2] // model.config.patch_size
    gw = images.shape[3] // model.config.patch_size
    p = model.num_prefix_tokens
    rollout = attention_rollout(maps)[:, 0, p:].reshape(-1, gh, gw)
    cls = maps[-1][:, :, 0, p:].reshape(images.shape[0], -1, gh, gw)
    return Explanation(logits.softmax(dim=-1), rollout, cls)
