"""DiT weight files: diffusers' folders, Meta's ``.pt`` files and ours, never unpickling code.

- diffusers (``facebook/DiT-XL-2-256``): a folder with ``config.json`` and
  ``diffusion_pytorch_model.safetensors`` (or ``.bin``), or the pipeline folder holding it in
  ``transformer/``. Its ``DiTTransformer2DModel`` names things otherwise
  (:func:`convert_diffusers_dit_state_dict`), keeps Q, K and V as three linears (fused here
  into ``qkv``) and stores the time and class embedders once per block: DiT has one, so every
  copy must be the same (checked) and one is kept. Its timestep frequencies use shift 1 and its
  MLP LayerNorm eps 1e-5, which the config records.
- Meta (``DiT-XL-2-256x256.pt``): our names already, a flat state dict or a training
  checkpoint {"model", "ema", "opt", "args"} whose EMA weights are taken (the ones sampled
  from); the config is read from the shapes.
- ours: safetensors written by :func:`save_dit`, the config in the file's metadata.

Meta's files store the fixed position table; the loader checks it is DiT's sin-cos code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnvision.diffusion.dit import DIT_CONFIGS, DiT, DiTConfig, dit_pos_embed
from attnvision.errors import UserError
from attnvision.weights import (
    LOAD_ERRORS,
    TORCH_SUFFIXES,
    corrupt,
    key_problems,
    read_weights,
    save_weights,
)

FORMAT = "attnvision.diffusion.dit"
WHERE = ("DiT weights are diffusers' facebook/DiT-XL-2-256 folder or Meta's DiT-XL-2-256x256.pt "
         "(https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt)")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
# What a file that is not a DiT most likely is, from one of its keys (a prefix).
_LOOKS_LIKE = (("encoder.conv_in.", "a VAE (autoencoder)"), ("decoder.conv_in.", "a VAE"),
               ("image_encoder.", "a SAM or SAM 2 model"), ("cls_token", "a ViT"),
               ("patch_embed.proj.", "a ViT"), ("fnet.", "a CoTracker"),
               ("transformer.x_embedder.", "a whole pipeline file (load it as a pipeline)"),
               ("transformer_blocks.0.norm1.linear.",
                "diffusers DiT weights without their config.json (give the folder)"))
_META_KEYS = ("x_embedder.proj.weight", "pos_embed", "t_embedder.mlp.0.weight",
              "y_embedder.embedding_table.weight", "blocks.0.mlp.fc1.weight",
              "final_layer.linear.weight")
# diffusers -> Meta names: the model's own layers, then a block's (after "blocks.N.").
_TOP = {"pos_embed.proj.": "x_embedder.proj.", "proj_out_1.": "final_layer.adaLN_modulation.1.",
        "proj_out_2.": "final_layer.linear."}
_BLOCK = {"norm1.linear.": "adaLN_modulation.1.", "attn1.to_out.0.": "attn.proj.",
          "ff.net.0.proj.": "mlp.fc1.", "ff.net.2.": "mlp.fc2."}
_SHARED = {"norm1.emb.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
           "norm1.emb.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
           "norm1.emb.class_embedder.embedding_table.": "y_embedder.embedding_table."}
# What a DiT needs of a diffusers config, and diffusers' defaults for each class (the legacy
# Transformer2DModel of the first DiT folders has other defaults than DiTTransformer2DModel).
_NEEDS = {"norm_type": "ada_norm_zero", "activation_fn": "gelu-approximate",
          "attention_bias": True, "norm_elementwise_affine": False, "cross_attention_dim": None,
          "num_vector_embeds": None, "double_self_attention": False,
          "only_cross_attention": False}
_DEFAULTS = {
    "DiTTransformer2DModel": {**_NEEDS, "num_attention_heads": 16, "attention_head_dim": 72,
                              "in_channels": 4, "num_layers": 28, "sample_size": 32,
                              "patch_size": 2, "num_embeds_ada_norm": 1000},
    "Transformer2DModel": {**_NEEDS, "norm_type": "layer_norm", "activation_fn": "geglu",
                           "attention_bias": False, "norm_elementwise_affine": True,
                           "num_attention_heads": 16, "attention_head_dim": 88,
                           "num_layers": 1},
}


def _rename(key: str, table: dict[str, str]) -> str | None:
    return next((new + key[len(old):] for old, new in table.items() if key.startswith(old)), None)


def _not_a_dit(sd: dict[str, Tensor], source: str) -> UserError:
    what = next((kind for prefix, kind in _LOOKS_LIKE
                 if any(k.startswith(prefix) for k in sd)), None)
    if what is None:
        missing = ", ".join(k for k in _META_KEYS if k not in sd)
        return UserError(f"{source} is not a DiT checkpoint (no {missing}); {WHERE}")
    return UserError(f"{source} looks like {what}, not a DiT denoiser; {WHERE}")


def config_from_diffusers(config: dict[str, Any], source: str = "config.json") -> DiTConfig:
    """The DiTConfig of a diffusers ``DiTTransformer2DModel`` config.json; a one-line
    UserError for another model or a DiT variant this code does not run."""
    cls = config.get("_class_name", "DiTTransformer2DModel")
    if cls not in _DEFAULTS:
        kind = "a VAE (autoencoder)" if cls.startswith("Autoencoder") else f"a {cls}"
        raise UserError(f"{source} describes {kind}, not a DiT denoiser; {WHERE}")
    cfg = {**_DEFAULTS[cls], **config}
    for key, value in _NEEDS.items():
        if cfg.get(key) != value:
            raise UserError(f"{source}: {key}={cfg.get(key)!r} is not a DiT this code runs "
                            f"(it needs {value!r})")
    for key in ("in_channels", "sample_size", "patch_size", "num_embeds_ada_norm"):
        if cfg.get(key) is None:
            raise UserError(f"{source} has no {key}: not a DiT config")
    if cls == "Transformer2DModel" and (cfg.get("interpolation_scale")
                                        or max(cfg["sample_size"] // 64, 1)) != 1:
        raise UserError(f"{source}: interpolated positions (interpolation_scale != 1) are not "
                        "supported")
    cin = cfg["in_channels"]
    cout = cfg.get("out_channels") or cin
    if cout not in (cin, 2 * cin):
        raise UserError(f"{source}: out_channels {cout} is neither in_channels ({cin}) nor "
                        "twice it (a learned variance)")
    try:
        return DiTConfig(
            input_size=cfg["sample_size"], patch_size=cfg["patch_size"], in_channels=cin,
            hidden_size=cfg["num_attention_heads"] * cfg["attention_head_dim"],
            depth=cfg["num_layers"], num_heads=cfg["num_attention_heads"],
            num_classes=cfg["num_embeds_ada_norm"], class_dropout_prob=0.1,  # diffusers': fixed
            learn_sigma=cout == 2 * cin, freq_shift=1.0, mlp_norm_eps=cfg.get("norm_eps", 1e-5),
            guided_channels=cin)
    except ValueError as e:
        raise UserError(f"{source} is not a DiT config this code can build: {e}") from None


def convert_diffusers_dit_state_dict(sd: dict[str, Tensor], config: dict[str, Any],
                                     source: str = "the diffusers weights") -> dict[str, Tensor]:
    """A diffusers ``DiTTransformer2DModel`` state dict with Meta's names (ours), Q, K, V fused
    and the per-block embedder copies checked equal and kept once; keys it does not know keep
    their names, so the loader reports them."""
    cfg = config_from_diffusers(config, source)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", key)
        if m is None:
            out[_rename(key, _TOP) or key] = value
            continue
        i, rest = int(m.group(1)), m.group(2)
        if q := re.fullmatch(r"attn1\.to_([qkv])\.(weight|bias)", rest):
            qkv.setdefault((i, q.group(2)), {})[q.group(1)] = value
        elif (shared := _rename(rest, _SHARED)) is not None:
            if shared in out and not torch.equal(out[shared], value):
                raise UserError(f"{source}: block {i}'s copy of the time and class embedders "
                                f"({rest}) differs from another block's; DiT has one, so only "
                                f"files converted from DiT (all copies equal) load")
            out[shared] = value
        else:
            out[f"blocks.{i}." + (_rename(rest, _BLOCK) or rest)] = value
    for (i, kind), parts in qkv.items():
        if len(parts) == 3:  # timm's layout: the rows of Q, then K, then V
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in "qkv"])
        else:  # left as they are: reported as unexpected, the qkv as missing
            out.update({f"blocks.{i}.attn1.to_{n}.{kind}": t for n, t in parts.items()})
    g = cfg.grid_size  # not in diffusers' files: a non-persistent buffer there
    out["pos_embed"] = dit_pos_embed(g, g, cfg.hidden_size, g)
    return out


def _blocks(sd: dict[str, Tensor]) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    return max(found, default=-1) + 1


def config_from_meta(sd: dict[str, Tensor], source: str) -> DiTConfig:
    """The config of a state dict with Meta's names, from its shapes. The heads cannot be
    read: a width and depth of the paper's take its heads, another width heads 64 wide (one
    head if 64 does not divide it).
    Meta trains with label dropout, so the class table's last row is taken as the null class.
    """
    if any(k not in sd for k in _META_KEYS):
        raise _not_a_dit(sd, source)
    proj, table = sd["x_embedder.proj.weight"], sd["y_embedder.embedding_table.weight"]
    if proj.ndim != 4 or table.ndim != 2 or sd["pos_embed"].ndim != 3:
        raise UserError(f"{source} is not a DiT checkpoint (its patch projection, class table "
                        "or position table has the wrong number of axes)")
    dim, cin, p = proj.shape[0], proj.shape[1], proj.shape[2]
    depth, n = _blocks(sd), sd["pos_embed"].shape[1]
    cout, rest = divmod(sd["final_layer.linear.weight"].shape[0], p * p)
    grid = math.isqrt(n)
    if grid * grid != n or rest or cout not in (cin, 2 * cin):
        raise UserError(f"{source}: a {n}-token position table or a {cout}-channel output of "
                        f"{cin}-channel latents is not a DiT this code builds")
    heads = next((c.num_heads for c in DIT_CONFIGS.values()
                  if (c.hidden_size, c.depth) == (dim, depth)),
                 dim // 64 if dim % 64 == 0 else 1)
    try:
        return DiTConfig(input_size=grid * p, patch_size=p, in_channels=cin, hidden_size=dim,
                         depth=depth, num_heads=heads,
                         mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / dim,
                         num_classes=table.shape[0] - 1, learn_sigma=cout == 2 * cin)
    except ValueError as e:
        raise UserError(f"{source} is not a DiT checkpoint this code can build: {e}") from None


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        # Meta's training checkpoints also hold their argparse arguments: plain data.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as e:
        raise corrupt(path, e) from None
    for key in ("ema", "model", "state_dict"):  # EMA first: the weights one samples with
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(f"{path} holds no state dict of tensors; {WHERE}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _diffusers_folder(path: Path) -> tuple[Path, Path | None] | None:
    """(folder, weights file or None: look for one) of a diffusers DiT given its folder, its
    pipeline's folder or its weights file; None for any other file."""
    if path.is_dir():
        if (path / "transformer").is_dir():
            path = path / "transformer"
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is a folder without config.json: not a diffusers model "
                            f"folder; {WHERE}")
        return path, None
    if path.name.startswith("diffusion_pytorch_model") and (path.parent / "config.json").is_file():
        return path.parent, path
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(path, e) from None


