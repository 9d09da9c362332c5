"""SAM: image encoder + prompt encoder + mask decoder, with SAM's pre- and postprocessing.

Parameter names are the official checkpoint's (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*``), so ``sam_vit_b_01ec64.pth`` and its siblings load with ``strict=True``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.precision import autocast, check_precision
from attnvision.sam.image_encoder import ImageEncoderViT
from attnvision.sam.mask_decoder import MaskDecoder
from attnvision.sam.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics in 0..255
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    mask_threshold: float = 0.0
    image_format: str = "RGB"
    # "fp32", or "bf16" / "fp16" autocast for the encoder and decoder (attnvision.precision);
    # the predictor and the automatic mask generator run the model under it.
    precision: str = "fp32"

    def __init__(self, image_encoder: ImageEncoderViT, prompt_encoder: PromptEncoder,
                 mask_decoder: MaskDecoder, pixel_mean: tuple[float, ...] = PIXEL_MEAN,
                 pixel_std: tuple[float, ...] = PIXEL_STD) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        # Not in the checkpoints (persistent=False), as in the official model.
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        # Set by build_sam: the size's name and the options that rebuild a non-standard one
        # (img_size, encoder overrides), as our checkpoint files record them.
        self.size_name: str | None = None
        self.build_options: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of :attr:`precision` on this model's device."""
        return autocast(check_precision(self.precision, self.device), self.device)

    def preprocess(self, x: Tensor) -> Tensor:
        """Normalise (B, 3, h, w) pixels in 0..255 and pad bottom/right to img_size."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(self, masks: Tensor, input_size: tuple[int, ...],
                          original_size: tuple[int, ...]) -> Tensor:
        """(B, C, 256, 256) logits -> (B, C, H, W) at the original size.

        The official two-step resize (to img_size, crop the padding, to the original size),
        with the same values, so thresholds and parity hold. The first step is computed only
        over the low-res rows and columns the image covers (+1 cell, so the bilinear weights
        at the last kept pixel are those of the whole square): the padding is never upscaled.
        """
        low = masks.shape[-1]
        factor = self.img_size // low  # 4
        rows = min(low, -(-input_size[0] // factor) + 1)
        cols = min(low, -(-input_size[1] // factor) + 1)
        masks = F.interpolate(masks[..., :rows, :cols], (rows * factor, cols * factor),
                              mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]],
                multimask_output: bool) -> list[dict[str, Tensor]]:
        """The official batched interface: one dict per image with ``image`` (3, h, w) already
        resized, ``original_size`` and optional ``point_coords``, ``point_labels``, ``boxes``,
        ``mask_inputs``; returns ``masks``, ``iou_predictions``, ``low_res_logits`` per image."""
        images = torch.stack([self.preprocess(r["image"]) for r in batched_input])
        embeddings = self.image_encoder(images)  # (B, 256, 64, 64)
        outputs = []
        for record, embedding in zip(batched_input, embeddings, strict=True):
            points = ((record["point_coords"], record["point_labels"])
                      if "point_coords" in record else None)
            sparse, dense = self.prompt_encoder(points=points, boxes=record.get("boxes"),
                                                masks=record.get("mask_inputs"))
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding[None], image_pe=self.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask_output)
            masks = self.postprocess_masks(low_res, record["image"].shape[-2:],
                                           record["original_size"])
            outputs.append({"masks": masks > self.mask_threshold, "iou_predictions": iou,
                            "low_res_logits": low_res})
        return outputs
