"""SAM 2: image encoder + SAM's prompt encoder + SAM 2's mask decoder, and the video parts.

Module names are the official checkpoint's (``image_encoder``, ``sam_prompt_encoder``,
``sam_mask_decoder``, ``no_mem_embed``, ``memory_attention``, ``memory_encoder``,
``obj_ptr_proj`` ...), so a whole ``sam2.1_hiera_*.pt`` (or SAM 2.0 ``sam2_hiera_*.pt``) loads
with ``strict=True``. The video parts live on the same model rather than on a subclass: the
official files always hold them, and an image-only model would need a table of keys to set
aside. They cost about 8M parameters that the image predictor never runs. How a frame is
tracked with them is :mod:`attnvision.sam2.tracking`.

On an image, SAM 2 is SAM with a better encoder: the frame has no memory to attend to, so the
learned "no memory" embedding is added to the image embedding instead (what the video model
does on a first frame), and the decoder also sees the stride-4 and stride-8 feature maps
(with ``use_high_res_features_in_sam``; an encoder of one level, as SAM's ViT in our
``sam2_tiny``, gives none).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnvision.sam.mask_decoder import HeadMLP
from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam2.configs import SAM2Config
from attnvision.sam2.image_encoder import BackboneOutput, ImageEncoder, ViTImageEncoder
from attnvision.sam2.mask_decoder import SAM2MaskDecoder
from attnvision.sam2.memory_attention import MemoryAttention
from attnvision.sam2.memory_encoder import MemoryEncoder


class SAM2(nn.Module):
    """The SAM 2 model; :class:`~attnvision.sam2.image_predictor.SAM2ImagePredictor` runs it
    on images and prompts, :func:`attnvision.sam2.tracking.track_step` on video frames."""

    mask_threshold: float = 0.0

    def __init__(self, image_encoder: ImageEncoder | ViTImageEncoder,
                 sam_prompt_encoder: PromptEncoder,
                 sam_mask_decoder: SAM2MaskDecoder, config: SAM2Config) -> None:
        super().__init__()
        self.config = config
        self.image_size = config.image_size
        self.image_encoder = image_encoder
        self.sam_prompt_encoder = sam_prompt_encoder
        self.sam_mask_decoder = sam_mask_decoder
        hidden, video = config.d_model, config.video
        mem_dim = video.mem_dim
        # What the memory attention would add on a frame with no memories.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)

        # The video parts (see attnvision.sam2.tracking for how they are used).
        self.memory_attention = MemoryAttention(hidden, video.memory_attention_layers,
                                                kv_dim=mem_dim,
                                                dim_feedforward=video.dim_feedforward,
                                                dropout=video.memory_attention_dropout)
        self.memory_encoder = MemoryEncoder(hidden, mem_dim)
        # A user's 0/1 mask (full image size) -> a stride-4 mask prompt on the logit scale,
        # so the decoder can turn a mask given as output into an object pointer.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        # SAM output token -> object pointer.
        self.obj_ptr_proj = HeadMLP(hidden, hidden, hidden, 3)
        # The pointers' 1-D time code -> the memory width (2.1); 2.0 adds no time code.
        self.obj_ptr_tpos_proj: nn.Module = (nn.Linear(hidden, mem_dim)
                                             if video.proj_tpos_enc_in_obj_ptrs
                                             else nn.Identity())
        # Per memory slot: slot num_maskmem - 1 for conditioning frames, t - 1 for the frame
        # t steps back.
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(video.num_maskmem, 1, 1, mem_dim))
        # The official model's stand-in memory on a first frame; the released models add
        # no_mem_embed directly instead, so this is loaded but never read.
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        # The pointer of a frame where the object is absent.
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        for p in (self.maskmem_tpos_enc, self.no_mem_pos_enc, self.no_obj_ptr):
            nn.init.trunc_normal_(p, std=0.02)
        # 2.1: added to the memory of a frame where the object is absent.
        self.no_obj_embed_spatial: nn.Parameter | None = None
        if video.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)
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
        added, and ``high_res_feats`` [(B, D/8, S/4, S/4), (B, D/4, S/8, S/8)] (empty
        without ``use_high_res_features_in_sam``)."""
        # images: (B, 3, S, S) normalised
        fpn = self.forward_image(images, positions=False).backbone_fpn
        embed = fpn[-1]
        if self.config.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.view(1, -1, 1, 1)
        high_res = fpn[:-1] if self.config.use_high_res_features_in_sam else []
        return {"image_embed": embed, "high_res_feats": list(high_res)}
