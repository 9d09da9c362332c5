"""SAM 2 weight files: the official ``.pt`` files and our ``.safetensors``, checked first.

The official files (``sam2.1_hiera_tiny.pt`` ...) hold ``{"model": state_dict}``; they are
read with ``torch.load(weights_only=True)``, which runs no code. Their keys are the model's
module names, which ours mirror, so the image model loads with ``strict=True``.

The video side is not built yet. An official file also holds its weights (the memory
encoder and memory attention, the object-pointer projections, the memory embeddings); those
keys, and only those (:data:`VIDEO_KEYS`), are set aside when the model has no module for
them, and every other key must fit exactly. Once the video modules exist on the model, the
same load takes their keys strictly too, with no change here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from attnvision.errors import UserError
from attnvision.sam2.configs import SAM2_CONFIGS
from attnvision.weights import existing_file, key_problems, read_weights, save_weights

FORMAT = "attnvision.sam2"
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/"

# Keys (whole names or prefixes ending in ".") of the official checkpoints' video parts.
VIDEO_KEYS = ("memory_attention.", "memory_encoder.", "mask_downsample.", "obj_ptr_proj.",
              "obj_ptr_tpos_proj.", "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr",
              "no_obj_embed_spatial")

# (trunk width, trunk blocks) -> size; the version (2.0 / 2.1) shows in the video keys.
_SIZES = {(c.trunk.embed_dim, c.trunk.depth): name.rpartition("_hiera_")[2]
          for name, c in SAM2_CONFIGS.items()}


def is_video_key(key: str) -> bool:
    """True for a key of the video parts (see :data:`VIDEO_KEYS`)."""
    return any(key.startswith(k) if k.endswith(".") else key == k for k in VIDEO_KEYS)


def where_to_get(name: str) -> str:
    folder = "092824/" if name.startswith("sam2.1") else "072824/"
    return f"the official {name} weights are {OFFICIAL_URL}{folder}{name}.pt"


def size_of(sd: dict[str, Tensor]) -> str | None:
    """The config name the weights look like ("sam2.1_hiera_tiny"), or None.

    The size comes from the trunk's width and number of blocks; the version from the video
    keys: only SAM 2.1 has ``no_obj_embed_spatial``. A file without video keys (ours) is
    taken as 2.1; both versions have the same image model.
    """
    patch = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(k.split(".")[3]) for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    size = _SIZES.get((patch.shape[0], max(blocks, default=-1) + 1))
    if size is None:
        return None
    version = "sam2" if version_shown(sd) and "no_obj_embed_spatial" not in sd else "sam2.1"
    return f"{version}_hiera_{size}"


def version_shown(sd: dict[str, Tensor]) -> bool:
    """Whether the weights tell SAM 2.0 from 2.1 (only the video parts differ)."""
    return any(is_video_key(k) for k in sd)


def read_sam2_weights(path: str | os.PathLike[str], name: str | None
                      ) -> tuple[dict[str, Tensor], str | None, bool]:
    """(state dict, the config name the file records or looks like, whether that name's
    version is certain), with one-line errors. A file of image weights alone, with no name
    recorded, looks like SAM 2.1 but could be 2.0 (the image models are the same)."""
    hint = where_to_get(name or "sam2.1_hiera_large")
    path = existing_file(path, hint=hint)
    sd, metadata = read_weights(path)  # unwraps {"model": ...}; one line if corrupt
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        looks = ("a SAM (v1) checkpoint: use attnvision.sam.build_sam"
                 if any(k.startswith("image_encoder.blocks.") for k in sd)
                 else "not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
        raise UserError(f"{path} is {looks}; {hint}")
    recorded = metadata.get("model") if metadata.get("format") == FORMAT else None
    if recorded is not None:
        return sd, recorded, True
    return sd, size_of(sd), version_shown(sd)


def load_sam2_weights(model: nn.Module, sd: dict[str, Tensor], source: str, name: str) -> None:
    """Load into ``model`` with strict=True; the video keys of an official file are set
    aside while the model has no module for them. One line naming every problem."""
    expected = model.state_dict()
    kept = {k: v for k, v in sd.items() if k in expected or not is_video_key(k)}
    problems = key_problems(expected, kept)
    if problems:
        looks = size_of(sd)
        like = f" (it looks like {looks})" if looks and looks != name else ""
        raise UserError(f"{source} does not fit SAM 2 {name}{like}: {problems}")
    model.load_state_dict(kept, strict=True)


def save_sam2(model: nn.Module, path: str | os.PathLike[str], name: str,
              extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Our format: safetensors with the config name in the metadata."""
    if name not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 config {name!r}")
    return save_weights(model, path, {"format": FORMAT, "model": name}, extra, dtype)
