"""SAM weight files: the official .pth files and our .safetensors, checked before loading.

The official checkpoints are plain state dicts of tensors, so ``torch.load(weights_only=True)``
reads them without running any code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from attnvision.errors import UserError
from attnvision.weights import existing_file, key_problems, read_weights, save_weights

FORMAT = "attnvision.sam"
OFFICIAL_FILES = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def where_to_get(name: str) -> str:
    file = OFFICIAL_FILES.get(name, OFFICIAL_FILES["vit_b"])
    return f"the official {name} weights are {OFFICIAL_URL}{file}"


def size_of(sd: dict[str, Tensor]) -> str | None:
    """vit_b / vit_l / vit_h from the encoder width, None for another width."""
    w = sd.get("image_encoder.patch_embed.proj.weight")
    return None if w is None else WIDTHS.get(w.shape[0])


def read_sam_weights(path: str | os.PathLike[str], name: str | None
                     ) -> tuple[dict[str, Tensor], str | None, dict]:
    """(state dict, the model size the file records or shows, the build options it records:
    image size and encoder overrides of a non-standard SAM) with one-line errors."""
    path = existing_file(path, hint=where_to_get(name or "vit_b"))
    sd, metadata = read_weights(path)
    if any(k.startswith(("memory_attention.", "image_encoder.trunk.")) for k in sd):
        raise UserError(f"{path} is a SAM 2 checkpoint, not a SAM one: load it with "
                        "attnvision.sam2.build_sam2 (or the segment-video command)")
    if not any(k.startswith("image_encoder.") for k in sd):
        raise UserError(f"{path} is not a SAM checkpoint (no image_encoder.* weights): "
                        f"{where_to_get(name or 'vit_b')}")
    ours = metadata.get("format") == FORMAT
    recorded = metadata.get("model") if ours else None
    options = json.loads(metadata.get("build", "{}")) if ours else {}
    return sd, recorded or size_of(sd), options


def load_sam_weights(model: nn.Module, sd: dict[str, Tensor], source: str, name: str) -> None:
    """Load into ``model`` with strict=True after a check that names every problem."""
    first = sd.get("prompt_encoder.text_projection.0.weight")
    if first is not None and first.ndim == 2:  # a Linear where the LayerNorm now is
        raise UserError(f"{source} has text prompts saved before the text locator was added, "
                        "which this version cannot use: train them again with 'attnvision "
                        "train sam --init FILE --text' from a file without text, or use the "
                        "shipped sam_tiny")
    problems = key_problems(model.state_dict(), sd)
    if problems:
        raise UserError(f"{source} does not fit SAM {name}: {problems}")
    model.load_state_dict(sd, strict=True)


def save_sam(model: nn.Module, path: str | os.PathLike[str], name: str,
             build: dict | None = None, extra: dict | None = None,
             dtype: torch.dtype | None = None) -> Path:
    """Our format: safetensors with the model size, the ``build_sam`` options of a
    non-standard model (``img_size``, encoder overrides) and ``extra`` in the metadata;
    weights stored in ``dtype`` if given (float16 halves the file)."""
    return save_weights(model, path, {"format": FORMAT, "model": name,
                                      "build": json.dumps(build or {})}, extra, dtype)
