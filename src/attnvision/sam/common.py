"""Small layers that SAM's image encoder, prompt encoder and mask decoder share.

Names match the official checkpoints: ``LayerNorm2d`` keeps ``weight`` and ``bias``;
``MLPBlock`` keeps ``lin1`` and ``lin2`` (``mlp.lin1`` in the image encoder's blocks and in the
two-way transformer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map, separately at every pixel.

    Computed as ``F.layer_norm`` on a channels-last view: one fused kernel instead of the
    mean / variance / normalise chain, with the same result. The output keeps channels-last
    strides; convolutions take it as is.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        # A Python constant, not read from the input: ONNX tracing needs the shape fixed.
        self.normalized_shape = (num_channels,)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W)
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """lin2(act(lin1(x))): GELU in the image encoder, ReLU in the two-way transformer."""

    def __init__(self, embedding_dim: int, mlp_dim: int,
                 act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., D)
        return self.lin2(self.act(self.lin1(x)))
