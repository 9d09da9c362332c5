"""SAM 2's image and prompt transforms, without torchvision.

Unlike SAM, SAM 2 does not keep the aspect ratio: every image is stretched to a square of
``resolution`` (1024) pixels, so prompt coordinates scale by 1024 / W in x and 1024 / H in y.
The official pipeline (``SAM2Transforms``) is torchvision's ToTensor (uint8 HWC -> float CHW
in [0, 1]), Resize of that float tensor (bilinear, antialiased when shrinking) and Normalize
with the ImageNet statistics; the same operations in the same order here give the same
numbers. Masks go back by one bilinear resize of the 256x256 logits to the original size,
after the optional clean-up of small holes and specks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnvision.sam.masks import label_components

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x: Tensor) -> Tensor:
    """(..., 3, H, W) pixels in [0, 1] -> the image encoder's input: ImageNet mean and standard
    deviation, as the official ``Normalize`` (images, video frames and training clips alike)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def image_to_input(image: np.ndarray, resolution: int = 1024,
                   device: torch.device | str = "cpu") -> Tensor:
    """(H, W, 3) uint8 RGB -> (3, resolution, resolution) normalised float32."""
    pixels = np.ascontiguousarray(image)
    if not pixels.flags.writeable:  # torch wants to own writable memory (PIL arrays are not)
        pixels = pixels.copy()
    x = torch.from_numpy(pixels).to(device).permute(2, 0, 1)
    x = x.float() / 255  # ToTensor
    # Resize: torchvision resizes a float tensor with F.interpolate, antialias on.
    x = F.interpolate(x[None], size=(resolution, resolution), mode="bilinear",
                      align_corners=False, antialias=True)[0]
    return normalise(x)


def transform_coords(coords: Tensor, resolution: int, orig_hw: tuple[int, int] | None = None,
                     normalize: bool = True) -> Tensor:
    """(..., 2) (x, y) -> pixels of the square input. ``normalize``: coords are pixels of
    an image of ``orig_hw`` (H, W); otherwise they are already in [0, 1]."""
    if normalize:
        if orig_hw is None:
            raise ValueError("normalize=True needs the original image size")
        h, w = orig_hw
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / w
        coords[..., 1] = coords[..., 1] / h
    return coords * resolution


def transform_boxes(boxes: Tensor, resolution: int, orig_hw: tuple[int, int] | None = None,
                    normalize: bool = True) -> Tensor:
    """(B, 4) or (4,) XYXY boxes -> (B, 2, 2) corners in pixels of the square input."""
    return transform_coords(boxes.reshape(-1, 2, 2), resolution, orig_hw, normalize)


def _small_components(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Pixels of the 8-connected components of ``mask`` of at most ``max_area`` pixels."""
    labels, sizes = label_components(mask)
    small = np.flatnonzero(sizes <= max_area) + 1
    return np.isin(labels, small)


def fill_holes_and_sprinkles(masks: Tensor, mask_threshold: float = 0.0,
                             max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0
                             ) -> Tensor:
    """Low-res logits (B, C, h, w) with background regions of at most ``max_hole_area``
    pixels set to threshold + 10 and foreground regions of at most ``max_sprinkle_area`` set
    to threshold - 10; both found on the logits as given (the official clean-up)."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return masks
    flat = masks.detach().flatten(0, 1).cpu().numpy()  # (B*C, h, w)
    holes = np.zeros(flat.shape, dtype=bool)
    sprinkles = np.zeros(flat.shape, dtype=bool)
    for i, logits in enumerate(flat):
        if max_hole_area > 0:
            holes[i] = _small_components(logits <= mask_threshold, max_hole_area)
        if max_sprinkle_area > 0:
            sprinkles[i] = _small_components(logits > mask_threshold, max_sprinkle_area)
    holes_t = torch.from_numpy(holes).to(masks.device).view_as(masks)
    sprinkles_t = torch.from_numpy(sprinkles).to(masks.device).view_as(masks)
    masks = torch.where(holes_t, mask_threshold + 10.0, masks)
    return torch.where(sprinkles_t, mask_threshold - 10.0, masks)


def postprocess_masks(masks: Tensor, orig_hw: tuple[int, int], mask_threshold: float = 0.0,
                      max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0) -> Tensor:
    """(B, C, 256, 256) logits -> (B, C, H, W) logits at the original image size."""
    masks = fill_holes_and_sprinkles(masks.float(), mask_threshold, max_hole_area,
                                     max_sprinkle_area)
    return F.interpolate(masks, tuple(orig_hw), mode="bilinear", align_corners=False)
