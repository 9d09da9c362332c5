"""Where the app gets its model: a checkpoint, or the sam_tiny that ships in the package.

An install without the shipped file (or ``shipped=False``) still starts: it serves the page,
accepts images and answers prompts with a 503 that says how to load a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from attnvision.errors import UserError
from attnvision.sam import Sam, build_sam
from attnvision.sam.checkpoints import where_to_get

NO_MODEL = ("no SAM model is loaded: restart the server with a checkpoint, e.g. "
            f"`attnvision serve --checkpoint sam_vit_b_01ec64.pth` ({where_to_get('vit_b')})")


@dataclass(frozen=True)
class LoadedModel:
    sam: Sam | None
    name: str | None = None  # vit_b / vit_l / vit_h / sam_tiny, or a custom size
    source: str | None = None  # the checkpoint's file name

    def describe(self) -> str:
        return f"{self.name} ({self.source})" if self.sam is not None else "none"


def load_model(checkpoint: str | os.PathLike[str] | None = None,
               name: str | None = None, precision: str = "fp32",
               shipped: bool = True, img_size: int | None = None) -> LoadedModel:
    """SAM from ``checkpoint`` (size from the file unless ``name`` is given), else the shipped
    sam_tiny when there is one (and ``shipped``), else no model; run at ``img_size`` px if
    given, else at the file's size.

    Bad files raise ``UserError`` (the command exits 2 before the server starts).
    """
    if checkpoint is None:
        from attnvision.sam.pretrained import SHIPPED, shipped_checkpoint

        if not shipped or name not in (None, "sam_tiny"):
            return LoadedModel(None)
        try:
            path = shipped_checkpoint()
        except UserError:
            return LoadedModel(None)
        return LoadedModel(build_sam(None, path, precision=precision, img_size=img_size),
                           "sam_tiny", SHIPPED)
    sam = build_sam(name, checkpoint, precision=precision, img_size=img_size)
    # A variant built with other options (a test's 2-block vit_b) says so.
    options = ", ".join(f"{k}={v}" for k, v in sam.build_options.items())
    size = f"{sam.size_name} ({options})" if options else sam.size_name
    return LoadedModel(sam, size, Path(checkpoint).name)
