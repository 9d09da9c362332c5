"""The Vision Transformer (Dosovitskiy et al., 2020) as the course draws it.

image -> P x P patches -> E = X . U_e -> [class token; E] + positions -> N pre-LN blocks
-> LayerNorm -> class token (or the mean of the patch tokens) -> linear head -> logits.

Parameter names are timm's (patch_embed.proj, cls_token, pos_embed, blocks.N.norm1,
blocks.N.attn.qkv, blocks.N.mlp.fc1, norm, fc_norm, head), so a timm state dict loads with
``strict=True``; the arithmetic is the same, so the logits are too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.encoder import EncoderBlock
from attnvision.nn.positional import sincos_2d_encoding
from attnvision.nn.tokens import PatchEmbed
from attnvision.vit.configs import ViTConfig, get_config


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                       num_prefix_tokens: int) -> Tensor:
    """Bicubic resize of the grid part of a (1, prefix + h*w, D) position table (as timm)."""
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    d = grid.shape[-1]
    grid = grid.float().reshape(1, *old_grid, d).permute(0, 3, 1, 2)  # (1, D, h, w)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, d).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = config
        if c.img_size % c.patch_size:
            raise ValueError(f"img_size {c.img_size} is not a multiple of patch_size "
                             f"{c.patch_size}")
        self.config = c
        self.num_prefix_tokens = 1 if c.class_token else 0
        if c.pool == "token" and not c.class_token:
            raise ValueError("pool='token' needs class_token=True; use pool='mean' without it")
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.class_token else None
        num_tokens = c.grid_size**2 + self.num_prefix_tokens
        if c.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, c.embed_dim))
        else:  # fixed 2-D sin-cos code; the class token gets none
            table = torch.zeros(1, num_tokens, c.embed_dim)
            table[0, self.num_prefix_tokens:] = sincos_2d_encoding(c.grid_size, c.grid_size,
                                                                   c.embed_dim)
            self.register_buffer("pos_embed", table, persistent=False)
        self.pos_drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, activation="gelu",
                         norm_eps=c.norm_eps, dropout=c.dropout, attn_dropout=c.attn_dropout)
            for _ in range(c.depth)
        )
        # timm: the final norm sits on the tokens for class-token pooling, after pooling
        # (fc_norm) for mean pooling.
        token_pool = c.pool == "token"
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps) if token_pool else nn.Identity()
        self.fc_norm = nn.Identity() if token_pool else nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's ViT initialisation: truncated normal (0.02) weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.pos_embed, nn.Parameter):
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_input(self, x: Tensor) -> None:
        """A one-line ValueError for a tensor this model cannot read."""
        c = self.config
        if x.ndim != 4:
            raise ValueError(f"ViT expects images of shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != c.in_chans:
            raise ValueError(f"this ViT expects {c.in_chans}-channel images, got {x.shape[1]} "
                             "channels: convert the image (e.g. to "
                             f"{'grayscale' if c.in_chans == 1 else 'RGB'}) first")
        if x.shape[2] % c.patch_size or x.shape[3] % c.patch_size:
            raise ValueError(f"image size {x.shape[2]}x{x.shape[3]} is not a multiple of the "
                             f"patch size {c.patch_size}: resize to {c.img_size}x{c.img_size}")

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """The (1, prefix + h*w, D) position table for an input grid, resized when it differs."""
        g = self.config.grid_size
        if grid == (g, g):
            return self.pos_embed
        if self.config.pos_embed == "sincos":
            table = torch.zeros(1, grid[0] * grid[1] + self.num_prefix_tokens,
                                self.config.embed_dim, device=self.pos_embed.device)
            table[0, self.num_prefix_tokens:] = sincos_2d_encoding(*grid, self.config.embed_dim)
            return table.to(self.pos_embed.dtype)
        return resample_pos_embed(self.pos_embed, grid, (g, g), self.num_prefix_tokens)

    def forward_features(self, x: Tensor, return_attention: bool = False
                         ) -> Tensor | tuple[Tensor, list[Tensor]]:
        # x: (B, C, H, W) -> tokens (B, prefix + N, D)
        self.check_input(x)
        grid = (x.shape[2] // self.config.patch_size, x.shape[3] // self.config.patch_size)
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.positions(grid))
        maps: list[Tensor] = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, return_attention=True)
                maps.append(attn)  # (B, H, prefix + N, prefix + N)
            else:
                x = block(x)
        x = self.norm(x)
        return (x, maps) if return_attention else x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        # x: (B, prefix + N, D) -> (B, num_classes)
        if self.config.pool == "token":
            x = x[:, 0]
        else:
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, list[Tensor]]:
        if return_attention:
            tokens, maps = self.forward_features(x, return_attention=True)
            return self.forward_head(tokens), maps
        return self.forward_head(self.forward_features(x))


def create_model(name: str, num_classes: int | None = None, **overrides: Any
                 ) -> VisionTransformer:
    """A freshly initialised ViT from a named config, e.g. ``create_model("vit_base")``."""
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return VisionTransformer(get_config(name, **overrides))
