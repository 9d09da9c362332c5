"""SAM 2's FPN neck: the trunk's four stages brought to one width, coarse detail fused down.

Each stage output goes through a 1x1 convolution to ``d_model`` (256) channels (the lateral
features). Going from the coarsest level to the finest, a level listed in
``fpn_top_down_levels`` adds the level above it, upsampled 2x by nearest neighbour (the
released models fuse only the two coarsest levels, strides 32 -> 16; the stride 4 and 8
levels keep their own features, which the mask decoder uses for detail). No output
convolution follows, unlike the classic FPN.

Every level's position code is the sine encoding of DETR: the course's sinusoidal encoding
(:func:`attnvision.nn.positional.sinusoidal_encoding`) of the row and of the column, each
normalised to (0, 2 pi], 128 numbers each, rows first. A grid's code is computed once and
kept (as the official neck caches it): at 1024 px the three levels' codes are 84 MB, which
took 29-48 ms to compute for every frame on this project's CPU (150-440 ms with its cores
busy), while the tracker reads only the coarsest level's.

Keys mirror the official checkpoint: ``image_encoder.neck.convs.N.conv``, N = 0 for the
coarsest level.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.positional import sinusoidal_encoding


def sine_position_encoding(h: int, w: int, dim: int = 256, device: torch.device | str = "cpu"
                           ) -> Tensor:
    """DETR's normalised sine encoding of an (h, w) grid: (1, dim, h, w), the row's code
    (dim/2 numbers) first, then the column's. Position i of n is (i + 1) / n * 2 pi.

    The tensor is shared by every call with the same arguments (module doc): read it, add it,
    never change it in place."""
    # A normal tensor even when first asked for under inference_mode, so that training can
    # still use it afterwards (inference tensors cannot be saved for backward).
    with torch.inference_mode(False), torch.no_grad():
        return _sine_code(h, w, dim, torch.device(device))


@functools.lru_cache(maxsize=16)
def _sine_code(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    if dim % 4:
        raise ValueError(f"the sine position encoding needs a width divisible by 4, got {dim}")
    eps = 1e-6  # the official normalisation divides by n + 1e-6

    def axis(n: int) -> Tensor:
        positions = torch.arange(1, n + 1, dtype=torch.float32) / (n + eps) * (2 * math.pi)
        return sinusoidal_encoding(n, dim // 2, positions=positions)  # (n, dim/2)

    rows, cols = axis(h), axis(w)
    pe = torch.cat([rows[:, None, :].expand(h, w, dim // 2),
                    cols[None, :, :].expand(h, w, dim // 2)], dim=-1)  # (h, w, dim)
    return pe.permute(2, 0, 1)[None].to(device)


class Lateral(nn.Module):
    """The 1x1 convolution of one level, as ``convs.N.conv`` (the official key)."""

    def __init__(self, in_channels: int, d_model: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, d_model, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, d_model, H, W)
        return self.conv(x)


class FpnNeck(nn.Module):
    """Trunk outputs (highest resolution first) -> ``d_model``-wide feature maps, same order.

    ``backbone_channel_list`` is the trunk's widths, coarsest first (the official order).
    """

    def __init__(self, d_model: int, backbone_channel_list: Sequence[int],
                 fpn_top_down_levels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.convs = nn.ModuleList(Lateral(c, d_model) for c in backbone_channel_list)
        levels = len(self.convs)
        self.fpn_top_down_levels = list(range(levels) if fpn_top_down_levels is None
                                        else fpn_top_down_levels)

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        # xs: [(B, C_0, H, W), (B, C_1, H/2, W/2), ...], finest first
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"the neck takes {n + 1} levels, got {len(xs)}")
        out: list[Tensor] = [xs[0]] * (n + 1)  # placeholders, all replaced below
        above = None  # the fused features of the coarser level just done
        for i in range(n, -1, -1):  # coarsest first
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and above is not None:
                # Upsampled in float32, as the official neck does (a no-op in fp32).
                above = lateral + F.interpolate(above.float(), scale_factor=2.0,
                                                mode="nearest")
            else:
                above = lateral
            out[i] = above
        return out

    def position_encoding(self, features: Sequence[Tensor]) -> list[Tensor]:
        """The sine code of each feature map's grid: (B, d_model, H, W) per level."""
        return position_codes(features, self.d_model)


def position_codes(features: Sequence[Tensor], dim: int) -> list[Tensor]:
    """The sine code of each (B, C, H, W) feature map's grid: (B, dim, H, W), in its dtype
    and on its device (a view expanded over the batch). The neck's codes; an image encoder
    without this neck (SAM's ViT in :class:`~attnvision.sam2.image_encoder.ViTImageEncoder`)
    gives its level the same code."""
    return [sine_position_encoding(f.shape[-2], f.shape[-1], dim, f.device)
            .to(f.dtype).expand(f.shape[0], -1, -1, -1) for f in features]
