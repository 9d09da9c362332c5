"""SAM 2's memory encoder: a frame's features and its predicted mask fused into one memory.

The mask (its logits through a sigmoid, so predicted masks look like the 0/1 masks of
training) is brought down to the stride-16 grid by four 3x3 stride-2 convolutions, each
followed by a channel LayerNorm and GELU, widening 1 -> 4 -> 16 -> 64 -> 256, then a 1x1
convolution. It is added to the frame's 256-wide features (after a 1x1 convolution), two
ConvNeXt blocks mix the sum, and a 1x1 convolution brings it to 64 channels: a memory costs a
quarter of a frame's features to keep and to attend to. Its position code is the sine code of
the grid.

Keys mirror the official checkpoint: ``memory_encoder.mask_downsampler.encoder.N``,
``pix_feat_proj``, ``fuser.layers.N.{dwconv, norm, pwconv1, pwconv2, gamma}``, ``out_proj``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.sam.common import LayerNorm2d
from attnvision.sam2.neck import sine_position_encoding


class MaskDownSampler(nn.Module):
    """(B, 1, H, W) mask -> (B, embed_dim, H / total_stride, W / total_stride)."""

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2,
                 padding: int = 1, total_stride: int = 16) -> None:
        super().__init__()
        layers = round(math.log(total_stride, stride))
        if stride**layers != total_stride:
            raise ValueError(f"total stride {total_stride} is not a power of {stride}")
        modules: list[nn.Module] = []
        channels = 1
        for _ in range(layers):  # each step keeps the numbers per pixel: stride^2 more channels
            wider = channels * stride**2
            modules += [nn.Conv2d(channels, wider, kernel_size, stride, padding),
                        LayerNorm2d(wider), nn.GELU()]
            channels = wider
        modules.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*modules)

    def forward(self, mask: Tensor) -> Tensor:
        return self.encoder(mask)


class CXBlock(nn.Module):
    """A ConvNeXt block: 7x7 depthwise convolution, channel LayerNorm, a 4x MLP per pixel
    scaled by a learned ``gamma`` (1e-6 at initialisation), residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7, padding: int = 3,
                 layer_scale_init_value: float = 1e-6, use_dwconv: bool = True) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding,
                                groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale_init_value))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W)
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, in_dim: int = 256, out_dim: int = 64, fuser_layers: int = 2) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)
        self.out_dim = out_dim

    def forward(self, features: Tensor, mask: Tensor, is_logits: bool = True
                ) -> tuple[Tensor, Tensor]:
        # features: (B, C, h, w) stride-16; mask: (B, 1, 16h, 16w) logits (or probabilities)
        # -> memory (B, out_dim, h, w) and its position code (B, out_dim, h, w)
        if is_logits:
            mask = torch.sigmoid(mask)
        x = self.pix_feat_proj(features) + self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(x))
        b, _, h, w = x.shape
        pos = sine_position_encoding(h, w, self.out_dim, x.device).to(x.dtype).expand(b, -1, -1,
                                                                                       -1)
        return x, pos
