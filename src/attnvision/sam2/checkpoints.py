"""SAM 2 weight files: the official ``.pt`` files and our ``.safetensors``, checked first.

The official files (``sam2.1_hiera_tiny.pt`` ...) hold ``{"model": state_dict}``; they are
read with ``torch.load(weights_only=True)``, which runs no code. Their keys are the model's
module names, which ours mirror (image and video parts alike), so they load with
``strict=True`` and no table of keys to rename or set aside.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from attnvision.errors import UserError
from attnvision.sam.image_encoder import EncoderConfig
from attnvision.sam2.configs import OFFICIAL_NAMES, SAM2_CONFIGS
from attnvision.weights import existing_file, key_problems, read_weights, save_weights

FORMAT = "attnvision.sam2"
OFFICIAL_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/"

# (trunk width, trunk blocks) -> size; the version (2.0 / 2.1) shows in the video keys.
_SIZES = {(c.trunk.embed_dim, c.trunk.depth): name.rpartition("_hiera_")[2]
          for name, c in SAM2_CONFIGS.items() if name in OFFICIAL_NAMES}
# Ours with SAM's ViT as the encoder: (trunk width, trunk blocks, pixel stem) -> config name.
_VIT_MODELS = {(c.trunk.embed_dim, c.trunk.depth, c.pixel_stem): name
               for name, c in SAM2_CONFIGS.items() if isinstance(c.trunk, EncoderConfig)}


def where_to_get(name: str) -> str:
    if name in SAM2_CONFIGS and name not in OFFICIAL_NAMES:
        return (f"{name} is ours, with no official file: build it from SAM's shipped sam_tiny "
                f"with attnvision.sam2.sam2_from_sam, or load one saved by save_sam2")
    folder = "092824/" if name.startswith("sam2.1") else "072824/"
    return f"the official {name} weights are {OFFICIAL_URL}{folder}{name}.pt"


def size_of(sd: dict[str, Tensor]) -> str | None:
    """The config name the weights look like ("sam2.1_hiera_tiny", "sam2_tiny"), or None.

    The size comes from the trunk's width and number of blocks; the version from the video
    keys: only SAM 2.1 has ``no_obj_embed_spatial``. A file without video keys is taken as
    2.1; both versions have the same image model. A trunk with SAM's ViT neck
    (``image_encoder.trunk.neck.*``) is one of ours, which have one version.
    """
    patch = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(k.split(".")[3]) for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    key = (patch.shape[0], max(blocks, default=-1) + 1)
    if any(k.startswith("image_encoder.trunk.neck.") for k in sd):
        stem = any(k.startswith("image_encoder.stem.") for k in sd)
        return _VIT_MODELS.get((*key, stem))
    size = _SIZES.get(key)
    if size is None:
        return None
    version = "sam2" if version_shown(sd) and "no_obj_embed_spatial" not in sd else "sam2.1"
    return f"{version}_hiera_{size}"


def version_shown(sd: dict[str, Tensor]) -> bool:
    """Whether the weights tell SAM 2.0 from 2.1 (only the video parts differ, and every
    file of the whole model has them)."""
    return any(k.startswith("memory_attention.") for k in sd)


def read_sam2_weights(path: str | os.PathLike[str], name: str | None
                      ) -> tuple[dict[str, Tensor], str | None, bool]:
    """(state dict, the config name the file records or looks like, whether that name's
    version is certain), with one-line errors. A file of image weights alone, with no name
    recorded, looks like SAM 2.1 but could be 2.0 (the image models are the same)."""
    hint = where_to_get(name or "sam2.1_hiera_large")
    path = existing_file(path, hint=hint)
    sd, metadata = read_weights(path)  # unwraps {"model": ...}; one line if corrupt
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        looks = ("a SAM (v1) checkpoint: use attnvision.sam.build_sam (and "
                 "attnvision.sam2.sam2_from_sam to start a SAM 2 from it)"
                 if any(k.startswith("image_encoder.blocks.") for k in sd)
                 else "not a SAM 2 checkpoint (no image_encoder.trunk.* weights)")
        raise UserError(f"{path} is {looks}; {hint}")
    recorded = metadata.get("model") if metadata.get("format") == FORMAT else None
    if recorded is not None:
        return sd, recorded, True
    return sd, size_of(sd), version_shown(sd)


def load_sam2_weights(model: nn.Module, sd: dict[str, Tensor], source: str, name: str) -> None:
    """Load into ``model`` with strict=True; one line naming every problem."""
    problems = key_problems(model.state_dict(), sd)
    if problems:
        looks = size_of(sd)
        like = f" (it looks like {looks})" if looks and looks != name else ""
        raise UserError(f"{source} does not fit SAM 2 {name}{like}: {problems}")
    model.load_state_dict(sd, strict=True)


def save_sam2(model: nn.Module, path: str | os.PathLike[str], name: str,
              extra: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Our format: safetensors with the config name in the metadata, written atomically;
    parameters stored in ``dtype`` if given (float16 halves the file; loading casts them
    back to the model's float32), buffers as they are."""
    if name not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 config {name!r}")
    return save_weights(model, path, {"format": FORMAT, "model": name}, extra, dtype)
