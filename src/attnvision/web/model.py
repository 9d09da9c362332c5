"""Where the app gets its model: one function, so a shipped default can be dropped in later.

No SAM weights ship with attnvision yet. Without a checkpoint the app still starts: it serves
the page, accepts images and answers prompts with a 503 that says how to load a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from attnvision.sam import Sam, build_sam
from attnvision.sam.checkpoints import WIDTHS, where_to_get

NO_MODEL = ("no SAM model is loaded: restart the server with a checkpoint, e.g. "
            f"`attnvision serve --checkpoint sam_vit_b_01ec64.pth` ({where_to_get('vit_b')})")


@dataclass(frozen=True)
class LoadedModel:
    sam: Sam | None
    name: str | None = None  # vit_b / vit_l / vit_h, or a description of a custom size
    source: str | None = None  # the checkpoint's file name

    def describe(self) -> str:
        return f"{self.name} ({self.source})" if self.sam is not None else "none"


def load_model(checkpoint: str | os.PathLike[str] | None = None,
               name: str | None = None, precision: str = "fp32") -> LoadedModel:
    """SAM from ``checkpoint`` (size from the file unless ``name`` is given), or no model.

    Bad files raise ``UserError`` (the command exits 2 before the server starts).
    """
    if checkpoint is None:
        return LoadedModel(None)
    sam = build_sam(name, checkpoint, precision=precision)
    width = sam.image_encoder.patch_embed.proj.out_channels
    size = name or WIDTHS.get(width, f"custom ({width}-wide encoder)")
    return LoadedModel(sam, size, Path(checkpoint).name)
