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

from attnvision.nn.attention import (
    MultiHeadAttention,
    attend_heads,
    banded_attention,
    merge_heads,
    split_heads,
)
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

    # Logits per band of the banded attention on a CPU, by low precision or not. Each band
    # reads every key once, so larger bands read the 28k keys of 7 memories fewer times; past
    # these sizes the band's logits leave the cache (measured on the tiny model's 4096 x 28736
    # cross-attention: float32 550 ms at 8M against 747 ms at 2M; bf16 292 ms at 4M, 337 ms
    # at 2M, 498 ms at 8M).
    chunk_elems: dict[bool, int] = {False: 1 << 23, True: 1 << 22}  # noqa: RUF012

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
        k = q if k is None else k
        v = k if v is None else v
        heads = self.num_heads
        qh, kh = split_heads(self.q_proj(q), heads), split_heads(self.k_proj(k), heads)
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
        dropout = self.dropout if self.training else 0.0
        low_precision = qh.dtype in (torch.bfloat16, torch.float16)
        if return_attention or dropout or q.device.type != "cpu":
            return attend_heads(qh, kh, split_heads(self.v_proj(v), heads), self.out_proj,
                                None, None, return_attention, dropout)
        d = self.internal_dim // heads
        if v.shape[-1] >= d:
            vh = split_heads(self.v_proj(v), heads)
            out = banded_attention(qh, kh, vh, chunk_elems=self.chunk_elems[True]) if (
                low_precision) else F.scaled_dot_product_attention(qh, kh, vh)
            return self.out_proj(merge_heads(out))
        # Values narrower than a head (the 64-wide memories, 256-wide heads): the weights of
        # each query row sum to 1, so softmax(S) (V W^T + b) = (softmax(S) V) W^T + b, and the
        # attention meets the memories themselves, a quarter of the products. The fused
        # kernel takes no values narrower than the keys, so this runs banded in any precision.
        raw = v.to(qh.dtype)[:, None].expand(-1, heads, -1, -1)  # (B, H, Nk, Dkv)
        mixed = banded_attention(qh, kh, raw, chunk_elems=self.chunk_elems[low_precision])
        weight = self.v_proj.weight.view(heads, d, -1).to(mixed.dtype)  # (H, d, Dkv)
        out = torch.einsum("bhnc,hdc->bhnd", mixed, weight)
        if self.v_proj.bias is not None:
            out = out + self.v_proj.bias.view(heads, 1, d).to(out.dtype)
        return self.out_proj(merge_heads(out))


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
                grid: tuple[int, int] | None = None, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        """``return_attention``: also the cross-attention's weights (B, H, N, M), from the
        explicit softmax (outputs then differ from the fused kernels' by rounding only)."""
        # x: (B, N, D) the frame; memory, memory_pos: (B, M, Dkv)
        x = x + self._drop(self.self_attn(self.norm1(x), grid=grid))
        cross = self.cross_attn_image(self.norm2(x), memory + memory_pos, memory,
                                      num_k_exclude_rope=num_obj_ptr_tokens, grid=grid,
                                      return_attention=return_attention)
        attn = None
        if return_attention:
            cross, attn = cross
        x = x + self._drop(cross)
        hidden = self._drop(F.relu(self.linear1(self.norm3(x))))
        x = x + self._drop(self.linear2(hidden))
        return x if attn is None else (x, attn)


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
                num_obj_ptr_tokens: int = 0, grid: tuple[int, int] | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``return_attention``: also each layer's cross-attention weights, a list of
        (B, H, N, M): what every query of the frame reads of every memory token."""
        # x, x_pos: (B, N, D) the frame's tokens and sine code; memory, memory_pos: (B, M, Dkv)
        x = x + 0.1 * x_pos
        weights = []
        for layer in self.layers:
            if return_attention:
                x, attn = layer(x, memory, memory_pos, num_obj_ptr_tokens, grid,
                                return_attention=True)
                weights.append(attn)
            else:
                x = layer(x, memory, memory_pos, num_obj_ptr_tokens, grid)
        x = self.norm(x)
        return (x, weights) if return_attention else x