def _read_diffusers_weights(folder: Path, file: Path | None) -> dict[str, Tensor]:
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if file is None and index.is_file():  # sharded: the index maps every key to its file
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError(f"{index} has no weight_map: download the folder again")
        return {k: v for f in sorted(set(weight_map.values()))
                for k, v in read_weights(folder / f)[0].items()}
    file = file or next((folder / n for n in DIFFUSERS_WEIGHTS if (folder / n).is_file()), None)
    if file is None:
        raise UserError(f"{folder} has a config.json but no {DIFFUSERS_WEIGHTS[0]}; {WHERE}")
    return read_weights(file)[0]


def load_dit(path: str | os.PathLike[str], dtype: torch.dtype | None = None,
             device: str | torch.device = "cpu") -> DiT:
    """A DiT in eval mode from a diffusers folder, a Meta ``.pt`` file or our safetensors."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"DiT checkpoint not found: {path}; {WHERE}")
    diffusers = _diffusers_folder(path)
    if diffusers is not None:
        folder, file = diffusers
        source = str(folder)
        config = _read_json(folder / "config.json")
        # Before reading the weights: a VAE's folder is refused in a moment, not gigabytes.
        cfg = config_from_diffusers(config, str(folder / "config.json"))
        sd = convert_diffusers_dit_state_dict(_read_diffusers_weights(folder, file), config,
                                              source)
    else:
        source = str(path)
        if path.suffix.lower() in TORCH_SUFFIXES:
            sd, metadata = _read_torch(path), {}
        else:
            sd, metadata = read_weights(path)
        if metadata.get("format") == FORMAT and "config" in metadata:
            cfg = DiTConfig.from_dict(json.loads(metadata["config"]))
        else:
            cfg = config_from_meta(sd, source)
    model = DiT(cfg)
    stored = sd.get("pos_embed")
    if stored is not None and stored.shape == model.pos_embed.shape:
        # 1e-2: a table stored in bfloat16 still passes, a learned one does not.
        diff = (stored.float() - model.pos_embed).abs().max().item()
        if diff > 1e-2:
            raise UserError(f"{source}: its pos_embed is not DiT's fixed 2-D sin-cos table "
                            f"(max difference {diff:.2g}); learned positions are not supported")
        sd["pos_embed"] = model.pos_embed  # the exact float32 table
    problems = key_problems(model.state_dict(), sd)
    if problems:
        raise UserError(f"{source} does not fit a DiT (width {cfg.hidden_size}, depth "
                        f"{cfg.depth}, patch {cfg.patch_size}): {problems}")
    model.load_state_dict(sd, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_dit(model: DiT, path: str | os.PathLike[str], dtype: torch.dtype | None = None
             ) -> Path:
    """Weights as safetensors with the config in the file's metadata (what ``load_dit``
    reads back); parameters in ``dtype`` if given, the position table in float32."""
    return save_weights(model, path, {"format": FORMAT,
                                      "config": json.dumps(model.config.to_dict())}, dtype=dtype)
