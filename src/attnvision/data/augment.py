"""Random affine augmentation of an image batch, in pure torch (no torchvision).

Every image of a batch gets its own rotation, scale and shift, drawn from a ``torch.Generator``
so that a training run replays exactly. The whole batch is warped by one ``F.affine_grid`` +
``F.grid_sample`` call (bilinear, zero padding), on the images' device.

Geometry, in pixels about the image centre (x to the right, y down): a content point p moves to
M·p + t with M = s·R(θ), θ counter-clockwise as the image is displayed. ``grid_sample`` asks the
opposite question, where each output pixel comes from, so the matrix handed to it is the inverse
map p = M⁻¹(p' − t), expressed in the normalised [-1, 1] coordinates of ``align_corners=False``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def affine(images: Tensor, angle: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Rotate by ``angle`` degrees (B,), scale by ``scale`` (B,), shift by ``shift`` (B, 2) px."""
    # images: (B, C, H, W); shift[:, 0] moves right, shift[:, 1] moves down
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected a float (B, C, H, W) batch, got {tuple(images.shape)} "
                         f"{images.dtype}")
    b, _, h, w = images.shape
    theta = torch.deg2rad(angle.to(torch.float64))
    cos, sin = torch.cos(theta), torch.sin(theta)
    inv_s = 1.0 / scale.to(torch.float64)
    # M⁻¹ = R(-θ)/s in pixels; conjugated by N = diag(2/W, 2/H) into normalised coordinates.
    m_inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    m_inv = m_inv * inv_s[:, None, None]  # (B, 2, 2)
    norm = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    linear = norm[:, None] * m_inv / norm[None, :]  # N M⁻¹ N⁻¹
    offset = -norm * (m_inv @ shift.to(torch.float64)[:, :, None])[..., 0]  # -N M⁻¹ t
    matrix = torch.cat([linear, offset[:, :, None]], dim=2)  # (B, 2, 3)
    matrix = matrix.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(matrix, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


class Augment:
    """Per-image random rotation (±max_rotation°), scale (in ``scale``), shift (±max_shift px).

    ``max_shift`` is in pixels, so pick it for the image size: 1 px for 8×8 digits, 2–3 px for
    28×28 MNIST.
    """

    def __init__(self, max_rotation: float = 10.0, max_shift: float = 1.0,
                 scale: tuple[float, float] = (0.9, 1.1)) -> None:
        if max_rotation < 0 or max_shift < 0:
            raise ValueError("max_rotation and max_shift must be >= 0")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.max_rotation = float(max_rotation)
        self.max_shift = float(max_shift)
        self.scale = (float(scale[0]), float(scale[1]))

    def __repr__(self) -> str:
        return (f"Augment(max_rotation={self.max_rotation}, max_shift={self.max_shift}, "
                f"scale={self.scale})")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        # images: (B, C, H, W); the draws happen on the generator's device, then move.
        u = torch.rand(images.shape[0], 4, generator=generator, device=generator.device,
                       dtype=torch.float64).cpu()
        angle = (2 * u[:, 0] - 1) * self.max_rotation
        low, high = self.scale
        # Log-uniform, so zooming in and out by the same factor are equally likely.
        scale = torch.exp(math.log(low) + u[:, 1] * (math.log(high) - math.log(low)))
        shift = (2 * u[:, 2:] - 1) * self.max_shift
        return affine(images, angle, scale, shift)
