"""The VAE decoder's full-resolution layers, one band of rows at a time: same result, less memory.

A decoder's peak memory is set by its largest layers. At 512 px the SD decoder's last level
turns a 256-channel 512 x 512 map (256 MiB in fp32) into 128 channels, and the plain ResNet
block holds its input, the normalised copy of it and the first conv's output at once (640
MiB), diffusers' one more copy (768 MiB). Nothing in those layers needs a whole map at once
except GroupNorm's statistics, and those combine from parts. So, at inference:

1. the mean and squared deviations of each band's channels are taken band by band and
   combined into each group's, giving per channel the scale and shift with which GroupNorm
   is x · scale + shift (the form torch's CPU kernel computes too);
2. each band of output rows is normalised, passed through SiLU and convolved from its input
   rows plus one row above and below (the halo a 3x3 conv needs; at the image's edges the
   conv's zero padding instead), so only one band's activation exists at a time;
3. the second conv writes its output into the first conv's output, band after band, keeping
   a copy of the one row the next band still reads.

The ResNet block then holds its input and one map of its output width (384 MiB at that
block), the upsampler its input and output, the output conv one map and a 3-channel image.
The arithmetic is the plain path's, in a different order: results agree to float rounding
(tests/test_row_bands.py). Only for inference: the writes in place would break autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # autoencoder_kl imports this module
    from attnvision.diffusion.autoencoder_kl import Conv2d

# A band holds about this many activation values (8 MiB in fp32). Measured on the SD decoder
# (benchmarks/RESULTS.md): 4 Mi values a band left the 512-px work peak 7 % higher; 1 Mi
# left it no lower and made a bf16 decode by bands 2 % slower.
BAND_ELEMENTS = 1 << 21


def band_rows(batch: int, channels: int, width: int) -> int:
    """Rows per band for maps of this shape (at least 2)."""
    return max(2, BAND_ELEMENTS // max(1, batch * channels * width))


def _bands(height: int, rows: int) -> Iterator[tuple[int, int]]:
    for top in range(0, height, rows):
        yield top, min(top + rows, height)


def norm_scale_shift(x: Tensor, norm: nn.GroupNorm, rows: int) -> tuple[Tensor, Tensor]:
    """(B, C, 1, 1) scale and shift (float32, or float64 for float64 maps) such that
    norm(x) = x · scale + shift."""
    # x: (B, C, H, W)
    b, c, height = x.shape[:3]
    counts, means, sq_devs = [], [], []
    # (B, cells, C) in float32 at least, one buffer for every band: the sums run along memory
    work = x.new_empty(b, min(rows, height) * x.shape[3], c, dtype=_at_least_float32(x))
    for top, bottom in _bands(height, rows):
        band = work[:, :(bottom - top) * x.shape[3]]
        band.copy_(x[:, :, top:bottom].permute(0, 2, 3, 1).flatten(1, 2))
        mean = band.mean(1)                                            # (B, C)
        means.append(mean)
        sq_devs.append(band.sub_(mean[:, None]).square_().sum(1))
        counts.append(band.shape[1])
    # Each band's and channel's mean and squared deviations, combined into each group's as
    # Chan et al. do (no E[x²] - E[x]², which loses digits when the mean is large).
    g = norm.num_groups
    n = torch.tensor(counts, dtype=torch.float64, device=x.device).view(-1, 1, 1, 1)
    band_mean = torch.stack(means).double().view(-1, b, g, c // g)  # (bands, B, G, C/G)
    band_sq = torch.stack(sq_devs).double().view(-1, b, g, c // g)
    total = n.sum() * (c // g)
    mean = (band_mean * n).sum((0, 3)) / total                        # (B, G)
    var = (band_sq + n * (band_mean - mean[:, :, None]).square()).sum((0, 3)) / total
    rstd = (var + norm.eps).rsqrt()
    scale = rstd.repeat_interleave(c // g, dim=1)                      # (B, C)
    shift = -mean.repeat_interleave(c // g, dim=1) * scale
    if norm.affine:
        scale = scale * norm.weight.double()
        shift = shift * norm.weight.double() + norm.bias.double()
    dtype = _at_least_float32(x)
    return scale.to(dtype)[..., None, None], shift.to(dtype)[..., None, None]


def _at_least_float32(x: Tensor) -> torch.dtype:
    # bf16 and fp16 maps are normalised in float32, as GroupNorm does; float64 stays float64.
    return torch.promote_types(x.dtype, torch.float32)


def _empty_map(like: Tensor, channels: int, height: int, width: int,
               dtype: torch.dtype | None = None) -> Tensor:
    return torch.empty(like.shape[0], channels, height, width, dtype=dtype or like.dtype,
                       device=like.device, memory_format=torch.channels_last)


Fill = Callable[[int, int, Tensor], None]


def _conv3x3_bands(conv: Conv2d, fill: Fill, like: Tensor, height: int, width: int,
                   rows: int) -> Iterator[tuple[int, int, Tensor]]:
    """(top, bottom, conv output rows top..bottom) for each band. ``fill(lo, hi, out)``
    writes the conv's input rows lo..hi (the band's rows and the one-row halo inside the
    image) into ``out``; ``like`` gives their batch, dtype and device."""
    # One input buffer for every band, here and for the norm's float32 work: a band's
    # temporaries of several sizes, allocated anew each band, made glibc's heap grow by up
    # to 400 MB in a bf16 decode at 512 px (benchmarks/RESULTS.md).
    buffer = _empty_map(like, conv.in_channels, min(rows, height) + 2, width)
    weight = conv.weight_for(buffer)
    for top, bottom in _bands(height, rows):
        lo, hi = max(top - 1, 0), min(bottom + 1, height)
        band = buffer[:, :, :bottom - top + 2]       # rows top - 1 .. bottom, zero outside
        if top == 0:
            band[:, :, 0].zero_()
        if bottom == height:
            band[:, :, -1].zero_()
        first = int(top == 0)
        fill(lo, hi, band[:, :, first:first + hi - lo])
        # Rows outside the image are zero in the band; columns the conv pads itself.
        yield top, bottom, F.conv2d(band, weight, conv.bias, padding=(0, 1))


def _conv3x3_map(conv: Conv2d, fill: Fill, like: Tensor, height: int, width: int,
                 rows: int) -> Tensor:
    """The conv's whole output map, written band after band (see :func:`_conv3x3_bands`)."""
    out = _empty_map(like, conv.out_channels, height, width)
    for top, bottom, band in _conv3x3_bands(conv, fill, like, height, width, rows):
        out[:, :, top:bottom] = band
    return out


