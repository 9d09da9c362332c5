"""Embed once, prompt many times: the official ``SAM2ImagePredictor`` interface.

Same names, arguments and outputs as the official predictor, so a user switches by changing
one import: ``set_image`` / ``set_image_batch``, ``predict`` / ``predict_batch`` (masks, IoU
scores and 256x256 low-resolution logits as numpy arrays; masks come back as float 0/1
arrays, as the official ones do), ``get_image_embedding``, ``reset_predictor``.

What happens, as in the official code:
- the image is stretched to 1024x1024 (no aspect ratio kept; :mod:`attnvision.sam2.transforms`),
  encoded once, and the "no memory" embedding is added to its 64x64 embedding;
- a box becomes two corner points (labels 2 and 3) placed before the clicks, and a padding
  point always ends the sequence;
- a single mask (``multimask_output=False``) falls back to the best of the three multimask
  outputs when it is unstable (the released models' decoder setting);
- logits go back to the original size by one bilinear resize; the low-res logits returned
  are clamped to [-32, 32]. The object-score head is not applied to images (the official
  image predictor ignores it; the video side uses it).

Beyond the official predictor: file paths and any image mode in ``set_image``, one-line
errors for prompts of the wrong shape, and the decoder's image-only work done once per image
(:class:`~attnvision.sam.two_way.ImageContext`), not at every prompt.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from attnvision.errors import UserError
from attnvision.sam.predictor import as_rgb_uint8
from attnvision.sam.two_way import ImageContext
from attnvision.sam2.model import SAM2
from attnvision.sam2.transforms import (
    image_to_input,
    postprocess_masks,
    transform_boxes,
    transform_coords,
)

ImageInput = np.ndarray | Image.Image | str | os.PathLike
POINT_LABELS = (-1, 0, 1, 2, 3)  # padding, negative, positive, box top-left, bottom-right


def _as_rgb(image: ImageInput) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array from an array, a PIL image or a file path (through SAM's
    ``as_rgb_uint8``, which would sit better in ``attnvision.data.images``)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return as_rgb_uint8(image)


class SAM2ImagePredictor:
    def __init__(self, sam_model: SAM2, mask_threshold: float = 0.0,
                 max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0) -> None:
        """``max_hole_area`` / ``max_sprinkle_area``: fill background regions / remove
        foreground specks of at most that many pixels of the 256x256 logits (8-connected)."""
        self.model = sam_model
        self.mask_threshold = mask_threshold
        self.max_hole_area = max_hole_area
        self.max_sprinkle_area = max_sprinkle_area
        self.resolution = sam_model.image_size
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_predictor(self) -> None:
        self._is_image_set = False
        self._is_batch = False
        self._features: dict[str, Tensor | list[Tensor]] | None = None
        self._orig_hw: list[tuple[int, int]] = []
        self._context: ImageContext | None = None

    # --- images ------------------------------------------------------------------------------

    @torch.no_grad()
    def set_image(self, image: ImageInput) -> None:
        """Embed one image: an (H, W, 3) uint8 RGB array, a PIL image or a file path."""
        rgb = _as_rgb(image)
        self._embed([rgb])

    @torch.no_grad()
    def set_image_batch(self, image_list: list[ImageInput]) -> None:
        """Embed several images at once, for :meth:`predict_batch`."""
        if not isinstance(image_list, (list, tuple)) or not image_list:
            raise UserError("set_image_batch takes a non-empty list of images")
        self._embed([_as_rgb(image) for image in image_list])
        self._is_batch = True

    def _embed(self, images: list[np.ndarray]) -> None:
        self.reset_predictor()
        for rgb in images:
            if min(rgb.shape[:2]) < 1:
                raise UserError(f"the image is empty (shape {rgb.shape})")
        batch = torch.stack([image_to_input(rgb, self.resolution) for rgb in images])
        self._features = self.model.image_features(batch.to(self.device))
        self._orig_hw = [(int(rgb.shape[0]), int(rgb.shape[1])) for rgb in images]
        self._is_image_set = True

    def get_image_embedding(self) -> Tensor:
        """The (B, 256, 64, 64) embedding of the current image(s), no-memory embedding
        included."""
        self._require_image()
        return self._features["image_embed"]

    def _require_image(self) -> None:
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask "
                               "prediction.")

    def _decoder_context(self) -> ImageContext:
        """The decoder's prompt-independent work on the (single) current image."""
        if self._context is None:
            prompt_encoder = self.model.sam_prompt_encoder
            self._context = self.model.sam_mask_decoder.prepare_image(
                self._features["image_embed"], prompt_encoder.get_dense_pe(),
                prompt_encoder(points=None, boxes=None, masks=None)[1])
        return self._context

    # --- prompts -----------------------------------------------------------------------------

    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, normalize_coords: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts on the current image.

        ``point_coords`` (N, 2) (x, y) with ``point_labels`` (N,) (1 foreground, 0
        background), ``box`` (4,) XYXY, in pixels of the original image (or in [0, 1] with
        ``normalize_coords=False``); ``mask_input`` (1, 256, 256) logits from a previous
        call. Returns masks (C, H, W), scores (C,) and low-res logits (C, 256, 256), C = 3
        with ``multimask_output`` else 1. Prompts for K objects, points (K, N, 2) and/or
        boxes (K, 4), give the same with a leading K.
        """
        self._require_image()
        return self._predict_numpy(point_coords, point_labels, box, mask_input,
                                   multimask_output, return_logits, normalize_coords, 0)

    def predict_batch(self, point_coords_batch: list[np.ndarray] | None = None,
                      point_labels_batch: list[np.ndarray] | None = None,
                      box_batch: list[np.ndarray] | None = None,
                      mask_input_batch: list[np.ndarray] | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      normalize_coords: bool = True
                      ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for each image of :meth:`set_image_batch`, with its prompts:
        lists of masks, scores and low-res logits."""
        if not self._is_batch:
            raise UserError("predict_batch needs images set with set_image_batch(...)")
        outputs: tuple[list, list, list] = ([], [], [])
        def item(batch: list | None, i: int) -> np.ndarray | None:
            return None if batch is None else batch[i]

        for i in range(len(self._orig_hw)):
            result = self._predict_numpy(
                item(point_coords_batch, i), item(point_labels_batch, i), item(box_batch, i),
                item(mask_input_batch, i), multimask_output, return_logits, normalize_coords, i)
            for out, value in zip(outputs, result, strict=True):
                out.append(value)
        return outputs

    def _predict_numpy(self, point_coords: np.ndarray | None, point_labels: np.ndarray | None,
                       box: np.ndarray | None, mask_input: np.ndarray | None,
                       multimask_output: bool, return_logits: bool, normalize_coords: bool,
                       img_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        coords, labels, boxes, masks = self._prep_prompts(point_coords, point_labels, box,
                                                          mask_input, normalize_coords, img_idx)
        out = self._predict(coords, labels, boxes, masks, multimask_output, return_logits,
                            img_idx)
        # squeeze(0): one prompt gives (C, ...), K prompts (K, C, ...), as officially.
        masks_np, iou_np, low_np = (t.squeeze(0).float().cpu().numpy() for t in out)
        return masks_np, iou_np, low_np

    def _prep_prompts(self, point_coords: np.ndarray | None, point_labels: np.ndarray | None,
                      box: np.ndarray | None, mask_logits: np.ndarray | None,
                      normalize_coords: bool, img_idx: int = 0
                      ) -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """numpy prompts -> tensors in pixels of the square input: coords (K, N, 2), labels
        (K, N), box corners (K, 2, 2), mask logits (K, 1, 256, 256)."""
        orig_hw = self._orig_hw[img_idx]
        coords = labels = boxes = masks = None
        if point_coords is not None:
            if point_labels is None:
                raise UserError("point_coords needs point_labels (1 = foreground, "
                                "0 = background)")
            coords = torch.as_tensor(np.asarray(point_coords), dtype=torch.float,
                                     device=self.device)
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int,
                                     device=self.device)
            if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
                raise UserError(f"point_coords must be (N, 2) or (K, N, 2), got "
                                f"{tuple(coords.shape)}")
            if labels.shape != coords.shape[:-1]:
                raise UserError(f"point_labels of shape {tuple(labels.shape)} do not match "
                                f"point_coords of shape {tuple(coords.shape)}: one label per "
                                "point")
            if not torch.isin(labels, torch.tensor(POINT_LABELS, device=labels.device)).all():
                raise UserError("point_labels must be 1 (foreground) or 0 (background) "
                                "(or 2 / 3 for box corners, -1 for padding)")
            coords = transform_coords(coords, self.resolution, orig_hw, normalize_coords)
            if coords.ndim == 2:
                coords, labels = coords[None], labels[None]
        if box is not None:
            box_t = torch.as_tensor(np.asarray(box), dtype=torch.float, device=self.device)
            if box_t.shape[-1] != 4 or box_t.ndim > 2:
                raise UserError(f"box must be (4,) or (K, 4) as x0, y0, x1, y1, got "
                                f"{tuple(box_t.shape)}")
            boxes = transform_boxes(box_t, self.resolution, orig_hw, normalize_coords)
        if mask_logits is not None:
            masks = torch.as_tensor(np.asarray(mask_logits), dtype=torch.float,
                                    device=self.device)
            if masks.ndim == 3:
                masks = masks[None]
            low = self.model.sam_prompt_encoder.mask_input_size
            if masks.ndim != 4 or tuple(masks.shape[1:]) != (1, *low):
                raise UserError(f"mask_input must be (1, {low[0]}, {low[1]}) low-res logits "
                                f"(from a previous predict), got {tuple(masks.shape)}")
        return coords, labels, boxes, masks

    @torch.no_grad()
    def _predict(self, point_coords: Tensor | None, point_labels: Tensor | None,
                 boxes: Tensor | None = None, mask_input: Tensor | None = None,
                 multimask_output: bool = True, return_logits: bool = False, img_idx: int = 0
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Prompts already in the square input's pixels: points (K, N, 2) with labels
        (K, N), box corners (K, 2, 2), masks (K, 1, 256, 256) -> masks (K, C, H, W),
        IoU (K, C), low-res logits (K, C, 256, 256)."""
        self._require_image()
        points = None if point_coords is None else (point_coords, point_labels)
        if boxes is not None:
            # A box is its two corners as points (labels 2, 3), put before any clicks.
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int,
                                         device=corners.device).expand(len(corners), 2)
            if points is None:
                points = (corners, corner_labels)
            else:
                if len(corners) != len(points[0]) and 1 not in (len(corners), len(points[0])):
                    raise UserError(f"{len(corners)} boxes and {len(points[0])} point sets: "
                                    "give as many of each, or one to share")
                k = max(len(corners), len(points[0]))
                points = (torch.cat([corners.expand(k, -1, -1), points[0].expand(k, -1, -1)],
                                    dim=1),
                          torch.cat([corner_labels.expand(k, -1), points[1].expand(k, -1)],
                                    dim=1))
        prompt_encoder = self.model.sam_prompt_encoder
        sparse, dense = prompt_encoder(points=points, boxes=None, masks=mask_input)

        features = self._features
        rows = slice(img_idx, img_idx + 1)
        # The image-only work is kept between calls on one image; a mask prompt changes
        # the image tokens, and the decoder then leaves the context aside.
        context = (self._decoder_context()
                   if not self._is_batch and mask_input is None else None)
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=features["image_embed"][rows],
            image_pe=prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            high_res_features=[f[rows] for f in features["high_res_feats"]],
            context=context)
        masks = postprocess_masks(low_res, self._orig_hw[img_idx], self.mask_threshold,
                                  self.max_hole_area, self.max_sprinkle_area)
        low_res = low_res.clamp(-32.0, 32.0)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, low_res
