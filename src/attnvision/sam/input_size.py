"""Running a SAM at another input size than the one its weights were trained at.

Only two kinds of weights depend on the input size: the learned absolute positions
``image_encoder.pos_embed`` (1, g, g, D), one per token of the g x g grid, and the relative
position tables ``rel_pos_h`` / ``rel_pos_w`` (2g - 1, head_dim) of the global-attention
blocks. Windowed blocks see a fixed window whatever the image size, so their tables stay.
Resampling the grid-sized ones (bicubic for the 2-D positions, linear for the 1-D tables, as
ViTDet and timm do for a new resolution) gives a model of the same weights on a finer or
coarser grid. A larger input lets small objects cover more tokens; it is most useful after a
short fine-tuning at the new size (``attnvision train sam --img-size``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POS_EMBED = "image_encoder.pos_embed"


def resample_pos_embed(pos: Tensor, grid: int) -> Tensor:
    """(1, g, g, D) learned positions -> (1, grid, grid, D), bicubic."""
    if pos.shape[1] == grid and pos.shape[2] == grid:
        return pos
    x = pos.float().permute(0, 3, 1, 2)  # (1, D, g, g)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).to(pos.dtype)


def resample_rel_pos(table: Tensor, rows: int) -> Tensor:
    """(2g - 1, head_dim) relative positions -> (rows, head_dim), linear."""
    if table.shape[0] == rows:
        return table
    x = table.float().T[None]  # (1, head_dim, 2g - 1)
    x = F.interpolate(x, size=rows, mode="linear", align_corners=False)
    return x[0].T.to(table.dtype)


@torch.no_grad()
def fit_to_input_size(sd: dict[str, Tensor], expected: dict[str, Tensor]
                      ) -> dict[str, Tensor]:
    """``sd`` with its grid-sized position weights resampled to the shapes of ``expected``
    (the state dict of the model built at the new size). Every other weight, and any
    position weight whose width differs (another model, not another size), is left for the
    key check to report."""
    out = dict(sd)
    for key, want in expected.items():
        have = sd.get(key)
        if have is None or have.shape == want.shape:
            continue
        if key == POS_EMBED and have.ndim == 4 and have.shape[3] == want.shape[3]:
            out[key] = resample_pos_embed(have, int(want.shape[1]))
        elif (key.startswith("image_encoder.blocks.") and key.endswith(("rel_pos_h", "rel_pos_w"))
              and have.ndim == 2 and have.shape[1] == want.shape[1]):
            out[key] = resample_rel_pos(have, int(want.shape[0]))
    return out
