"""SAM's image encoder: a ViT of windowed and global attention blocks, then a small neck.

(B, 3, 1024, 1024) pixels -> 16x16 patch tokens (B, 64, 64, D) + learned positions -> N blocks
(most attend inside 14x14 windows, a few globally; every one adds SAM's decomposed relative
positions to its logits) -> neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) -> (B, 256, 64, 64).

Module and parameter names are the official checkpoint's keys under ``image_encoder.``
(``patch_embed.proj``, ``pos_embed``, ``blocks.N.attn.rel_pos_h``, ``neck.0`` ...), so its
state dict loads with ``strict=True``. The arithmetic is the official one, arranged for speed
and memory:

- attention runs in PyTorch's fused kernel; the relative-position term goes in as an
  additive bias, built for a few query rows at a time, so no (heads, 4096, 4096) logits or
  bias tensor ever exists (the official global block holds three of them, 805 MB each in
  ViT-B);
- Q, K, V are computed before the windows are cut, on the real tokens only. The official code
  pads the normalised tokens with zeros and projects the padding too; the projection of a
  zero token is the ``qkv`` bias, so padding Q, K, V with that bias gives the same keys and
  values for 16 % less projection work (64x64 tokens pad to 70x70). Likewise the output
  projection runs after the padding is cropped away.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from attnvision.nn.attention import scaled_dot_product_attention
from attnvision.nn.tokens import PatchEmbed
from attnvision.nn.windows import window_partition, window_unpartition
from attnvision.sam.common import LayerNorm2d, MLPBlock

LayerNormEps6 = partial(nn.LayerNorm, eps=1e-6)  # SAM's norm_layer in every released model


@dataclass(frozen=True)
class EncoderConfig:
    """The official ``build_sam_vit_*`` encoder settings."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    mlp_ratio: float = 4.0
    out_chans: int = 256
    qkv_bias: bool = True
    use_rel_pos: bool = True
    window_size: int = 14


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(embed_dim=768, depth=12, num_heads=12,
                           global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": EncoderConfig(embed_dim=1024, depth=24, num_heads=16,
                           global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": EncoderConfig(embed_dim=1280, depth=32, num_heads=16,
                           global_attn_indexes=(7, 15, 23, 31)),
    # Ours, trained here: 256 px for CPU speed, a 16x16 grid with 8x8 windows and two global
    # blocks. The shipped file was moved to 384 then 512 px (a 32x32 grid) by later stages
    # and records that size (benchmarks/RESULTS.md, "the shipped small SAM").
    "sam_tiny": EncoderConfig(embed_dim=192, depth=8, num_heads=6, global_attn_indexes=(3, 7),
                              img_size=256, window_size=8),
}


def get_rel_pos(size: int, rel_pos: Tensor) -> Tensor:
    """Embeddings of every (query, key) offset along one axis: (size, size, C).

    Entry [i, j] is row i - j + size - 1 of the (2 * size - 1, C) table. Queries and keys
    share one grid here (self-attention at the training resolution), so nothing is resized.
    """
    if rel_pos.shape[0] != 2 * size - 1:
        raise ValueError(f"relative position table of {rel_pos.shape[0]} rows does not fit a "
                         f"grid of {size} tokens (expected {2 * size - 1}): run the encoder at "
                         f"the image size it was built for")
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + size - 1]


def _rows_per_chunk(rows: int, most: int) -> int:
    """The largest divisor of ``rows`` that is at most ``most`` (at least 1)."""
    return max(r for r in range(1, rows + 1) if rows % r == 0 and r <= max(1, most))


