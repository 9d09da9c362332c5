"""Positional encodings: what gives a set of tokens back its order.

- :func:`sinusoidal_encoding` is the course's formula, p_t = [sin(w_0 t), cos(w_0 t), ...,
  sin(w_{D/2-1} t), cos(w_{D/2-1} t)] with w_k = 1 / 10000^(2k/D), k counted from 0 as in
  "Attention is all you need" (the slide writes k = 1..D/2; the values are the same family).
- :func:`sincos_2d_encoding` applies it to the column and the row of a patch grid.
- ``layout`` orders the same numbers as other codes do: "sin_cos" puts every sine before
  every cosine (MAE's and DiT's position tables), "cos_sin" every cosine first (DiT's
  timestep embedding); ``freq_shift`` gives diffusers' w_k = 1 / 10000^(k / (D/2 - shift)).
- :class:`PositionEmbeddingRandom` is the random-Fourier encoding of SAM's prompt encoder.
- :func:`position_similarity` is K = P . P^T, the slide's picture of relative position.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

Layout = Literal["interleaved", "sin_cos", "cos_sin"]


def sinusoidal_frequencies(dim: int, freq_shift: float = 0.0) -> Tensor:
    """w_k = 1 / 10000^(2k/D) for k = 0 .. D/2 - 1, shape (D/2,).

    With ``freq_shift`` s, w_k = 1 / 10000^(k / (D/2 - s)): diffusers' timestep embedding
    uses s = 1, which makes the last frequency exactly 1/10000.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"the encoding dimension must be a positive even number, got {dim}")
    if dim // 2 - freq_shift <= 0:
        raise ValueError(f"freq_shift ({freq_shift}) must be below half the dimension ({dim})")
    k = torch.arange(dim // 2, dtype=torch.float64)
    if freq_shift == 0:
        return 1.0 / (10000.0 ** (2 * k / dim))
    return 1.0 / (10000.0 ** (k / (dim // 2 - freq_shift)))


def sinusoidal_encoding(num_positions: int, dim: int, positions: Tensor | None = None,
                        layout: Layout = "interleaved", freq_shift: float = 0.0) -> Tensor:
    """The (num_positions, dim) matrix P whose row t is p_t; p_t[2k] = sin(w_k t), p_t[2k+1] = cos.

    ``positions`` replaces t = 0 .. num_positions-1 with any (num_positions,) values (the
    result is on their device). ``layout`` "sin_cos" returns [sin(w_0 t) .. sin(w_{D/2-1} t),
    cos(w_0 t) .. cos(w_{D/2-1} t)], "cos_sin" the cosines first: the same numbers, in
    another order. Computed in float64 and returned as float32 so large t keep their precision.
    """
    if num_positions < 0:
        raise ValueError(f"num_positions must be >= 0, got {num_positions}")
    omega = sinusoidal_frequencies(dim, freq_shift)
    if positions is None:
        t = torch.arange(num_positions, dtype=torch.float64)
    else:
        t = positions.to(torch.float64).reshape(-1)
        omega = omega.to(t.device)
    angles = t[:, None] * omega[None, :]  # (T, D/2)
    if layout == "sin_cos":
        return torch.cat([angles.sin(), angles.cos()], dim=-1).float()
    if layout == "cos_sin":
        return torch.cat([angles.cos(), angles.sin()], dim=-1).float()
    if layout != "interleaved":
        raise ValueError(f"unknown layout {layout!r}: choose interleaved, sin_cos or cos_sin")
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (T, D/2, 2): interleave sin, cos
    return pe.reshape(len(t), dim).float()


def sincos_2d_encoding(grid_h: int, grid_w: int, dim: int, layout: Layout = "interleaved",
                       spacing: tuple[float, float] = (1.0, 1.0)) -> Tensor:
    """(grid_h * grid_w, dim) encoding of a patch grid in row-major token order.

    The first dim/2 numbers encode the column with :func:`sinusoidal_encoding`, the last dim/2
    the row, so that tokens in the same row share half their code. Row i sits at position
    i * spacing[0] and column j at j * spacing[1] (1 by default: the cell's index).
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos encoding needs a dimension divisible by 4, got {dim}")
    col_pos = torch.arange(grid_w, dtype=torch.float64) * spacing[1]
    row_pos = torch.arange(grid_h, dtype=torch.float64) * spacing[0]
    cols = sinusoidal_encoding(grid_w, dim // 2, col_pos, layout)  # (W, D/2)
    rows = sinusoidal_encoding(grid_h, dim // 2, row_pos, layout)  # (H, D/2)
    grid = torch.cat([
        cols[None, :, :].expand(grid_h, grid_w, dim // 2),
        rows[:, None, :].expand(grid_h, grid_w, dim // 2),
    ], dim=-1)
    return grid.reshape(grid_h * grid_w, dim)


def position_similarity(pe: Tensor) -> Tensor:
    """K = P . P^T: (T, T) similarity of every position with every other."""
    return pe @ pe.T


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of (x, y) coordinates, as in SAM's prompt encoder.

    A fixed Gaussian matrix G (2, F) maps coordinates scaled to [-1, 1] to F frequencies;
    the code is [sin(2 pi c G), cos(2 pi c G)], 2F numbers. The buffer name matches SAM's
    checkpoints (``pe_layer.positional_encoding_gaussian_matrix``).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix",
                             scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        # coords: (..., 2) as (x, y) in [0, 1]
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix  # (..., F)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)  # (..., 2F)

    def forward(self, size: tuple[int, int]) -> Tensor:
        """Encoding of every cell centre of an (h, w) grid: (2F, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(coords).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Encoding of pixel coordinates (B, N, 2) as (x, y) in an image of (h, w): (B, N, 2F)."""
        h, w = image_size
        size = torch.tensor([w, h], device=coords.device, dtype=torch.float32)
        return self._pe_encoding(coords.float() / size)