class _NormSiLU:
    """Fills rows with SiLU(GroupNorm(rows of x)) given the norm's scale and shift."""

    def __init__(self, scale: Tensor, shift: Tensor, like: Tensor, rows: int) -> None:
        self.scale, self.shift = scale, shift
        # float32 room for bf16 maps: normalised in float32, rounded once, as GroupNorm does
        self.room = (None if like.dtype == scale.dtype else
                     _empty_map(like, like.shape[1], rows, like.shape[3], scale.dtype))

    def __call__(self, rows: Tensor, out: Tensor) -> None:
        if self.room is None:
            F.silu(torch.addcmul(self.shift, rows, self.scale, out=out), inplace=True)
            return
        # Into the room first: addcmul on bf16 rows would cast them into a new tensor.
        room = self.room[:, :, :rows.shape[2]].copy_(rows)
        F.silu(torch.addcmul(self.shift, room, self.scale, out=room), inplace=True)
        out.copy_(room)


@torch.no_grad()
def resnet_block(block: nn.Module, x: Tensor, rows: int | None = None) -> Tensor:
    """``block(x)`` for a ResnetBlock (norm1, conv1, norm2, conv2, nin_shortcut), by bands."""
    # x: (B, C_in, H, W)
    _, c_in, height, width = x.shape
    c_out = block.conv1.out_channels
    rows = rows or band_rows(x.shape[0], max(c_in, c_out), width)
    norm = _NormSiLU(*norm_scale_shift(x, block.norm1, rows), x, rows + 2)
    h = _conv3x3_map(block.conv1, lambda lo, hi, into: norm(x[:, :, lo:hi], into), x,
                     height, width, rows)
    norm = _NormSiLU(*norm_scale_shift(h, block.norm2, rows), h, rows + 2)
    above: Tensor | None = None  # row top - 1 of h as conv1 wrote it, before this loop did

    def fill(lo: int, hi: int, into: Tensor) -> None:
        # Rows from lo + 1 on are still conv1's; row lo, if above the band, was overwritten.
        if above is None:
            norm(h[:, :, lo:hi], into)
        else:
            norm(above, into[:, :, :1])
            norm(h[:, :, lo + 1:hi], into[:, :, 1:])

    for top, bottom, out in _conv3x3_bands(block.conv2, fill, h, height, width, rows):
        above = h[:, :, bottom - 1:bottom].clone()
        skip = x[:, :, top:bottom]
        if block.nin_shortcut is not None:
            skip = block.nin_shortcut(skip)
        h[:, :, top:bottom] = out.add_(skip)
    return h


@torch.no_grad()
def upsample(up: nn.Module, x: Tensor, rows: int | None = None) -> Tensor:
    """``up(x)`` for an Upsample (nearest x2, then ``up.conv``), by bands of output rows."""
    # x: (B, C, h, w) -> (B, C, 2h, 2w)
    _, c, height, width = x.shape
    rows = rows or band_rows(x.shape[0], c, 2 * width)

    def fill(lo: int, hi: int, into: Tensor) -> None:
        # Doubled row r is row r // 2 of x with every cell twice: rows lo + p, lo + p + 2, ...
        # are rows (lo + p) // 2, + 1, ... of x, for p = 0 and 1.
        for p in (0, 1):
            dst = into[:, :, p::2].unflatten(-1, (-1, 2))             # (B, C, m, w, 2)
            start = (lo + p) // 2
            dst.copy_(x[:, :, start:start + dst.shape[2], :, None].expand_as(dst))

    return _conv3x3_map(up.conv, fill, x, 2 * height, 2 * width, rows)


@torch.no_grad()
def norm_silu_conv(norm: nn.GroupNorm, conv: Conv2d, x: Tensor,
                   rows: int | None = None) -> Tensor:
    """``conv(SiLU(norm(x)))`` for a 3x3 ``conv``, by bands: the decoder's output layers."""
    # x: (B, C, H, W)
    _, c, height, width = x.shape
    rows = rows or band_rows(x.shape[0], c, width)
    act = _NormSiLU(*norm_scale_shift(x, norm, rows), x, rows + 2)
    return _conv3x3_map(conv, lambda lo, hi, into: act(x[:, :, lo:hi], into), x, height,
                        width, rows)