class Attention(nn.Module):
    """Multi-head self-attention on a (B, H, W, D) token grid, in windows or globally.

    With ``use_rel_pos`` the logits of query (qh, qw) and key (kh, kw) get
    q . Rh[qh - kh] + q . Rw[qw - kw] (unscaled q, as in SAM/MViTv2), learned tables
    ``rel_pos_h`` / ``rel_pos_w`` of shape (2 * size - 1, head_dim).
    """

    # Largest relative-position bias built at once, in elements (64 MB in float32): ViT-B's
    # global blocks build it 4 query rows (256 queries) at a time, its windows all at once.
    bias_chunk_elems: int = 1 << 24
    gpu_bias_chunk_elems: int = 1 << 30

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True,
                 input_size: tuple[int, int] | None = None, window_size: int = 0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the width ({dim})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is needed to size the relative position tables")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, self.head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B, H, W, D) -> (B, H, W, D) [, attention (B * nW, heads, N, N), N = tokens/window]
        h, w, d = x.shape[1:]
        qkv = self.qkv(x)  # (B, H, W, 3D)
        if self.window_size > 0:
            # Padded tokens must look like the official projected zero tokens: the qkv bias.
            qkv, pad_hw = window_partition(qkv, self.window_size, self.qkv.bias)
        bw, gh, gw = qkv.shape[:3]  # windows (or images) and the grid each one attends over
        q, k, v = qkv.reshape(bw, gh * gw, 3, self.num_heads, self.head_dim).permute(
            2, 0, 3, 1, 4).unbind(0)  # each (B', heads, N, hd), views of qkv
        attn = None
        if return_attention:
            bias = self._bias(*self._rel_terms(q, gh, gw), 0, gh) if self.use_rel_pos else None
            out, attn = scaled_dot_product_attention(q, k, v, bias=bias, return_attention=True)
            out = out.transpose(1, 2).reshape(bw, gh, gw, d)
        else:
            out = self._attend(q, k, v, gh, gw).view(bw, gh, gw, d)
        del q, k, v, qkv
        if self.window_size > 0:
            out = window_unpartition(out, self.window_size, pad_hw, (h, w))
        out = self.proj(out)
        return (out, attn) if return_attention else out

    def _rel_terms(self, q: Tensor, gh: int, gw: int) -> tuple[Tensor, Tensor]:
        """q . Rh and q . Rw: (B', heads, gh, gw, gh) and (B', heads, gh, gw, gw)."""
        # q: (B', heads, N, hd)
        rh = get_rel_pos(gh, self.rel_pos_h).to(q.dtype)  # (qh, kh, hd)
        rw = get_rel_pos(gw, self.rel_pos_w).to(q.dtype)  # (qw, kw, hd)
        r_q = q.unflatten(2, (gh, gw))  # (B', heads, qh, qw, hd)
        # einsum batches over qh (qw) without materialising the tables for every window and head
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
        return rel_h, rel_w

    @staticmethod
    def _bias(rel_h: Tensor, rel_w: Tensor, row0: int, row1: int,
              out: Tensor | None = None) -> Tensor:
        """Logit bias of query rows row0:row1 against every key: (B', heads, rows*qw, kh*kw).

        ``out``, a (B', heads, rows, qw, kh, kw) buffer, is reused from chunk to chunk: a fresh
        tensor this large costs more in page faults than the additions themselves.
        """
        bias = torch.add(rel_h[:, :, row0:row1, :, :, None], rel_w[:, :, row0:row1, :, None, :],
                         out=out)
        return bias.flatten(4).flatten(2, 3)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, gh: int, gw: int) -> Tensor:
        """softmax(q k^T / sqrt(hd) + bias) v, heads merged: (B', N, heads * hd)."""
        # q, k, v: (B', heads, N, hd)
        bw, heads, n, hd = q.shape
        if not self.use_rel_pos:
            out = scaled_dot_product_attention(q, k, v)
            return out.transpose(1, 2).reshape(bw, n, heads * hd)
        rel_h, rel_w = self._rel_terms(q, gh, gw)
        if (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
                and n >= self.low_precision_min_tokens):
            return self._attend_low_precision(q, k, v, rel_h, rel_w)
        # The fused kernel takes the bias whole; giving it a few query rows at a time keeps the
        # bias (the only (queries, keys)-sized tensor left) small, with the same result. Chunks
        # of rows dividing gh all fit one buffer. A GPU has the memory for the whole bias (805
        # MB in ViT-B, float32), and one kernel launch is faster there than sixteen.
        most = self.bias_chunk_elems if q.device.type == "cpu" else self.gpu_bias_chunk_elems
        rows = _rows_per_chunk(gh, most // (bw * heads * gw * n))
        # Autograd cannot follow writes into the reused buffers below: training takes the
        # whole bias, which its backward pass keeps anyway.
        if rows == gh or (torch.is_grad_enabled() and q.requires_grad):
            out = scaled_dot_product_attention(q, k, v, bias=self._bias(rel_h, rel_w, 0, gh))
            return out.transpose(1, 2).reshape(bw, n, heads * hd)
        buffer = q.new_empty(bw, heads, rows, gw, gh, gw)
        out = q.new_empty(bw, n, heads, hd)  # heads merged as each chunk is written
        for r0 in range(0, gh, rows):
            queries = slice(r0 * gw, (r0 + rows) * gw)
            bias = self._bias(rel_h, rel_w, r0, r0 + rows, out=buffer)
            out[:, queries] = scaled_dot_product_attention(q[:, :, queries], k, v,
                                                           bias=bias).transpose(1, 2)
        return out.view(bw, n, heads * hd)

    # Attention over at least this many tokens takes the low-precision path in bf16 / fp16
    # on the CPU: every block of SAM (measured faster for global blocks by 2x, for windows of
    # 196 tokens by 7%).
    low_precision_min_tokens: int = 1
    # Logits computed at once by the low-precision path, in elements (8 MB in float32): a
    # band of query rows of one head, small enough to stay in cache through the softmax.
    logit_chunk_elems: int = 1 << 21

    def _attend_low_precision(self, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor,
                              rel_w: Tensor) -> Tensor:
        """Attention for bf16 / fp16 on the CPU: products in q's precision, softmax in float32,
        one head and a band of query rows at a time: (B', N, heads * hd).

        PyTorch's fused CPU kernel is no faster in bf16 than in fp32, while bf16 matrix
        products run about 4x faster than fp32 ones on CPUs with AVX-512 BF16 or AMX; on such
        a CPU this path halves the time of a global block's attention.
        """
        # q, k, v: (B', heads, N, hd); rel_h: (B', heads, gh, gw, gh); rel_w: (.., gh, gw, gw)
        bw, heads, n, hd = q.shape
        gh, gw = rel_h.shape[2:4]
        rows = _rows_per_chunk(gh, self.logit_chunk_elems // (bw * gw * n))
        out = q.new_empty(bw, n, heads, hd)
        for h in range(heads):
            # Contiguous once per head, not copied by every product below.
            kt = k[:, h].transpose(1, 2).contiguous()  # (B', hd, N)
            vh = v[:, h].contiguous()  # (B', N, hd)
            qh = q[:, h] * hd ** -0.5  # (B', N, hd)
            for r0 in range(0, gh, rows):
                queries = slice(r0 * gw, (r0 + rows) * gw)
                logits = torch.bmm(qh[:, queries], kt).float()
                logits = logits.view(bw, rows, gw, gh, gw)  # (B', q rows, q cols, kh, kw)
                logits += rel_h[:, h, r0:r0 + rows, :, :, None]
                logits += rel_w[:, h, r0:r0 + rows, :, None, :]
                attn = logits.view(bw, rows * gw, n).softmax(dim=-1).to(v.dtype)
                out[:, queries, h] = torch.bmm(attn, vh)
        return out.view(bw, n, heads * hd)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then + mlp(norm2(.)), on (B, H, W, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_layer: Callable[[int], nn.Module] = LayerNormEps6,
                 act_layer: type[nn.Module] = nn.GELU, use_rel_pos: bool = False,
                 rel_pos_zero_init: bool = True, window_size: int = 0,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias,
                              use_rel_pos=use_rel_pos, rel_pos_zero_init=rel_pos_zero_init,
                              input_size=(window_size, window_size) if window_size else input_size,
                              window_size=window_size)
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act=act_layer)

    # Rows of tokens per MLP band in global blocks: 8 rows of 64 make a 6 MB hidden layer
    # (ViT-B, float32), which stays in cache between lin1, GELU and lin2.
    mlp_band_rows: int = 8

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, H, W, D)
        # Outside attention every token is on its own, and a windowed block attends only
        # inside its window row: so on a CPU the block runs on horizontal bands of the grid.
        # The same arithmetic on small bands keeps the temporaries (the 4x-wide MLP layer
        # above all) in cache, and small enough to be reused by the allocator instead of
        # being mapped afresh, page by page, for every block. A GPU wants the opposite: few,
        # large kernels.
        if x.device.type != "cpu":
            return self._mlp(x + self.attn(self.norm1(x)))
        if self.window_size > 0:
            return torch.cat([self._mlp(band + self.attn(self.norm1(band)))
                              for band in x.split(self.window_size, dim=1)], dim=1)
        x = x + self.attn(self.norm1(x))
        return torch.cat([self._mlp(band) for band in x.split(self.mlp_band_rows, dim=1)],
                         dim=1)

    def _mlp(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """SAM's ViT image encoder: (B, in_chans, img_size, img_size) -> (B, out_chans, g, g).

    g = img_size / patch_size (64 for SAM). Blocks whose index is in ``global_attn_indexes``
    attend over the whole grid; the others inside ``window_size`` windows (0: all global).
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, out_chans: int = 256, qkv_bias: bool = True,
                 norm_layer: Callable[[int], nn.Module] = LayerNormEps6,
                 act_layer: type[nn.Module] = nn.GELU, use_abs_pos: bool = True,
                 use_rel_pos: bool = False, rel_pos_zero_init: bool = True,
                 window_size: int = 0, global_attn_indexes: Sequence[int] = ()) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, flatten=False)
        # Learned absolute positions at the training grid (zeros until a checkpoint loads).
        self.pos_embed: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer, act_layer, use_rel_pos,
                  rel_pos_zero_init, window_size=0 if i in global_attn_indexes else window_size,
                  input_size=(grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, in_chans, img_size, img_size), normalised and padded pixels
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"the image encoder takes {self.img_size}x{self.img_size} images, "
                             f"got {tuple(x.shape[-2:])}: resize and pad first "
                             f"(Sam.preprocess)")
        x = self.patch_embed(x)  # (B, g, g, D)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))  # (B, out_chans, g, g)


def build_image_encoder(name: str, **overrides: Any) -> ImageEncoderViT:
    """The encoder of SAM ``vit_b`` / ``vit_l`` / ``vit_h``; ``overrides`` change any argument
    of :class:`ImageEncoderViT` (e.g. ``img_size=256, depth=2`` for small test models)."""
    if name not in ENCODER_CONFIGS:
        raise ValueError(f"unknown SAM encoder {name!r}: choose one of {sorted(ENCODER_CONFIGS)}")
    settings = asdict(ENCODER_CONFIGS[name])
    settings.update(overrides)
    return ImageEncoderViT(**settings)
