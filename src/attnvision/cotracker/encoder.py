"""The CNN that turns every frame into a grid of features (``fnet`` in the checkpoints).

A RAFT-style residual network: a 7x7 stride-2 convolution, then four stages of two residual
blocks (stride 1, 2, 2, 2; D/2, 3D/4, D, D channels for D output channels). The four stages'
outputs are resized to the stride-4 grid and concatenated, so every feature mixes fine detail
with context from up to 1/16 of the frame; two convolutions bring that down to D channels.
Instance normalisation (no parameters) everywhere: a feature does not depend on the
brightness and contrast of its frame, and frames are normalised one by one.

The maps run channels-last (N, H, W, C in memory): oneDNN then convolves them as they lie
instead of reordering every input and output (a 416 -> 256 channel 3 x 3 convolution of 4
frames at 96 x 128: 0.70 of the time on this project's CPU, one thread), and so does the
Winograd path below; the instance norms keep that layout too (:class:`InstanceNorm2d`).

The stride-1 3 x 3 convolutions of 64 channels and more (every stage's, and ``conv2``, the
widest: 416 -> 256 channels at stride 4) run by Winograd's F(4 x 4, 3 x 3) at float32
inference (:mod:`attnvision.nn.winograd`): half of oneDNN's time for ``conv2``, 0.83 of it
for the first stage's 64 channels at 192 x 256 on an AMD EPYC.

Parameter names are the official ones (``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``conv2``, ``conv3``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.winograd import Conv2d


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d without parameters that keeps a channels-last input channels-last.

    ``F.instance_norm`` returns such an input as a contiguous tensor (3-4x slower than on a
    contiguous one), and the channels-last kernels of ``group_norm`` and ``batch_norm``
    accumulate in float32 one value at a time: 5e-5 to 1e-3 from float64 on these maps,
    against 1e-6 for ``instance_norm``, enough to move the small online model's tracks by
    0.05 px. So the statistics here take two passes over the (H W, C) rows: the mean by
    PyTorch's pairwise sum, then the mean square about it (1e-6 from float64).

    ``inplace``: at inference, overwrite the input (the encoder's norms only see fresh
    convolution outputs), which saves a map's allocation and a pass: 0.6-0.7x the time.
    The map is then worked through a cache-sized block of rows at a time: each block
    centred and its squares summed in one small reused buffer while it is in cache, then
    scaled (and, with ``relu``, rectified) the same way, rather than a pass over the whole
    map for each step (the CNN of a 384 x 512 frame on an Intel Xeon: about 300 ms instead
    of 310).
    """

    def __init__(self, num_features: int, inplace: bool = False) -> None:
        super().__init__(num_features)
        self.inplace = inplace

    def forward(self, x: Tensor, relu: bool = False) -> Tensor:
        """IN(x), or relu(IN(x)) with ``relu``: (B, C, H, W) -> (B, C, H, W)."""
        channels_last = (x.is_contiguous(memory_format=torch.channels_last)
                         and not x.is_contiguous()
                         and not torch.onnx.is_in_onnx_export())  # a graph has no layouts
        if channels_last and self.inplace and not torch.is_grad_enabled():
            return self._normalise_blocks_(x, relu)
        if channels_last:
            b, c, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view
            centred = rows - rows.mean(dim=1, keepdim=True)
            scale = centred.square().mean(dim=1, keepdim=True).add(self.eps).rsqrt()
            out = (centred * scale).view(b, h, w, c).permute(0, 3, 1, 2)
        else:  # the stock kernel, and one node in an exported graph
            out = F.instance_norm(x, eps=self.eps)
        return F.relu(out, inplace=True) if relu else out

    def _normalise_blocks_(self, x: Tensor, relu: bool) -> Tensor:
        """The same statistics, ``x`` (channels-last) overwritten a block of rows at a time."""
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view
        mean = rows.mean(dim=1, keepdim=True)
        step = min(h * w, max(1, NORM_BLOCK // c))
        squares = x.new_empty(b, step, c)
        sums = []  # per block of rows: (B, 1, C)
        for i in range(0, h * w, step):
            block = rows[:, i:i + step].sub_(mean)
            sums.append(torch.square(block, out=squares[:, :block.shape[1]]).sum(1, True))
        scale = torch.cat(sums, dim=1).sum(1, True).div_(h * w).add_(self.eps).rsqrt_()
        for i in range(0, h * w, step):
            block = rows[:, i:i + step].mul_(scale)
            if relu:
                block.relu_()
        return x


# Values (rows x channels) of a block of the in-place norm: 1 MB in float32, within a core's
# L2 (2 MB on the Intel Xeon it was measured on, 1 MB on the AMD EPYC).
NORM_BLOCK = 1 << 18


class ResidualBlock(nn.Module):
    """relu(x + relu(IN(conv(relu(IN(conv(x))))))), x projected by a strided 1x1 conv when the
    block downsamples."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = InstanceNorm2d(planes, inplace=True)
        self.norm2 = InstanceNorm2d(planes, inplace=True)
        # The ReLUs in place, as the official's (the norms' too): each would otherwise hold
        # one more map of the frames at that stage (300 MB for 24 frames at 192 x 256).
        self.relu = nn.ReLU(inplace=True)
        # A Sequential, so that the projection's key is the official ``downsample.0``.
        self.downsample = (None if stride == 1 else nn.Sequential(
            nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride),
            InstanceNorm2d(planes, inplace=True)))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, C, H / stride, W / stride)
        y = self.norm1(self.conv1(x), relu=True)
        y = self.norm2(self.conv2(y), relu=True)
        if self.downsample is not None:
            x = self.downsample(x)
        # At inference into y, which is this block's own (x + y is y + x to the bit): a
        # frame's map less to allocate; autograd keeps y for the ReLU's gradient.
        return self.relu(x + y if torch.is_grad_enabled() else y.add_(x))


def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(in_planes, planes, stride), ResidualBlock(planes, planes))


class FeatureEncoder(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] -> features (B, D, H / stride, W / stride)."""

    def __init__(self, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        widths = (output_dim // 2, output_dim // 4 * 3, output_dim, output_dim)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3)
        self.norm1 = InstanceNorm2d(widths[0], inplace=True)
        self.layer1 = _stage(widths[0], widths[0], stride=1)
        self.layer2 = _stage(widths[0], widths[1], stride=2)
        self.layer3 = _stage(widths[1], widths[2], stride=2)
        self.layer4 = _stage(widths[2], widths[3], stride=2)
        self.conv2 = Conv2d(sum(widths), output_dim * 2, kernel_size=3, padding=1)
        self.norm2 = InstanceNorm2d(output_dim * 2, inplace=True)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)
        for m in self.modules():  # the official initialisation, for training from scratch
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 3, H, W) -> (B, D, H/4, W/4), channels-last
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.norm1(self.conv1(x), relu=True)  # (B, D/2, H/2, W/2)
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)  # strides 2, 4, 8, 16
            stages.append(x)
        del x
        # The concatenation is the CNN's largest map (3D + D/4 channels at stride 4): each
        # stage is resized and let go in turn, so neither the four stages nor their resized
        # copies are held beside it (at inference; autograd keeps what it needs anyway).
        resized = []
        while stages:
            resized.append(F.interpolate(stages.pop(0), size, mode="bilinear",
                                         align_corners=True))
        x = torch.cat(resized, dim=1)  # (B, 3D + D/4, H/4, W/4)
        del resized
        x = self.norm2(self.conv2(x), relu=True)
        return self.conv3(x)  # (B, D, H/4, W/4)
