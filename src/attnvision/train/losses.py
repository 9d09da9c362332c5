"""Classification loss with label smoothing.

With K classes, smoothing ε and the true class y, the target distribution is
q_k = (1 − ε)·[k = y] + ε/K, and the loss is the cross entropy −Σ_k q_k log p_k, i.e.

    loss = (1 − ε)·(−log p_y) + ε · mean_k(−log p_k),      p = softmax(logits)

averaged over the batch. Smoothing keeps the logits from growing without bound on an easy,
small training set, which is where ViTs overfit first.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def label_smoothing_cross_entropy(logits: Tensor, targets: Tensor,
                                  smoothing: float = 0.1) -> Tensor:
    """Mean label-smoothed cross entropy of (B, K) logits against (B,) class indices."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    # float32 even under bf16 autocast: log-softmax over K classes loses digits in bf16.
    return F.cross_entropy(logits.float(), targets, label_smoothing=smoothing)


class LabelSmoothingCrossEntropy(nn.Module):
    """Module form of :func:`label_smoothing_cross_entropy`, callable as ``loss(logits, y)``."""

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        # logits: (B, K), targets: (B,) int64
        return label_smoothing_cross_entropy(logits, targets, self.smoothing)
