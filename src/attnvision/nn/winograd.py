"""3 x 3 convolution with Winograd's minimal filtering F(4 x 4, 3 x 3): 4x fewer products.

A 3 x 3 convolution (stride 1, padding 1) spends 9 multiply-adds per output value per input
channel. Winograd's algorithm (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
Networks") computes a 4 x 4 tile of outputs from a 6 x 6 tile of inputs d with a 3 x 3 filter
g as

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          (⊙: elementwise, 36 products per channel pair)

where Bᵀ (6 x 6), G (6 x 3) and Aᵀ (4 x 6) are the constant matrices below (interpolation at
0, ±1, ±2 and ∞). Summed over input channels, the 36 elementwise products become 36 matrix
products (tiles x C_in) @ (C_in x C_out): 36 / 16 = 2.25 multiply-adds per output value per
channel pair instead of 9. The transforms are additions with small integer weights, cheap
next to those products when the channels are wide.

Why it is here: the SD VAE decoder spends 93 % of its time in 3 x 3 convolutions of 128 to 512
channels, which oneDNN runs directly at the core's peak; the same arithmetic cannot go faster,
fewer products can. On this project's CPU (one core, float32, against oneDNN channels-last)
a 512-channel 64 x 64 conv takes 0.47 of oneDNN's time, a 256-channel 256 x 256 one 0.49, a
128-channel 256 x 256 one 0.52-0.60; a whole 256-px SD decode 0.56 of diffusers' time
(benchmarks/RESULTS.md, "Latent diffusion speed").

The price is rounding: the transforms scale values by up to 25 and cancel them again, so the
result carries a few times float32's rounding of a direct convolution (relative 1e-5 at
C_in = 512 against float64). In bfloat16 (8 bits of mantissa) that grows to a few percent of
the output, so :func:`pays` accepts float32 (and float64) only.

Memory: the input is cut into bands of tile rows, each transformed, multiplied and
transformed back while it is in cache, so besides its input and output a call holds the
transformed filter (36 C_in C_out values, 4x the weight) and one band's intermediates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TILE = 4  # outputs a tile computes along each side
WINDOW = TILE + 2  # inputs it reads along each side

# Lavin & Gray's F(4, 3) matrices (interpolation points 0, 1, -1, 2, -2 and infinity).
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))

# Values (tiles x the wider channel count) of one band: its intermediates, 36 of them per
# tile and channel, then stay within about 10 MB in float32. On an AMD EPYC bands of half
# this size measured fastest (4x it took up to 1.7x longer at 128 channels, 256 x 256); on
# an Intel Xeon (2 MB of L2 a core, float32 channels-last, one frame) this size gave 0.94 of
# their time for CoTracker's 416 -> 256 channels at 96 x 128 and 0.87 for 512 at 64 x 64,
# and the same within 3 % from 96 to 256 channels.
BAND_VALUES = 1 << 16
# At most this many tiles a band, however narrow the channels: on that Xeon, the 96 -> 96
# channel convolution of CoTracker's second stage (one frame, 96 x 128) took 11 ms in bands
# of 85 to 340 tiles, 17 ms in bands of 680 (what BAND_VALUES alone gives it), 15 ms by
# oneDNN; 128 channels at 48 x 64 and 64 at 192 x 256 ran fastest at 128 to 256 tiles too.
BAND_TILES = 160


def pays(x: Tensor, conv: nn.Conv2d) -> bool:
    """Whether :func:`conv3x3` should compute ``conv(x)``: it can (a plain 3 x 3 conv, stride
    1, padding 1, no dilation or groups, zero padding, on a float32/float64 CPU tensor at
    inference, not while a graph is traced or compiled) and it is faster: with at least 64
    channels on each side and 48 x 48 cells in the batch (N H W). Below those the transforms
    and the filter's transform cost more than the products they save.

    Measured against oneDNN channels-last, one core, float32. On an AMD EPYC (one frame):
    32 channels took 1.24-2.0x as long at every size from 48 x 64 to 192 x 256, 48 channels
    0.93-1.11x, 64 channels 0.82-0.91x (192 x 256: 27 ms against 32), 80 channels
    0.67-0.81x; with its four 64-channel convolutions by Winograd, CoTracker's CNN took
    346-385 ms a 384 x 512 frame instead of 371-397 (alternated, medians). On an Intel Xeon,
    whose oneDNN runs those 64-channel convolutions at 157 GFLOP/s against the EPYC's 111,
    Winograd was no faster at 64 channels (an earlier version of this code took 1.22x as
    long at 4 x 192 x 256 there): the bound follows the EPYC, where it pays. On the Xeon a
    512-channel 32 x 32 conv took 1.11x as long; above the bounds 0.45x to 0.7x (128
    channels at 64 x 64: 0.57x, at 4 x 24 x 32: 0.59x; 512 at 64 x 64: 0.47x; 416 -> 256 at
    4 x 96 x 128: 0.53x)."""
    if not (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.ndim == 4 and not torch.is_grad_enabled()
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros"):
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
        return False  # an exported graph keeps the one convolution node
    cells = x.shape[0] * x.shape[-2] * x.shape[-1]
    return min(conv.in_channels, conv.out_channels) >= 64 and cells >= 48 * 48


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state dict) that runs by :func:`conv3x3` where that
    :func:`pays`, and as nn.Conv2d everywhere else (training, other shapes, bfloat16).
    Subclasses choose how the direct convolution takes its weight (:meth:`weight_for`)."""

    def weight_for(self, x: Tensor) -> Tensor:
        """The weight as the direct convolution of ``x`` takes it: as stored."""
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        if pays(x, self):
            return conv3x3(x, self.weight, self.bias)
        return self._conv_forward(x, self.weight_for(x), self.bias)


