"""Segment everything: SAM prompted by a grid of points, filtered, de-duplicated.

The official ``SamAutomaticMaskGenerator`` interface, parameters, defaults and records; the
same masks (tests/reference/), computed with less work:

- each crop is encoded once, and the grid's points go through the mask decoder
  ``points_per_batch`` at a time, sharing the image work between prompts;
- masks stay as low-resolution logits (256 x 256) while they are filtered. The predicted-IoU
  filter needs no pixels, so a rejected mask is never upsampled. The stability score and the
  box (for the crop-edge filter and NMS) are defined on the full-resolution mask, so they are
  computed on upsampled chunks of the remaining masks and the pixels are dropped at once;
- only the masks that survive every filter and both NMS passes are upsampled again, to
  binary masks in the image frame, and encoded for output;
- the first upsampling (to the encoder's square input) covers only the part of the square
  that holds the image, not the padding.

Records are dicts with ``segmentation`` (per ``output_mode``), ``area``, ``bbox`` (XYWH, the
official convention: w = x1 - x0 with x1 the last pixel), ``predicted_iou``, ``point_coords``,
``stability_score`` and ``crop_box`` (XYWH).

SAM 2's generator (:mod:`attnvision.sam2.automatic`) is this pipeline with another model: what
differs (the predictor, prompt coordinates, the decoder's inputs, the upscaling) sits in the
small methods marked "model-specific" below, which it overrides.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnvision.data.rle import masks_to_rle, rle_area, rle_to_coco, rle_to_mask
from attnvision.sam.masks import (
    batched_nms,
    box_area,
    crop_boxes,
    layer_point_grids,
    masks_to_boxes,
    remove_small_regions,
    stability_score,
)
from attnvision.sam.model import Sam
from attnvision.sam.predictor import ImageLike, SamPredictor, as_rgb_uint8

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
CROP_EDGE_TOLERANCE = 20  # pixels: a box this close to a crop's inner edge was cut by it
UPSAMPLE_CHUNK = 32  # masks upsampled at once: 32 x 1024 x 1024 float32 = 128 MB


@dataclass
class _Crop:
    box: list[int]  # XYXY in the image
    size: tuple[int, int]  # (h, w) of the crop
    input_size: tuple[int, int]  # (h, w) of the crop resized for the encoder


@dataclass
class _DecoderInputs:
    """What the mask decoder reads for the current crop, whatever the model."""

    prompt_encoder: nn.Module
    decoder: nn.Module
    embedding: Tensor  # (1, D, h, w)
    context: Any  # the decoder's prompt-independent work on this image (an ImageContext)
    high_res: list[Tensor] | None = None  # SAM 2's finer feature maps


@dataclass
class _Candidates:
    """Masks that passed the filters so far, one row each, still at low resolution."""

    logits: Tensor  # (K, 4h, 4w) decoder logits
    iou: Tensor  # (K,) predicted IoU
    stability: Tensor  # (K,)
    boxes: Tensor  # (K, 4) XYXY int64, last pixel inclusive
    points: Tensor  # (K, 2) float64 (x, y) prompt
    crop: Tensor  # (K,) index of the crop the mask came from

    def select(self, keep: Tensor) -> _Candidates:
        return _Candidates(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))

    @staticmethod
    def cat(parts: list[_Candidates]) -> _Candidates:
        return _Candidates(*(torch.cat([getattr(p, f) for p in parts])
                             for f in _Candidates.__dataclass_fields__))


# The official generator's filters: predicted IoU, stability score.
OFFICIAL_THRESHOLDS = (0.88, 0.95)


class SamAutomaticMaskGenerator:
    """Masks for everything in an image, from a grid of point prompts (official interface)."""

    def __init__(self, model: Sam, points_per_side: int | None = 32,
                 points_per_batch: int = 64, pred_iou_thresh: float = OFFICIAL_THRESHOLDS[0],
                 stability_score_thresh: float = OFFICIAL_THRESHOLDS[1],
                 stability_score_offset: float = 1.0,
                 box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1,
                 point_grids: list[np.ndarray] | None = None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask") -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        if points_per_side is not None:
            point_grids = layer_point_grids(points_per_side, crop_n_layers,
                                            crop_n_points_downscale_factor)
        if len(point_grids) < crop_n_layers + 1:
            raise ValueError(f"point_grids holds {len(point_grids)} grids; crop_n_layers="
                             f"{crop_n_layers} needs one per layer ({crop_n_layers + 1})")
        self.point_grids = [np.asarray(g, dtype=np.float64).reshape(-1, 2) for g in point_grids]
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        # The official SAM generator cuts logits at the model's threshold; SAM 2's takes one.
        self.mask_threshold = model.mask_threshold
        self.predictor = self._new_predictor(model)

    @property
    def model(self) -> Sam:
        return self.predictor.model

    @torch.no_grad()
    def generate(self, image: ImageLike) -> list[dict[str, Any]]:
        """Records of every mask found in an (H, W, 3) uint8 image (or an image file)."""
        image = as_rgb_uint8(image)
        size = (int(image.shape[0]), int(image.shape[1]))
        boxes, layers = crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        crops, parts = [], []
        for index, (box, layer) in enumerate(zip(boxes, layers, strict=True)):
            crop, found = self._process_crop(image, box, layer, index, size)
            crops.append(crop)
            parts.append(found)
        found = _Candidates.cat(parts)

        if len(crops) > 1 and len(found.iou):
            # The same object found in several crops: keep the one from the smallest crop.
            crop_xyxy = torch.tensor([c.box for c in crops], dtype=torch.float32,
                                     device=found.crop.device)
            scores = 1 / box_area(crop_xyxy)[found.crop]
            found = found.select(batched_nms(found.boxes.float(), scores,
                                             torch.zeros_like(found.crop),
                                             self.crop_nms_thresh))

        if self.min_mask_region_area > 0 and self.small_regions_after_nms:
            rles, found = self._remove_small_regions(found, crops, size)
            segmentations, areas = self._encode_rles(rles)
        else:
            segmentations, areas = self._encode(found, crops, size)
        return [self._record(found, i, crops, segmentations[i], areas[i])
                for i in range(len(segmentations))]

    # --- model-specific (SAM 2's generator overrides these) ---------------------------

    # (x, y) prompts as the official generator keeps them for the records.
    point_dtype: type = np.float64
    # min_mask_region_area cleans the final masks, then NMS runs again (SAM 2 does otherwise).
    small_regions_after_nms: bool = True

    def _new_predictor(self, model: Sam) -> SamPredictor:
        return SamPredictor(model)

    def _embed_crop(self, pixels: np.ndarray) -> tuple[int, int]:
        """Encode one crop; the (h, w) of the encoder's input it was resized to."""
        self.predictor.set_image(pixels)
        return tuple(self.predictor.input_size)

    def _forget_crop(self) -> None:
        self.predictor.reset_image()

    def _input_coords(self, points: np.ndarray, crop: _Crop) -> Tensor:
        """(B, 2) (x, y) in the crop's pixels -> float32 in the encoder input's pixels."""
        coords = self.predictor.transform.apply_coords(points, crop.size)
        return torch.as_tensor(coords, dtype=torch.float32, device=self.predictor.device)

    def _decoder_inputs(self) -> _DecoderInputs:
        model = self.model
        return _DecoderInputs(model.prompt_encoder, model.mask_decoder, self.predictor.features,
                              self.predictor.decoder_context())

    def _autocast(self) -> AbstractContextManager:
        return self.model.autocast()

    def _upscale(self, logits: Tensor, crop: _Crop) -> Tensor:
        """(k, 4h, 4w) decoder logits -> (k, H, W) logits at the crop's size."""
        # One image of k channels: the resize runs once over all of them.
        return self.model.postprocess_masks(logits[None], crop.input_size, crop.size)[0]

    # --- one crop ------------------------------------------------------------------------------

    def _process_crop(self, image: np.ndarray, box: list[int], layer: int, index: int,
                      size: tuple[int, int]) -> tuple[_Crop, _Candidates]:
        x0, y0, x1, y1 = box
        pixels = image[y0:y1, x0:x1]
        crop = _Crop(box=list(box), size=(y1 - y0, x1 - x0),
                     input_size=self._embed_crop(pixels))  # the one encoder pass of this crop
        points = (self.point_grids[layer] * np.array([x1 - x0, y1 - y0], dtype=np.float64)
                  ).astype(self.point_dtype)
        parts = [self._process_batch(points[i:i + self.points_per_batch], crop, size)
                 for i in range(0, len(points), self.points_per_batch)]
        self._forget_crop()
        found = _Candidates.cat(parts)
        # Duplicates inside the crop: keep the higher predicted IoU (boxes in the crop frame).
        keep = batched_nms(found.boxes.float(), found.iou,
                           torch.zeros_like(found.crop), self.box_nms_thresh)
        found = found.select(keep)
        offset = torch.tensor([x0, y0], device=found.iou.device)
        found.boxes = found.boxes + offset.repeat(2)
        found.points = found.points + offset
        found.crop = torch.full_like(found.iou, index, dtype=torch.long)
        return crop, found

    def _process_batch(self, points: np.ndarray, crop: _Crop,
                       size: tuple[int, int]) -> _Candidates:
        # points: (B, 2) (x, y) in the crop's pixels
        coords_t = self._input_coords(points, crop)
        # Prompts are independent: on a CPU a few at a time keep the decoder's per-prompt
        # image tokens (4 MB each for SAM) in cache; a GPU takes the whole batch at once.
        step = (self._decoder_inputs().decoder.cpu_prompt_chunk
                if coords_t.device.type == "cpu" else len(points))
        parts = [self._decode(coords_t[i:i + step]) for i in range(0, len(points), step)]
        logits = torch.cat([p[0] for p in parts])
        iou = torch.cat([p[1] for p in parts])
        keep = torch.cat([p[2] for p in parts])  # (B, C): masks that passed the IoU filter
        points_t = torch.as_tensor(points, device=iou.device)
        points_t = points_t.repeat_interleave(keep.sum(dim=1), dim=0)  # one per mask kept
        stability, boxes, kept = [], [], []
        for start in range(0, len(iou), UPSAMPLE_CHUNK):
            full = self._upscale(logits[start:start + UPSAMPLE_CHUNK], crop)  # (k, h, w)
            score = stability_score(full, self.mask_threshold, self.stability_score_offset)
            ok = (score >= self.stability_score_thresh if self.stability_score_thresh > 0
                  else torch.ones_like(score, dtype=torch.bool))
            stability.append(score[ok])
            boxes.append(masks_to_boxes(full[ok] > self.mask_threshold))
            kept.append(torch.nonzero(ok)[:, 0] + start)
            del full
        dev = iou.device
        idx = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long, device=dev)
        found = _Candidates(
            logits=logits[idx], iou=iou[idx],
            stability=torch.cat(stability) if stability else torch.zeros(0, device=dev),
            boxes=torch.cat(boxes) if boxes else torch.zeros(0, 4, dtype=torch.long, device=dev),
            points=points_t[idx], crop=torch.zeros(len(idx), dtype=torch.long, device=dev))
        return found.select(~self._cut_by_crop_edge(found.boxes, crop, size))

    def _decode(self, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One positive point each (B, 2) -> the logits (K, 4h, 4w) and predicted IoU (K,) of
        the K masks whose IoU passes the filter, point-major, and the (B, 3) filter (SAM 2's
        generator may give one mask per point: (B, 1))."""
        d = self._decoder_inputs()
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=coords.device)
        multimask = slice(1, None)  # the three ambiguous masks of every point
        with self._autocast():
            sparse, dense = d.prompt_encoder(points=(coords[:, None], labels),
                                             boxes=None, masks=None)
            tokens, image = d.decoder.run_transformer(
                d.embedding, d.prompt_encoder.get_dense_pe(), sparse, dense, context=d.context)
            iou = d.decoder.iou_from(tokens, multimask).float()  # (B, 3)
            # The predicted IoU needs no pixels: filter before any mask is computed, and
            # upscale the image tokens only for the points with a mask left.
            keep = self._passes_iou(iou)
            alive = keep.any(dim=1)
            logits = d.decoder.masks_from(tokens[alive],
                                          image[alive] if len(image) > 1 else image,
                                          d.embedding.shape[-2:], multimask, d.high_res).float()
        return logits[keep[alive]], iou[keep], keep

    def _passes_iou(self, iou: Tensor) -> Tensor:
        """The predicted-IoU filter (strictly above the threshold; 0 keeps everything)."""
        return (iou > self.pred_iou_thresh if self.pred_iou_thresh > 0
                else torch.ones_like(iou, dtype=torch.bool))

    @staticmethod
    def _cut_by_crop_edge(boxes: Tensor, crop: _Crop, size: tuple[int, int]) -> Tensor:
        """(K,) True for boxes (crop frame) touching an edge of the crop inside the image."""
        x0, y0 = crop.box[:2]
        in_image = boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)
        crop_edge = (in_image - torch.tensor(crop.box, device=boxes.device)).abs()
        image_edge = (in_image - torch.tensor([0, 0, size[1], size[0]], device=boxes.device)
                      ).abs()
        crop_edge, image_edge = crop_edge <= CROP_EDGE_TOLERANCE, image_edge <= (
            CROP_EDGE_TOLERANCE)
        return (crop_edge & ~image_edge).any(dim=1)

    # --- the survivors ------------------------------------------------------------------------

    def _full_masks(self, found: _Candidates, crops: list[_Crop], size: tuple[int, int]):
        """Yield (indices, (k, H, W) bool masks in the image frame) over chunks of ``found``."""
        threshold = self.mask_threshold
        for start in range(0, len(found.iou), UPSAMPLE_CHUNK):
            idx = torch.arange(start, min(start + UPSAMPLE_CHUNK, len(found.iou)),
                               device=found.crop.device)
            out = torch.zeros(len(idx), *size, dtype=torch.bool, device=found.crop.device)
            for c in found.crop[idx].unique().tolist():
                sel = (found.crop[idx] == c).nonzero()[:, 0]
                x0, y0, x1, y1 = crops[c].box
                out[sel, y0:y1, x0:x1] = self._upscale(found.logits[idx[sel]],
                                                       crops[c]) > threshold
            yield idx, out

    def _encode(self, found: _Candidates, crops: list[_Crop], size: tuple[int, int]
                ) -> tuple[list[Any], list[int]]:
        segmentations: list[Any] = []
        areas: list[int] = []
        for _, masks in self._full_masks(found, crops, size):
            areas += masks.sum((1, 2)).tolist()
            if self.output_mode == "binary_mask":
                segmentations += list(masks.cpu().numpy())
            else:
                rles = masks_to_rle(masks)
                segmentations += (rles if self.output_mode == "uncompressed_rle"
                                  else [rle_to_coco(r) for r in rles])
        return segmentations, areas

    def _encode_rles(self, rles: list[dict]) -> tuple[list[Any], list[int]]:
        areas = [rle_area(r) for r in rles]
        if self.output_mode == "binary_mask":
            return [rle_to_mask(r) for r in rles], areas
        if self.output_mode == "coco_rle":
            return [rle_to_coco(r) for r in rles], areas
        return rles, areas

    def _remove_small_regions(self, found: _Candidates, crops: list[_Crop],
                              size: tuple[int, int]) -> tuple[list[dict], _Candidates]:
        """Fill small holes, drop small islands, then NMS again preferring untouched masks."""
        rles: list[dict] = []
        unchanged: list[float] = []
        boxes: list[Tensor] = []
        for _, masks in self._full_masks(found, crops, size):
            cleaned = []
            for mask in masks.cpu().numpy():
                mask, holes = remove_small_regions(mask, self.min_mask_region_area, "holes")
                mask, islands = remove_small_regions(mask, self.min_mask_region_area,
                                                     "islands")
                cleaned.append(mask)
                unchanged.append(float(not (holes or islands)))
            cleaned_t = torch.from_numpy(np.stack(cleaned))
            boxes.append(masks_to_boxes(cleaned_t))
            rles += masks_to_rle(cleaned_t)
        if not rles:
            return [], found
        found.boxes = torch.cat(boxes).to(found.crop.device)
        keep = batched_nms(found.boxes.float(), torch.tensor(unchanged, device=found.crop.device),
                           torch.zeros(len(rles), dtype=torch.long),
                           max(self.box_nms_thresh, self.crop_nms_thresh))
        return [rles[i] for i in keep.tolist()], found.select(keep)

    def _record(self, found: _Candidates, i: int, crops: list[_Crop], segmentation: Any,
                area: int) -> dict[str, Any]:
        def xywh(box: list[int]) -> list[int]:
            return [box[0], box[1], box[2] - box[0], box[3] - box[1]]

        return {
            "segmentation": segmentation,
            "area": int(area),
            "bbox": xywh(found.boxes[i].tolist()),
            "predicted_iou": float(found.iou[i]),
            "point_coords": [found.points[i].tolist()],
            "stability_score": float(found.stability[i]),
            "crop_box": xywh(crops[int(found.crop[i])].box),
        }
