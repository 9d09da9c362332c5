"""Hiera, SAM 2's image trunk: a ViT that halves its token grid at every stage.

(B, 3, S, S) pixels -> 7x7 stride-4 convolution -> (B, S/4, S/4, C) tokens + positions ->
stages of blocks; the first block of each later stage pools its queries 2x2 (max-pool, stride
2), so its output has a quarter of the tokens and twice the width and heads. The four stages'
outputs (strides 4, 8, 16, 32) feed the FPN neck.

- Most blocks attend inside square windows, a few (``global_att_blocks``) over the whole grid.
  The window side lags one block at a stage change: the pooling block still cuts the grid
  with the previous stage's windows, which pooling halves (8 -> 4 at 1024 px).
- Positions: a small learned "background" map (``pos_embed``, 7x7 or 14x14) interpolated
  bicubically to the grid, plus one learned window-sized map (``pos_embed_window``) tiled
  over it, so every window gets the same local code ("Window Attention is Bugged",
  arXiv 2311.05613).
- The residual of a widening block is the normalised input projected (``proj``) and pooled.

Module names mirror the official checkpoint keys under ``image_encoder.trunk.``
(``patch_embed.proj``, ``pos_embed``, ``pos_embed_window``, ``blocks.N.norm1``,
``blocks.N.attn.qkv``, ``blocks.N.attn.proj``, ``blocks.N.proj``, ``blocks.N.mlp.layers.M``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.attention import (
    banded_attention,
    merge_heads,
    scaled_dot_product_attention,
)
from attnvision.nn.windows import window_partition, window_unpartition
from attnvision.sam.mask_decoder import HeadMLP
from attnvision.sam2.configs import HieraConfig


def pool_grid(x: Tensor, stride: int) -> Tensor:
    """Max-pool a channels-last grid: (B, H, W, C) -> (B, H // s, W // s, C)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention on a (B', h, w, dim) grid whose queries may be pooled (``q_stride``):
    every pooled query attends to all h*w keys, so the output grid is (h/s, w/s)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 0) -> None:
        super().__init__()
        if dim_out % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the width ({dim_out})")
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    # In bf16 / fp16 on a CPU, attention over this many keys or more (the global blocks) takes
    # the banded low-precision path; windows of a few dozen tokens are faster fused.
    banded_min_keys: int = 1024

    def forward(self, x: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B', h, w, dim) -> (B', h', w', dim_out) [, attention (B', heads, h'w', hw)]
        b, h, w, _ = x.shape
        heads, hd = self.num_heads, self.dim_out // self.num_heads
        # Views into the one qkv output, heads split without copies: (3, B', heads, hw, hd).
        qkv = self.qkv(x).view(b, h * w, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        h_out, w_out = h, w
        if self.q_stride:  # the queries of the coarser grid
            s = self.q_stride
            q = F.max_pool2d(q.reshape(b * heads, h, w, hd).permute(0, 3, 1, 2), s, s)
            h_out, w_out = q.shape[-2:]
            q = q.flatten(2).transpose(1, 2).reshape(b, heads, h_out * w_out, hd)
        attn = None
        if return_attention:
            out, attn = scaled_dot_product_attention(q, k, v, return_attention=True)
        elif (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)
              and k.shape[2] >= self.banded_min_keys):
            out = banded_attention(q, k, v)
        else:
            out = scaled_dot_product_attention(q, k, v)  # (B', heads, h'w', hd)
        out = self.proj(merge_heads(out).view(b, h_out, w_out, self.dim_out))
        return (out, attn) if return_attention else out


class MultiScaleBlock(nn.Module):
    """Pre-LN block: x + attn(norm1(x)), then + mlp(norm2(.)), windowed or global, with the
    queries pooled and the width changed at a stage change."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: int = 0, window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = HeadMLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    # Rows of tokens per MLP band in global blocks on a CPU (module doc of forward).
    mlp_band_rows: int = 8

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, H, W, dim) -> (B, H', W', dim_out); H' = H // q_stride at a stage change
        # Outside attention every token is on its own, and a windowed block attends only
        # inside its row of windows: so on a CPU the block runs on horizontal bands of the
        # grid, as SAM's encoder does. The same arithmetic on small bands keeps temporaries
        # (the 4x-wide MLP layer above all) in cache and reused by the allocator; whole
        # grids of the first stage (256 x 256 tokens at 1024 px) spend more time in copies
        # and page faults than in arithmetic. A GPU wants the opposite: few, large kernels.
        if x.device.type != "cpu":
            return self._mlp(self._attend(x))
        if self.window_size > 0:
            return torch.cat([self._mlp(self._attend(band))
                              for band in x.split(self.window_size, dim=1)], dim=1)
        x = self._attend(x)
        return torch.cat([self._mlp(band) for band in x.split(self.mlp_band_rows, dim=1)],
                         dim=1)

    def _attend(self, x: Tensor) -> Tensor:
        # x: (B, H, W, dim) -> (B, H', W', dim_out): the residual plus attention
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            # The residual must change width and grid too: the normalised tokens, projected,
            # pooled as the queries are.
            shortcut = self.proj(x)
            if self.q_stride:
                shortcut = pool_grid(shortcut, self.q_stride)
        h_out, w_out = shortcut.shape[1:3]
        if self.window_size > 0:
            # Zero padding, as the official block pads the normalised tokens: the padded
            # tokens' queries (the qkv bias) take part in the pooling of the edge windows.
            windows, (hp, wp) = window_partition(x, self.window_size)
            out = self.attn(windows)  # (B * nW, ws', ws', dim_out), ws' = ws / q_stride
            ws_out = out.shape[1]
            # The window grid is the same before and after pooling; crop to the pooled grid.
            pad_out = (hp // self.window_size * ws_out, wp // self.window_size * ws_out)
            out = window_unpartition(out, ws_out, pad_out, (h_out, w_out))
        else:
            out = self.attn(x)
        return shortcut + out

    def _mlp(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm2(x))


class HieraPatchEmbed(nn.Module):
    """7x7 convolution with stride 4 and padding 3: (B, 3, S, S) -> (B, S/4, S/4, C)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 3, S, S)
        return self.proj(x).permute(0, 2, 3, 1)


def block_layout(config: HieraConfig) -> list[dict[str, int]]:
    """Each block's dim, dim_out, num_heads, q_stride and window_size, as the official Hiera
    lays them out."""
    stage_ends = [sum(config.stages[:i + 1]) - 1 for i in range(len(config.stages))]
    q_pool_blocks = {end + 1 for end in stage_ends[:-1][:config.q_pool]}
    dim, heads, stage = config.embed_dim, config.num_heads, 0
    layout = []
    for i in range(config.depth):
        # Read before the stage advances: the first block of a stage keeps the previous
        # stage's window (the lag), but already has the new stage's width and heads.
        window = 0 if i in config.global_att_blocks else config.window_spec[stage]
        dim_out = dim
        if i - 1 in stage_ends:
            dim_out = int(dim * config.dim_mul)
            heads = int(heads * config.head_mul)
            stage += 1
        layout.append({"dim": dim, "dim_out": dim_out, "num_heads": heads,
                       "q_stride": config.q_stride if i in q_pool_blocks else 0,
                       "window_size": window})
        dim = dim_out
    return layout


class Hiera(nn.Module):
    """Hiera trunk: (B, 3, S, S) -> the outputs of every stage, highest resolution first,
    [(B, C, S/4, S/4), (B, 2C, S/8, S/8), (B, 4C, S/16, S/16), (B, 8C, S/32, S/32)]."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        if len(config.stages) != len(config.window_spec):
            raise ValueError("a Hiera config needs one window size per stage")
        self.config = config
        self.stage_ends = [sum(config.stages[:i + 1]) - 1 for i in range(len(config.stages))]
        self.patch_embed = HieraPatchEmbed(config.embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, config.embed_dim, *config.window_pos_embed_bkg_spatial_size))
        first_window = config.window_spec[0]
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, config.embed_dim, first_window, first_window))
        self.blocks = nn.ModuleList(
            MultiScaleBlock(mlp_ratio=config.mlp_ratio, **settings)
            for settings in block_layout(config))
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def position_embedding(self, h: int, w: int) -> Tensor:
        """The background map at the (h, w) grid plus the tiled window map: (1, h, w, C)."""
        window = self.pos_embed_window.shape[-1]
        if h % window or w % window:
            raise ValueError(f"a {h}x{w} token grid does not tile with {window}x{window} "
                             f"position windows: use an image size that is a multiple of "
                             f"{4 * window} pixels")
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        pos = pos + self.pos_embed_window.tile(1, 1, h // window, w // window)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> list[Tensor]:
        # x: (B, 3, S, S), normalised pixels
        x = self.patch_embed(x)  # (B, S/4, S/4, C)
        x = x + self.position_embedding(*x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))  # (B, C_i, H_i, W_i)
        return outputs
