"""The CNN that turns every frame into a grid of features (``fnet`` in the checkpoints).

A RAFT-style residual network: a 7x7 stride-2 convolution, then four stages of two residual
blocks (stride 1, 2, 2, 2; D/2, 3D/4, D, D channels for D output channels). The four stages'
outputs are resized to the stride-4 grid and concatenated, so every feature mixes fine detail
with context from up to 1/16 of the frame; two convolutions bring that down to D channels.
Instance normalisation (no parameters) everywhere: a feature does not depend on the
brightness and contrast of its frame, and frames are normalised one by one.

The 3 x 3 convolutions of 96 channels and more (the later stages and ``conv2``, the widest:
416 -> 256 channels at stride 4) run by Winograd's F(4 x 4, 3 x 3) at float32 inference
(:mod:`attnvision.nn.winograd`): half of oneDNN's time for ``conv2``.

Parameter names are the official ones (``conv1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``,
``conv2``, ``conv3``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.winograd import Conv2d


class ResidualBlock(nn.Module):
    """relu(x + relu(IN(conv(relu(IN(conv(x))))))), x projected by a strided 1x1 conv when the
    block downsamples."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, kernel_size=3, padding=1, stride=stride)
        self.conv2 = Conv2d(planes, planes, kernel_size=3, padding=1)
        self.norm1 = nn.InstanceNorm2d(planes)
        self.norm2 = nn.InstanceNorm2d(planes)
        # In place, as the official: each ReLU would otherwise hold one more map of the
        # frames at that stage (300 MB for 24 frames at 192 x 256), and time to fill it.
        self.relu = nn.ReLU(inplace=True)
        # A Sequential, so that the projection's key is the official ``downsample.0``.
        self.downsample = (None if stride == 1 else nn.Sequential(
            nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride),
            nn.InstanceNorm2d(planes)))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W) -> (B, C, H / stride, W / stride)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


def _stage(in_planes: int, planes: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(in_planes, planes, stride), ResidualBlock(planes, planes))


class FeatureEncoder(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] -> features (B, D, H / stride, W / stride)."""

    def __init__(self, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        widths = (output_dim // 2, output_dim // 4 * 3, output_dim, output_dim)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(widths[0])
        self.layer1 = _stage(widths[0], widths[0], stride=1)
        self.layer2 = _stage(widths[0], widths[1], stride=2)
        self.layer3 = _stage(widths[1], widths[2], stride=2)
        self.layer4 = _stage(widths[2], widths[3], stride=2)
        self.conv2 = Conv2d(sum(widths), output_dim * 2, kernel_size=3, padding=1)
        self.norm2 = nn.InstanceNorm2d(output_dim * 2)
        self.conv3 = nn.Conv2d(output_dim * 2, output_dim, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():  # the official initialisation, for training from scratch
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, 3, H, W)
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        x = self.relu(self.norm1(self.conv1(x)))  # (B, D/2, H/2, W/2)
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
        x = self.relu(self.norm2(self.conv2(x)))
        return self.conv3(x)  # (B, D, H/4, W/4)
