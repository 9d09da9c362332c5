"""SAM 2's image model: image encoder + SAM's prompt encoder + SAM 2's mask decoder.

Module names are the official checkpoint's (``image_encoder``, ``sam_prompt_encoder``,
``sam_mask_decoder``, ``no_mem_embed``), so the image part of ``sam2.1_hiera_*.pt`` loads with
``strict=True``. The video side (memory encoder, memory attention, object pointers) will be
added as further modules under the official names (``memory_encoder``, ``memory_attention``,
``obj_ptr_proj``, ``maskmem_tpos_enc`` ...), in their own files, by a subclass of this model;
the loader in :mod:`attnvision.sam2.checkpoints` then takes those keys strictly too.

On an image, SAM 2 is SAM with a better encoder: the frame has no memory to attend to, so the
learned "no memory" embedding is added to the image embedding instead (what the video model
does on a first frame), and the decoder also sees the stride-4 and stride-8 feature maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam2.configs import SAM2Config
from attnvision.sam2.image_encoder import BackboneOutput, ImageEncoder
from attnvision.sam2.mask_decoder import SAM2MaskDecoder


class SAM2(nn.Module):
    """The SAM 2 image model; :class:`~attnvision.sam2.image_predictor.SAM2ImagePredictor`
    runs it on images and prompts."""

    mask_threshold: float = 0.0

    def __init__(self, image_encoder: ImageEncoder, sam_prompt_encoder: PromptEncoder,
                 sam_mask_decoder: SAM2MaskDecoder, config: SAM2Config) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.image_encoder = image_encoder
        self.sam_prompt_encoder = sam_prompt_encoder
        self.sam_mask_decoder = sam_mask_decoder
        hidden = config.d_model
        # What the memory attention would add on a frame with no memories.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)
        self.size_name: str | None = None  # set by build_sam2

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def directly_add_no_mem_embed(self) -> bool:
        return self.config.directly_add_no_mem_embed

    def forward_image(self, images: Tensor, positions: bool = True) -> BackboneOutput:
        """The encoder's feature maps, the two finest already projected by the decoder's
        ``conv_s0`` / ``conv_s1`` (once per image, not once per prompt)."""
        # images: (B, 3, S, S) normalised
        out = self.image_encoder(images, positions=positions)
        if self.config.use_high_res_features_in_sam:
            fpn = list(out.backbone_fpn)
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])  # (B, D/8, S/4, S/4)
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])  # (B, D/4, S/8, S/8)
            out.backbone_fpn = fpn
        return out

    def image_features(self, images: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """What the mask decoder reads for images without memory, in the official
        predictor's layout: ``image_embed`` (B, D, S/16, S/16) with the no-memory embedding
        added, and ``high_res_feats`` [(B, D/8, S/4, S/4), (B, D/4, S/8, S/8)]."""
        # images: (B, 3, S, S) normalised
        fpn = self.forward_image(images, positions=False).backbone_fpn
        embed = fpn[-1]
        if self.config.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.view(1, -1, 1, 1)
        high_res = fpn[:-1] if self.config.use_high_res_features_in_sam else []
        return {"image_embed": embed, "high_res_feats": list(high_res)}
