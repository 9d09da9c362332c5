"""Segment everything with SAM 2: the official ``SAM2AutomaticMaskGenerator`` interface.

The same names, arguments, defaults and records as the official generator, so a user switches
by changing one import. The official SAM 2 generator is SAM's with another model, and so is
this one: it extends :class:`attnvision.sam.automatic.SamAutomaticMaskGenerator` (each crop
encoded once, the grid decoded in batches, masks filtered as low-resolution logits and only
the survivors upsampled; the same crops, filters, NMS and records), and changes only what
SAM 2 does differently:

- the crop is stretched to the encoder's square (no aspect ratio kept), so prompts scale by
  S / W and S / H, and logits go back to the crop by one bilinear resize;
- the decoder also reads the stride-4 and stride-8 feature maps;
- ``mask_threshold`` is an argument (SAM's generator cuts at the model's 0);
- ``multimask_output=False``: one mask per point, the single-mask token's where it is stable,
  else the best of the three (the released models' decoder setting);
- ``use_m2m``: every mask of the grid is decoded again with its own low-res logits (clamped to
  [-32, 32]) as the mask prompt, one mask each, and the filters judge the refined mask and its
  predicted IoU. So no mask is dropped before its refinement: the IoU filter reads the refined
  prediction;
- ``min_mask_region_area`` as the official SAM 2 generator uses it: the image predictor's
  clean-up of each mask's low-res logits (holes and specks of at most that many low-res
  pixels), not SAM's clean-up of the final masks followed by a second NMS. (The official
  clean-up needs its CUDA extension; without one it warns and skips it. Ours always runs.)

Records are SAM's: ``bbox`` and ``crop_box`` hold ints, where the official SAM 2 generator,
which turns every field to float32 before writing records, gives the same numbers as floats.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
from torch import Tensor

from attnvision.sam.automatic import SamAutomaticMaskGenerator, _Crop, _DecoderInputs
from attnvision.sam2.image_predictor import SAM2ImagePredictor
from attnvision.sam2.model import SAM2
from attnvision.sam2.transforms import (
    fill_holes_and_sprinkles,
    postprocess_masks,
    transform_coords,
)

LOW_RES_CLAMP = 32.0  # the official predictor's bound on the low-res logits it hands back


class SAM2AutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """Masks for everything in an image, from a grid of point prompts, with SAM 2."""

    # The official SAM 2 generator keeps the prompts as float32 tensors.
    point_dtype = np.float32
    # min_mask_region_area cleans each mask's low-res logits instead (the predictor's setting).
    small_regions_after_nms = False

    def __init__(self, model: SAM2, points_per_side: int | None = 32,
                 points_per_batch: int = 64, pred_iou_thresh: float = 0.8,
                 stability_score_thresh: float = 0.95, stability_score_offset: float = 1.0,
                 mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7,
                 crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1,
                 point_grids: list[np.ndarray] | None = None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True) -> None:
        super().__init__(
            model, points_per_side=points_per_side, points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
            stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids, min_mask_region_area=min_mask_region_area,
            output_mode=output_mode)
        self.mask_threshold = mask_threshold
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    @property
    def model(self) -> SAM2:
        return self.predictor.model

    # --- SAM 2 where SAM's pipeline asks for the model ------------------------------------

    def _new_predictor(self, model: SAM2) -> SAM2ImagePredictor:
        return SAM2ImagePredictor(model, max_hole_area=self.min_mask_region_area,
                                  max_sprinkle_area=self.min_mask_region_area)

    def _embed_crop(self, pixels: np.ndarray) -> tuple[int, int]:
        self.predictor.set_image(pixels)
        return (self.predictor.resolution, self.predictor.resolution)

    def _forget_crop(self) -> None:
        self.predictor.reset_predictor()

    def _input_coords(self, points: np.ndarray, crop: _Crop) -> Tensor:
        coords = torch.as_tensor(points, dtype=torch.float32, device=self.predictor.device)
        return transform_coords(coords, self.predictor.resolution, crop.size, normalize=True)

    def _decoder_inputs(self) -> _DecoderInputs:
        predictor, model = self.predictor, self.model
        features = predictor._features
        return _DecoderInputs(model.sam_prompt_encoder, model.sam_mask_decoder,
                              features["image_embed"], predictor._decoder_context(),
                              features["high_res_feats"])

    def _autocast(self) -> AbstractContextManager:
        return nullcontext()  # SAM 2 runs in the weights' own precision

    def _upscale(self, logits: Tensor, crop: _Crop) -> Tensor:
        return postprocess_masks(logits[None], crop.size)[0]

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SAM's decode step (logits and IoU of the masks that pass the IoU filter, and the
        (B, C) filter), with one mask per point or the m2m refinement when asked for."""
        if self.multimask_output and not self.use_m2m:
            # SAM's path: the IoU filter runs before any mask is multiplied out.
            logits, iou, keep = super()._decode(coords)
        else:
            # A single mask may be the best of the three, chosen by stability, which needs
            # pixels; a refinement needs every mask. Both decode all masks first.
            labels = torch.ones(len(coords), 1, dtype=torch.int, device=coords.device)
            logits, iou = self._predict_low_res(coords[:, None], labels, None,
                                                self.multimask_output)  # (B, C, h, w), (B, C)
            if self.use_m2m:
                logits, iou = self._refine(coords, logits)
            keep = self._passes_iou(iou)
            logits, iou = logits[keep], iou[keep]
        return self._clean(logits), iou, keep

    def _predict_low_res(self, points: Tensor, labels: Tensor, mask_input: Tensor | None,
                         multimask_output: bool) -> tuple[Tensor, Tensor]:
        """Points (K, N, 2) in the input square's pixels, labels (K, N), mask prompts
        (K, 1, h, w) or None -> low-res logits (K, C, h, w) and IoU (K, C)."""
        d = self._decoder_inputs()
        sparse, dense = d.prompt_encoder(points=(points, labels), boxes=None, masks=mask_input)
        # A mask prompt changes the image tokens: the image-only context no longer applies.
        logits, iou, _, _ = d.decoder(
            d.embedding, d.prompt_encoder.get_dense_pe(), sparse, dense,
            multimask_output=multimask_output, high_res_features=d.high_res,
            context=d.context if mask_input is None else None)
        return logits.float(), iou.float()

    def _refine(self, coords: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Each of the (B, C, h, w) masks of B points decoded again from its point and its
        logits: (B, C, h, w) refined logits and (B, C) IoU."""
        b, c = logits.shape[:2]
        points = coords.repeat_interleave(c, dim=0)  # point-major, as the masks are
        labels = torch.ones(len(points), dtype=torch.int, device=points.device)
        low_res = logits.flatten(0, 1).clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)
        refined, iou = self._refine_low_res(points, labels, low_res, self.points_per_batch)
        return refined.view(b, c, *refined.shape[-2:]), iou.view(b, c)

    def _refine_low_res(self, points: Tensor, labels: Tensor, low_res: Tensor,
                        points_per_batch: int) -> tuple[Tensor, Tensor]:
        """Points (K, 2), labels (K,), logits (K, h, w) -> one mask each: (K, 1, h, w) and
        (K, 1), ``points_per_batch`` at a time (each prompt has image tokens of its own)."""
        parts = [self._predict_low_res(points[i:i + points_per_batch, None],
                                       labels[i:i + points_per_batch, None],
                                       low_res[i:i + points_per_batch, None], False)
                 for i in range(0, len(points), points_per_batch)]
        if not parts:
            h, w = low_res.shape[-2:]
            return low_res.new_zeros(0, 1, h, w), low_res.new_zeros(0, 1)
        return torch.cat([m for m, _ in parts]), torch.cat([q for _, q in parts])

    def _clean(self, logits: Tensor) -> Tensor:
        """The predictor's clean-up of (K, h, w) low-res logits (a no-op unless
        ``min_mask_region_area`` > 0), as the official generator's masks get it."""
        p = self.predictor
        return fill_holes_and_sprinkles(logits[:, None], p.mask_threshold, p.max_hole_area,
                                        p.max_sprinkle_area)[:, 0]

    @torch.no_grad()
    def refine_with_m2m(self, points: Tensor, point_labels: Tensor, low_res_masks: Tensor,
                        points_per_batch: int) -> tuple[Tensor, Tensor]:
        """The official public step: on the predictor's current image, each point (K, 2) in
        the input square's pixels with its label (K,) and low-res logits (K, h, w) decoded
        into one mask; returns logits at the image size (K, 1, H, W) and IoU (K, 1)."""
        logits, iou = self._refine_low_res(points, point_labels, low_res_masks,
                                           points_per_batch)
        p = self.predictor
        return postprocess_masks(logits, p._orig_hw[0], p.mask_threshold, p.max_hole_area,
                                 p.max_sprinkle_area), iou
