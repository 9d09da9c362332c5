"""The official Segment Anything model with seeded random weights, for side-by-side runs.

No SAM weights can be downloaded here, so both sides of a benchmark hold the same random
weights: the official model's, perturbed so that no weight sits at a symmetric initial value,
with the mask heads sharpened and the IoU head shifted so that masks pass the automatic
generator's default filters (as in tests/reference/test_sam_automatic.py). Saved as an
official ``.pth``, they load into ours with ``build_sam``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from attnvision.sam import build_sam

FULL = {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)}
SMALL = {"embed_dim": 192, "depth": 2, "num_heads": 3, "global_attn_indexes": (1,)}


def official_sam(encoder: dict[str, Any], seed: int = 0) -> Sam:
    """The official SAM at 1024 px with ``encoder`` settings (FULL: vit_b) and seeded weights."""
    torch.manual_seed(seed)
    sam = Sam(image_encoder=ImageEncoderViT(img_size=1024, mlp_ratio=4, patch_size=16,
                                            qkv_bias=True, use_rel_pos=True, window_size=14,
                                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                            out_chans=256, **encoder),
              prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                           input_image_size=(1024, 1024), mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                       transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                                                     mlp_dim=2048, num_heads=8),
                                       transformer_dim=256, iou_head_depth=3,
                                       iou_head_hidden_dim=256)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for t in sam.state_dict(keep_vars=True).values():
            t.add_(torch.randn(t.shape, generator=gen) * 0.3 * (t.std() if t.numel() > 1
                                                                else 1).clamp_min(0.2))
        for mlp in sam.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
        sam.mask_decoder.iou_prediction_head.layers[-1].bias.add_(1.1)
    return sam


def both_sams(encoder: dict[str, Any], folder: Path, seed: int = 0) -> tuple[Any, Sam, Path]:
    """(ours, official, path of the shared .pth): the same weights in both models."""
    ref = official_sam(encoder, seed)
    path = folder / "sam_official_format.pth"
    torch.save(ref.state_dict(), path)
    return build_sam("vit_b", checkpoint=path, **encoder), ref, path
