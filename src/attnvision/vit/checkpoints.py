"""Reading and writing ViT weights: ours, timm's and Google's, never unpickling code.

Formats:
- ``.safetensors``: ours (the config is stored in the file's metadata) or timm's (a
  ``config.json`` with ``architecture`` beside it, or the config inferred from the shapes);
- ``.pth`` / ``.pt`` / ``.bin``: a timm or PyTorch state dict, read with
  ``torch.load(weights_only=True)``; ``state_dict`` / ``model`` wrappers and DDP's ``module.``
  prefixes are removed;
- ``.npz``: the original Google (JAX) ViT checkpoints, mapped to timm's names by
  :func:`google_npz_to_state_dict`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnvision.errors import UserError
from attnvision.vit.configs import CONFIGS, ViTConfig, get_config
from attnvision.vit.model import VisionTransformer, resample_pos_embed
from attnvision.weights import (
    corrupt,
    existing_file,
    key_problems,
    read_weights,
    save_weights,
)

FORMAT = "attnvision.vit"
# ViT widths and their head counts in the ViT paper / timm (heads cannot be read off weights).
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def read_state_dict(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(state dict, metadata) from any supported file, with one-line errors for bad files."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        return read_weights(path)
    existing_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return google_npz_to_state_dict(dict(npz)), {}
    except (OSError, ValueError, EOFError) as e:
        raise corrupt(path, e) from None


def google_npz_to_state_dict(npz: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """Google's JAX ViT checkpoint (e.g. ViT-B_16.npz) with timm's parameter names."""
    def t(key: str) -> Tensor:
        if key not in npz:
            raise UserError(f"Google ViT checkpoint lacks {key!r}: not a ViT .npz file")
        return torch.from_numpy(np.ascontiguousarray(npz[key])).float()

    sd: dict[str, Tensor] = {
        "patch_embed.proj.weight": t("embedding/kernel").permute(3, 2, 0, 1),  # HWIO -> OIHW
        "patch_embed.proj.bias": t("embedding/bias"),
        "pos_embed": t("Transformer/posembed_input/pos_embedding"),
        "norm.weight": t("Transformer/encoder_norm/scale"),
        "norm.bias": t("Transformer/encoder_norm/bias"),
    }
    if "cls" in npz:
        sd["cls_token"] = t("cls")
    if "head/kernel" in npz:
        sd["head.weight"] = t("head/kernel").T
        sd["head.bias"] = t("head/bias")
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in npz:
        g, b = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        mha = g + "MultiHeadDotProductAttention_1/"
        qkv_w = [t(mha + f"{n}/kernel").flatten(1).T for n in ("query", "key", "value")]
        qkv_b = [t(mha + f"{n}/bias").flatten() for n in ("query", "key", "value")]
        sd.update({
            b + "norm1.weight": t(g + "LayerNorm_0/scale"),
            b + "norm1.bias": t(g + "LayerNorm_0/bias"),
            b + "attn.qkv.weight": torch.cat(qkv_w),
            b + "attn.qkv.bias": torch.cat(qkv_b),
            b + "attn.proj.weight": t(mha + "out/kernel").flatten(0, 1).T,
            b + "attn.proj.bias": t(mha + "out/bias"),
            b + "norm2.weight": t(g + "LayerNorm_2/scale"),
            b + "norm2.bias": t(g + "LayerNorm_2/bias"),
            b + "mlp.fc1.weight": t(g + "MlpBlock_3/Dense_0/kernel").T,
            b + "mlp.fc1.bias": t(g + "MlpBlock_3/Dense_0/bias"),
            b + "mlp.fc2.weight": t(g + "MlpBlock_3/Dense_1/kernel").T,
            b + "mlp.fc2.bias": t(g + "MlpBlock_3/Dense_1/bias"),
        })
        i += 1
    return sd


def infer_config(sd: dict[str, Tensor]) -> ViTConfig:
    """A config from the shapes of a timm-named state dict (heads from the standard widths)."""
    if "patch_embed.proj.weight" not in sd:
        raise UserError("the checkpoint has no 'patch_embed.proj.weight': not a ViT state dict")
    w = sd["patch_embed.proj.weight"]
    dim, chans, patch = w.shape[0], w.shape[1], w.shape[2]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    class_token = "cls_token" in sd
    n = sd["pos_embed"].shape[1] - int(class_token) if "pos_embed" in sd else 0
    grid = math.isqrt(n)
    if grid * grid != n:
        raise UserError(f"cannot infer a square grid from pos_embed of {n} patch positions: "
                        "pass the config name")
    if dim not in HEADS_BY_WIDTH:
        raise UserError(f"cannot infer the number of heads for width {dim}: pass the config name")
    mlp_ratio = sd["blocks.0.mlp.fc1.weight"].shape[0] / dim
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    pool = "token" if "norm.weight" in sd else "mean"
    return ViTConfig(img_size=grid * patch, patch_size=patch, in_chans=chans,
                     num_classes=num_classes, embed_dim=dim, depth=depth,
                     num_heads=HEADS_BY_WIDTH[dim], mlp_ratio=mlp_ratio,
                     class_token=class_token, pool=pool,
                     qkv_bias="blocks.0.attn.qkv.bias" in sd)


def _config_beside(path: Path) -> ViTConfig | None:
    """The config of a file saved with a JSON beside it: ours, or timm's hub config.json."""
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        if not candidate.is_file():
            continue
        try:
            data = json.loads(candidate.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        # Ours: {"format": ..., "config": ...}, at the top or under the training loop's
        # "metadata" key.
        for ours in (data, data.get("metadata")):
            if isinstance(ours, dict) and ours.get("format") == FORMAT:
                return ViTConfig.from_dict(ours["config"])
        arch = str(data.get("architecture", "")).split(".")[0]
        if arch in CONFIGS:
            extra = {"num_classes": data["num_classes"]} if "num_classes" in data else {}
            return get_config(arch, **extra)
    return None


def resolve_config(path: Path, sd: dict[str, Tensor], metadata: dict[str, str],
                   config: str | ViTConfig | None) -> ViTConfig:
    if isinstance(config, ViTConfig):
        return config
    if isinstance(config, str):
        return get_config(config, **_shape_overrides(sd))
    if metadata.get("format") == FORMAT and "config" in metadata:
        return ViTConfig.from_dict(json.loads(metadata["config"]))
    return _config_beside(path) or infer_config(sd)


def _shape_overrides(sd: dict[str, Tensor]) -> dict[str, Any]:
    # A named config keeps its architecture but takes the head size found in the file.
    return {"num_classes": sd["head.weight"].shape[0]} if "head.weight" in sd else {}


def check_state_dict(model: VisionTransformer, sd: dict[str, Tensor], source: str) -> None:
    """One error listing every missing, unexpected and mis-shaped key, if any."""
    problems = key_problems(model.state_dict(), sd)
    if problems:
        c = model.config
        raise UserError(f"{source} does not fit the ViT config (width {c.embed_dim}, depth "
                        f"{c.depth}, patch {c.patch_size}, {c.num_classes} classes): "
                        f"{problems}. Pass the config the weights were trained with")


def load_checkpoint(path: str | os.PathLike[str], config: str | ViTConfig | None = None,
                    device: str | torch.device = "cpu") -> VisionTransformer:
    """A ViT with the weights of ``path`` in eval mode; the config comes from the file when
    it records one, else from ``config`` (a name or a ViTConfig), else from the shapes."""
    path = Path(path)
    sd, metadata = read_state_dict(path)
    cfg = resolve_config(path, sd, metadata, config)
    model = VisionTransformer(cfg)
    if cfg.pos_embed == "sincos":
        sd.pop("pos_embed", None)
    elif "pos_embed" in sd and sd["pos_embed"].shape != model.pos_embed.shape:
        # A file trained at another resolution: resize its grid of positions, as timm does.
        old = math.isqrt(sd["pos_embed"].shape[1] - model.num_prefix_tokens)
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], (cfg.grid_size,) * 2, (old, old),
                                             model.num_prefix_tokens)
    check_state_dict(model, sd, str(path))
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def save_checkpoint(model: VisionTransformer, path: str | os.PathLike[str],
                    extra: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors with the config (and ``extra``, e.g. metrics) in its metadata."""
    return save_weights(model, path, {"format": FORMAT,
                                      "config": json.dumps(model.config.to_dict())}, extra)
