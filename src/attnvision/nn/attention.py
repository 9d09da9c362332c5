"""Scaled dot-product attention and multi-head attention, self and cross.

softmax(Q K^T / sqrt(d) + bias) V has two implementations that tests hold equal:
- the fast path, ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, no
  (Nq, Nk) matrix kept for backward on CPU and GPU), used by default;
- the explicit path, which builds the attention matrix A and returns it, used when a caller
  asks for ``return_attention=True`` (attention maps, teaching).

Masks follow PyTorch's convention: a boolean mask is True where a query may attend to a key;
a float mask is added to the logits. ``bias`` is always additive (relative positions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _logit_offset(mask: Tensor | None, bias: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """One additive or boolean mask from a mask and a bias, in the form SDPA accepts."""
    if bias is None:
        return mask
    bias = bias.to(dtype)
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return bias.masked_fill(~mask, float("-inf"))
    return bias + mask.to(dtype)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    return_attention: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T * scale + bias) V, scale = 1/sqrt(d) by default.

    q: (..., Nq, d), k: (..., Nk, d), v: (..., Nk, dv); mask and bias broadcast to
    (..., Nq, Nk). Returns (..., Nq, dv), and with ``return_attention`` also the
    attention matrix A (..., Nq, Nk) whose rows sum to 1 (before dropout).
    """
    offset = _logit_offset(mask, bias, q.dtype)
    if not return_attention:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=offset, dropout_p=dropout_p,
                                              scale=scale)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = (q * scale) @ k.transpose(-2, -1)  # (..., Nq, Nk)
    if offset is not None:
        if offset.dtype == torch.bool:
            logits = logits.masked_fill(~offset, float("-inf"))
        else:
            logits = logits + offset
    attn = logits.softmax(dim=-1)
    weights = F.dropout(attn, p=dropout_p) if dropout_p > 0 else attn
    return weights @ v, attn


def banded_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
                     chunk_elems: int = 1 << 21) -> Tensor:
    """softmax(Q K^T * scale) V with the products in q's precision and the softmax in float32,
    a band of query rows at a time: the low-precision path on a CPU.

    PyTorch's fused CPU kernel runs bf16 no faster than float32, while bf16 matrix products
    run about 4x faster than float32 ones on CPUs with AVX-512 BF16 or AMX. Each band's logits
    (at most ``chunk_elems`` of them, 8 MB in float32) stay in cache through the softmax.
    q: (B, H, Nq, d), k: (B, H, Nk, d), v: (B, H, Nk, dv) -> (B, H, Nq, dv).
    """
    b, h, nq, d = q.shape
    nk = k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    q = (q * scale).reshape(b * h, nq, d)
    # Transposed once here: bmm would otherwise copy a transposed bf16 operand every band.
    kt = k.reshape(b * h, nk, d).transpose(1, 2).contiguous()  # (BH, d, Nk)
    v = v.reshape(b * h, nk, v.shape[-1])
    out = q.new_empty(b * h, nq, v.shape[-1])
    # Whole (batch x head) slices per band when the sequences are short (windows), a band
    # of query rows of one slice when they are long.
    per_slice = max(1, chunk_elems // (nq * nk))
    rows = nq if per_slice > 1 else max(1, chunk_elems // nk)
    for s0 in range(0, b * h, per_slice):
        s = slice(s0, s0 + per_slice)
        for r0 in range(0, nq, rows):
            r = slice(r0, r0 + rows)
            weights = torch.bmm(q[s, r], kt[s]).float().softmax(dim=-1).to(v.dtype)
            out[s, r] = torch.bmm(weights, v[s])
    return out.view(b, h, nq, -1)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    # x: (B, N, H*d) -> (B, H, N, d)
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    # x: (B, H, N, d) -> (B, N, H*d)
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _per_head(t: Tensor | None) -> Tensor | None:
    # A (B, Nq, Nk) mask or bias applies to every head: give it a head axis.
    return t[:, None] if t is not None and t.ndim == 3 else t


def attend_heads(q: Tensor, k: Tensor, v: Tensor, out_proj: nn.Module, mask: Tensor | None,
                 bias: Tensor | None, return_attention: bool, dropout_p: float
                 ) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of every head, heads merged, then the output projection.

    q: (B, H, Nq, d), k: (B, H, Nk, d), v: (B, H, Nk, d) -> (B, Nq, H*d -> D)
    [, attention (B, H, Nq, Nk)].
    """
    mask, bias = _per_head(mask), _per_head(bias)
    if return_attention:
        out, attn = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias,
                                                 return_attention=True, dropout_p=dropout_p)
        return out_proj(merge_heads(out)), attn
    # No name holds the per-head output: it is freed once merged, before the projection runs.
    out = merge_heads(scaled_dot_product_attention(q, k, v, mask=mask, bias=bias,
                                                   dropout_p=dropout_p))
    return out_proj(out)


class MultiHeadAttention(nn.Module):
    """k heads of attention with their own Q, K, V projections and one output projection.

    Self-attention when called with one input, cross-attention with (queries, keys, values).
    ``downsample_rate`` shrinks the width the heads work in (SAM's decoder uses 2 for its
    cross-attentions); ``kv_dim`` lets keys and values come from tokens of another width.
    Parameter names (q_proj, k_proj, v_proj, out_proj) match SAM's mask decoder.
    """

    def __init__(self, embed_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_dim: int | None = None, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.internal_dim = embed_dim // downsample_rate
        self.num_heads = num_heads
        self.dropout = dropout
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the attention width "
                             f"({self.internal_dim} = {embed_dim} / {downsample_rate})")
        kv_dim = embed_dim if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(embed_dim, self.internal_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, self.internal_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, self.internal_dim, bias=bias)
        self.out_proj = nn.Linear(self.internal_dim, embed_dim, bias=bias)

    def project(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values projected and split into heads: (B, H, N, d) each; keys
        default to the queries and values to the keys (self-attention)."""
        # q: (B, Nq, D), k: (B, Nk, Dkv), v: (B, Nk, Dkv)
        k = q if k is None else k
        v = k if v is None else v
        return (split_heads(self.q_proj(q), self.num_heads),
                split_heads(self.k_proj(k), self.num_heads),
                split_heads(self.v_proj(v), self.num_heads))

    def forward(self, q: Tensor, k: Tensor | None = None, v: Tensor | None = None,
                mask: Tensor | None = None, bias: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # q: (B, Nq, D), k: (B, Nk, Dkv), v: (B, Nk, Dkv); mask, bias: (B, [H,] Nq, Nk)
        qh, kh, vh = self.project(q, k, v)
        return attend_heads(qh, kh, vh, self.out_proj, mask, bias, return_attention,
                            self.dropout if self.training else 0.0)


class SelfAttention(nn.Module):
    """Multi-head self-attention with Q, K, V computed by one fused linear layer.

    The same arithmetic as :class:`MultiHeadAttention` on one input, laid out as timm's and
    SAM's image encoders store it (``qkv`` of shape (3D, D), then ``proj``) so their
    checkpoints load under the same names.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the width ({dim})")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, bias: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B, N, D)
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, d)
        return attend_heads(q, k, v, self.proj, mask, bias, return_attention,
                            self.dropout if self.training else 0.0)
