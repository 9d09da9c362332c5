"""The official Segment Anything model with seeded random weights, as the parity tests and the
benchmarks build it (no SAM weights can be downloaded here).

Every tensor the official ``.pth`` holds is perturbed, so no weight sits at a symmetric
initial value that could hide a swapped name. ``sharpen`` makes the masks decisive and the
predicted IoU high, so that masks pass the automatic generator's default filters.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)


def official_sam(img_size: int = 1024, noise: float = 0.05, sharpen: bool = False,
                 seed: int = 0, **encoder: Any) -> Sam:
    """The official SAM at ``img_size`` with ``encoder`` settings (embed_dim, depth,
    num_heads, global_attn_indexes, window_size (default 14)), its weights seeded."""
    torch.manual_seed(seed)
    grid = img_size // 16
    encoder.setdefault("window_size", 14)
    sam = Sam(image_encoder=ImageEncoderViT(img_size=img_size, mlp_ratio=4, patch_size=16,
                                            qkv_bias=True, use_rel_pos=True, out_chans=256,
                                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                            **encoder),
              prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                           input_image_size=(img_size, img_size),
                                           mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                       transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                                                     mlp_dim=2048, num_heads=8),
                                       transformer_dim=256, iou_head_depth=3,
                                       iou_head_hidden_dim=256)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for t in sam.state_dict(keep_vars=True).values():  # all that the .pth holds
            t.add_(torch.randn(t.shape, generator=gen) * noise * (t.std() if t.numel() > 1
                                                                  else 1).clamp_min(0.2))
        if sharpen:
            for mlp in sam.mask_decoder.output_hypernetworks_mlps:
                mlp.layers[-1].weight.mul_(40.0)
            sam.mask_decoder.iou_prediction_head.layers[-1].bias.add_(1.1)
    return sam
