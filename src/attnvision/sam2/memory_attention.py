"""SAM 2's memory attention: the current frame's features attend to the memory bank.

Each of the 4 layers is a pre-LN block of the course, with one more step:
``z = z + SelfAttn(LN(z))``, then ``z = z + CrossAttn(LN(z), memory)``, then
``z = z + MLP(LN(z))``, and a last LayerNorm after the layers. The queries are the frame's
stride-16 tokens (64 x 64 at 1024 px, 256 wide); the keys and values are the memories of
earlier frames (64 wide, each HW tokens, their sine position code added to the keys) followed
by the object pointers (each 256-wide pointer cut into four 64-wide tokens).

Positions enter three ways: 0.1 x the frame's sine code added once at the input, the memories'
sine code (plus a learned per-slot time code) added to their keys, and rotary position
encoding (:mod:`attnvision.nn.rotary`) in both attentions, which turns the frame's queries and
every memory frame's keys by their grid position, so a query attends to the same place in
each memory frame. The object pointers have no grid position and are not turned.

Keys mirror the official checkpoint: ``memory_attention.layers.N.self_attn.q_proj``,
``cross_attn_image.k_proj`` (64 -> 256), ``linear1``, ``norm1``..``norm3``, and the last
``memory_attention.norm``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.attention import MultiHeadAttention, attend_heads
from attnvision.nn.rotary import apply_rotary, axial_rotary_angles


class RoPEAttention(MultiHeadAttention):
    """Multi-head attention whose queries, and keys laid out as whole grids (one or several
    frames of the queries' grid), are turned by their 2-D position; the last
    ``num_k_exclude_rope`` keys (object pointers) are not."""

    def __init__(self, embed_dim: int, num_heads: int, kv_dim: int | None = None,
                 dropout: float = 0.0, theta: float = 10000.0) -> None:
        super().__init__(embed_dim, num_heads, kv_dim=kv_dim, dropout=dropout)
        self.theta = theta
        self._angles: dict[tuple[int, int, str], Tensor] = {}

    def angles(self, height: int, width: int, device: torch.device) -> Tensor:
        key = (height, width, str(device))
        if key not in self._angles:
            self._angles[key] = axial_rotary_angles(self.internal_dim // self.num_heads,
                                                    height, width, self.theta).to(device)
        return self._angles[key]

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None,
                num_k_exclude_rope: int = 0, grid: tuple[int, int] | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # q: (B, Nq, D) on an (h, w) grid, Nq = h * w; k, v: (B, Nk, Dkv),
        # Nk = r * Nq + num_k_exclude_rope
        qh, kh, vh = self.project(q, k, v)  # (B, H, Nq or Nk, d)
        if grid is None:  # the official model's grids are square
            side = math.isqrt(q.shape[1])
            grid = (side, side)
        angles = self.angles(*grid, q.device)  # (Nq, d/2)
        n_rope = kh.shape[2] - num_k_exclude_rope
        if n_rope % qh.shape[2]:
            raise ValueError(f"{n_rope} keys to turn are not whole grids of {qh.shape[2]}")
        qh = apply_rotary(qh, angles)
        turned = apply_rotary(kh[:, :, :n_rope], angles.repeat(n_rope // qh.shape[2], 1))
        kh = torch.cat([turned, kh[:, :, n_rope:]], dim=2)
        return attend_heads(qh, kh, vh, self.out_proj, None, None, return_attention,
                            self.dropout if self.training else 0.0)


class MemoryAttentionLayer(nn.Module):
    """Self-attention, cross-attention to the memories, MLP: each pre-LN with a residual."""

    def __init__(self, d_model: int = 256, kv_dim: int = 64, dim_feedforward: int = 2048,
                 num_heads: int = 1, dropout: float = 0.1, theta: float = 10000.0) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, num_heads, dropout=dropout, theta=theta)
        self.cross_attn_image = RoPEAttention(d_model, num_heads, kv_dim=kv_dim,
                                              dropout=dropout, theta=theta)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = dropout

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, self.training)

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor, num_obj_ptr_tokens: int = 0,
                grid: tuple[int, int] | None = None) -> Tensor:
        # x: (B, N, D) the frame; memory, memory_pos: (B, M, Dkv)
        x = x + self._drop(self.self_attn(self.norm1(x), grid=grid))
        x = x + self._drop(self.cross_attn_image(self.norm2(x), memory + memory_pos, memory,
                                                 num_k_exclude_rope=num_obj_ptr_tokens,
                                                 grid=grid))
        hidden = self._drop(F.relu(self.linear1(self.norm3(x))))
        return x + self._drop(self.linear2(hidden))


class MemoryAttention(nn.Module):
    """The frame's features conditioned on the memory bank (module doc)."""

    def __init__(self, d_model: int = 256, num_layers: int = 4, kv_dim: int = 64,
                 dim_feedforward: int = 2048, num_heads: int = 1, dropout: float = 0.1,
                 theta: float = 10000.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, kv_dim, dim_feedforward, num_heads, dropout, theta)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, x_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                num_obj_ptr_tokens: int = 0, grid: tuple[int, int] | None = None) -> Tensor:
        # x, x_pos: (B, N, D) the frame's tokens and sine code; memory, memory_pos: (B, M, Dkv)
        x = x + 0.1 * x_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens, grid)
        return self.norm(x)
