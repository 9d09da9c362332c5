"""A small SAM in our checkpoint format, for the command-line tests (seconds, not minutes)."""

from collections.abc import Callable
from pathlib import Path

import torch

from attnvision.sam import Sam, build_sam
from attnvision.sam.checkpoints import save_sam

# 256 px input, a 2-block encoder 64 wide: the full pipeline at a fraction of vit_b's cost.
SMALL = {"img_size": 256, "embed_dim": 64, "depth": 2, "num_heads": 2,
         "global_attn_indexes": [1], "window_size": 4}


def small_sam(adjust: Callable[[Sam], None] | None = None) -> Sam:
    """The small SAM with seeded weights perturbed off their initial values, then ``adjust``ed."""
    build = dict(SMALL)
    img_size = build.pop("img_size")
    torch.manual_seed(0)
    model = build_sam("vit_b", img_size=img_size,
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in build.items()})
    with torch.no_grad():
        for t in model.parameters():
            t.add_(torch.randn_like(t) * 0.05)
        if adjust is not None:
            adjust(model)
    return model


def small_sam_checkpoint(path: Path, adjust: Callable[[Sam], None] | None = None) -> Path:
    """:func:`small_sam`, saved at ``path`` in our format."""
    return save_sam(small_sam(adjust), path, "vit_b", build=SMALL)
