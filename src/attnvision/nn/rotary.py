"""Rotary position encoding (RoPE) on a 2-D grid, in real arithmetic.

RoPE turns each pair of a query's or key's numbers (x_2i, x_2i+1) by an angle that grows with
the token's position, p * w_i, with the course's frequencies w_i = 1 / theta^(4i / d) here.
A turn by a and a turn by b meet in the dot product as a turn by a - b, so attention logits
see only relative positions, and the sinusoids need no learned weights.

On a grid ("axial" RoPE, as SAM 2's memory attention), the first half of the pairs turns
with the token's column x and the second half with its row y. The official code writes the
turn as a product of complex numbers; here it is the same rotation written with cos and sin,
(x1, x2) -> (x1 cos a - x2 sin a, x1 sin a + x2 cos a), which gives the same numbers and also
exports to ONNX, which has no complex type.
"""

from __future__ import annotations

import torch
from torch import Tensor


def axial_rotary_angles(dim: int, height: int, width: int, theta: float = 10000.0) -> Tensor:
    """(height * width, dim / 2) angles of a row-major grid's tokens: for pair i < dim/4 the
    column x times w_i, for the others the row y times w_(i - dim/4)."""
    if dim % 4:
        raise ValueError(f"axial rotary encoding needs a head width divisible by 4, got {dim}")
    freqs = 1.0 / theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim)  # (dim/4,)
    t = torch.arange(height * width, dtype=torch.float32)
    x, y = t % width, torch.div(t, width, rounding_mode="floor")
    return torch.cat([torch.outer(x, freqs), torch.outer(y, freqs)], dim=-1)


def apply_rotary(x: Tensor, angles: Tensor) -> Tensor:
    """Turn each pair (x[..., 2i], x[..., 2i+1]) of (..., N, d) tokens by ``angles`` (N, d/2);
    computed in float32, returned in x's dtype."""
    # x: (..., N, d), angles: (N, d/2)
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    cos, sin = angles.cos(), angles.sin()
    turned = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return turned.flatten(-2).to(x.dtype)