def filter_transform(weight: Tensor) -> Tensor:
    """U = G g Gᵀ of every (C_out, C_in) filter: (C_out, C_in, 3, 3) -> (36, C_in, C_out).

    One matrix product, (G ⊗ G) (36 x 9) by the filters as columns; the result is a
    transposed view, which the products in :func:`conv3x3` read as it is."""
    c_out, c_in = weight.shape[:2]
    g = torch.tensor(_G, dtype=weight.dtype, device=weight.device)
    u = torch.kron(g, g) @ weight.reshape(c_out * c_in, 9).T  # (36, C_out C_in)
    return u.view(WINDOW * WINDOW, c_out, c_in).transpose(1, 2)


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by F(4 x 4, 3 x 3), band by band.

    x: (N, C_in, H, W), any memory layout; weight: (C_out, C_in, 3, 3). Returns (N, C_out, H,
    W) in the input's memory layout (channels-last or contiguous), as ``F.conv2d`` does. The
    filter is transformed at each call (a few ms; keeping it would hold 4x the weights).
    """
    n, c_in, h, w = x.shape
    # As PyTorch suggests a layout: a tensor that is both (one channel, 1 x 1 maps) counts
    # as contiguous.
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    u = filter_transform(weight)
    c_out = u.shape[2]
    tiles_h, tiles_w = -(-h // TILE), -(-w // TILE)
    rows = max(1, min(BAND_VALUES // max(c_in, c_out), BAND_TILES) // (n * tiles_w))
    # The two-sided transforms as one product each: Bᵀ d B = (Bᵀ ⊗ Bᵀ) vec(d), and the same
    # for Aᵀ M A. A (36 x 36) @ (36 x many) product runs twice as fast as two (6 x 6) ones.
    bt = torch.tensor(_BT, dtype=x.dtype)
    at = torch.tensor(_AT, dtype=x.dtype)
    bt, at = torch.kron(bt, bt), torch.kron(at, at)  # (36, 36), (16, 36)

    x = x.permute(0, 2, 3, 1)  # (N, H, W, C_in): a view when x is channels-last
    out = x.new_empty(n, TILE * tiles_h, TILE * tiles_w, c_out)
    # One band of input with its one-value zero border (the padding) and the zeros that
    # round H and W up to whole tiles; the border columns are never written.
    band = x.new_zeros(n, TILE * rows + 2, TILE * tiles_w + 2, c_in)
    s = band.stride()
    for r0 in range(0, tiles_h, rows):
        r = min(rows, tiles_h - r0)
        t = n * r * tiles_w
        # Input rows top - 1 .. top + 4r (inclusive) land on band rows 0 .. 4r + 1.
        top = TILE * r0
        lo, hi = max(top - 1, 0), min(top + TILE * r + 1, h)
        band[:, lo - top + 1: hi - top + 1, 1: w + 1] = x[:, lo:hi]
        band[:, hi - top + 1:].zero_()  # below the image (the last band); row 0 of the
        # first band stays zero from new_zeros: no earlier band wrote it
        # d: (6, 6, N, r, tiles_w, C_in), the 6 x 6 windows at a stride of 4 (overlapping)
        d = band.as_strided((WINDOW, WINDOW, n, r, tiles_w, c_in),
                            (s[1], s[2], s[0], TILE * s[1], TILE * s[2], s[3]))
        v = (bt @ d.reshape(WINDOW * WINDOW, -1)).view(WINDOW * WINDOW, t, c_in)  # Bᵀ d B
        m = torch.bmm(v, u)  # (36, t, C_out): the products, summed over C_in
        del v
        if bias is not None:
            # Aᵀ's second column is all ones, so a constant added to M[1, 1] adds it to
            # every output of the tile: one (t, C_out) addition instead of a pass over out.
            m[WINDOW + 1].add_(bias)
        y = (at @ m.view(WINDOW * WINDOW, -1)).view(TILE, TILE, n, r, tiles_w, c_out)
        del m
        out[:, top: top + TILE * r].view(n, r, TILE, tiles_w, TILE, c_out).copy_(
            y.permute(2, 3, 0, 4, 1, 5))
    if out.shape[1:3] != (h, w):
        out = out[:, :h, :w].contiguous()
    out = out.permute(0, 3, 1, 2)  # (N, C_out, H, W), channels-last
    return out if channels_last else out.contiguous()

