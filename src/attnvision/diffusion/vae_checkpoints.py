"""KL autoencoder weights: diffusers folders, the original format and ours, checked first.

Formats, told apart by what is on disk:

- a diffusers folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``),
  or a pipeline folder holding one under ``vae/``. Its names are mapped to ours by
  :func:`convert_diffusers_vae_state_dict` (old files' ``query``/``key``/``value``/
  ``proj_attn`` attention names included);
- an original (CompVis / Stability) file, ``.safetensors`` / ``.ckpt`` / ``.pt`` / ``.pth``:
  the VAE alone (``vae-ft-mse-840000-ema-pruned``), or a whole Stable Diffusion checkpoint of
  which the ``first_stage_model.`` part is kept. Its keys are our module names, so nothing is
  renamed (a VAE trained with the original code also holds its ``loss.`` networks, dropped).
  The config is read off the shapes (:func:`config_from_weights`) except what shapes cannot
  tell: the GroupNorm groups (32 in every released VAE) and the latent scale (SD 1.x/2.x's
  0.18215; pass ``scaling_factor=0.13025`` for SDXL's);
- ours: safetensors with the config as JSON in the metadata (:func:`save_vae`).

Every file is read without executing code (safetensors, or ``torch.load(weights_only=True)``)
and loaded with ``strict=True`` after one check that names every missing, unexpected or
mis-shaped key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from attnvision.diffusion.autoencoder_kl import AutoencoderKL, VAEConfig
from attnvision.errors import UserError
from attnvision.weights import existing_file, key_problems, read_weights, save_weights

FORMAT = "attnvision.vae"
WHERE = ("KL autoencoder weights are e.g. stabilityai/sd-vae-ft-mse on Hugging Face (the "
         "diffusers folder, or vae-ft-mse-840000-ema-pruned.safetensors in the original format)")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
# Where a whole checkpoint keeps its autoencoder (the second: diffusers' single files, ours).
_VAE_PREFIXES = ("first_stage_model.", "vae.")
# What a file that is not a VAE is, by its first matching key prefix.
_LOOKS_LIKE = (("model.diffusion_model.", "a Stable Diffusion UNet without its autoencoder"),
               ("x_embedder.", "a DiT (Meta's format)"),
               ("transformer_blocks.", "a diffusers transformer (DiT)"),
               ("down_blocks.", "a diffusers UNet"),
               ("image_encoder.", "a SAM or SAM 2 model"), ("fnet.", "a CoTracker model"),
               ("patch_embed.", "a ViT"), ("cls_token", "a ViT"))
# diffusers -> original names, applied in order to every key (decoder levels come after).
_RENAMES = (
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
    (r"\.attn_1\.group_norm\.", ".attn_1.norm."),
    (r"\.attn_1\.(?:to_q|query)\.", ".attn_1.q."),
    (r"\.attn_1\.(?:to_k|key)\.", ".attn_1.k."),
    (r"\.attn_1\.(?:to_v|value)\.", ".attn_1.v."),
    (r"\.attn_1\.(?:to_out\.0|proj_attn)\.", ".attn_1.proj_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
)
_DECODER_LEVEL = re.compile(r"^decoder\.up_blocks\.(\d+)\.")


def convert_diffusers_vae_state_dict(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' ``AutoencoderKL`` state dict with our (the original) names.

    Two things differ beyond names: diffusers numbers decoder levels from the lowest
    resolution (``up_blocks.0`` is our ``up.{levels-1}``), and stores the attention's
    projections as Linear (C, C) matrices where the original has 1x1 convs (C, C, 1, 1).
    """
    levels = 1 + max((int(m.group(1)) for k in sd if (m := _DECODER_LEVEL.match(k))),
                     default=-1)
    out = {}
    for key, value in sd.items():
        for pattern, replacement in _RENAMES:
            key = re.sub(pattern, replacement, key)
        key = _DECODER_LEVEL.sub(lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.", key)
        key = key.replace(".resnets.", ".block.").replace(".upsamplers.0.", ".upsample.")
        if ".attn_1." in key and ".norm." not in key and value.ndim == 2:
            value = value[:, :, None, None]
        out[key] = value
    return out


def load_vae(path: str | os.PathLike[str], dtype: torch.dtype | None = None, *,
             scaling_factor: float | None = None, shift_factor: float | None = None,
             norm_num_groups: int | None = None) -> AutoencoderKL:
    """An :class:`AutoencoderKL` in eval mode with the weights of ``path`` (a folder or a
    file, see the module), in ``dtype`` (default float32).

    ``scaling_factor``, ``shift_factor`` and ``norm_num_groups`` replace what the file says
    or, for an original-format file, the defaults it cannot override (see the module)."""
    path = Path(path)
    if path.name == "config.json" and path.is_file():
        path = path.parent  # the folder was meant
    if path.is_dir():
        sd, config = _read_diffusers_folder(path)
    else:
        path = existing_file(path, hint=WHERE)
        sd, metadata = read_weights(path)
        sd, config = _read_file(sd, metadata, str(path), norm_num_groups or 32)
    overrides = {"scaling_factor": scaling_factor, "shift_factor": shift_factor,
                 "norm_num_groups": norm_num_groups}
    try:
        config = dataclasses.replace(
            config, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    return _build(config, sd, str(path), dtype or torch.float32)


def save_vae(model: AutoencoderKL, path: str | os.PathLike[str],
             dtype: torch.dtype | None = None) -> Path:
    """Our format: safetensors with the config in the metadata, so :func:`load_vae` needs
    nothing else; parameters stored in ``dtype`` if given (float16 halves the file)."""
    return save_weights(model, path, {"format": FORMAT, "config": model.config.to_json()},
                        dtype=dtype)


def config_from_weights(sd: Mapping[str, Tensor], source: str,
                        norm_num_groups: int = 32) -> VAEConfig:
    """The config whose model these original-format weights fit: levels, widths, blocks per
    level and channels from the shapes, the 1x1 convs and the mid attention from which keys
    exist. Raises a one-line UserError when the weights are not a KL autoencoder's."""
    needed = ("encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
              "decoder.conv_in.weight", "decoder.conv_out.weight")
    if not all(k in sd for k in needed):
        raise _not_a_vae(sd, source)
    levels = _count(sd, "encoder.down.")
    try:
        widths = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]
                       for i in range(levels))
        return VAEConfig(
            in_channels=sd["encoder.conv_in.weight"].shape[1],
            out_channels=sd["decoder.conv_out.weight"].shape[0],
            block_out_channels=widths, layers_per_block=_count(sd, "encoder.down.0.block."),
            latent_channels=sd["decoder.conv_in.weight"].shape[1],
            norm_num_groups=norm_num_groups,
            use_quant_conv="quant_conv.weight" in sd,
            use_post_quant_conv="post_quant_conv.weight" in sd,
            mid_block_add_attention="encoder.mid.attn_1.q.weight" in sd)
    except KeyError as e:
        raise UserError(f"{source} is an incomplete KL autoencoder (no {e.args[0]}); "
                        f"{WHERE}") from None
    except ValueError as e:  # widths that 32 groups do not divide
        raise UserError(f"{source}: {e}; pass norm_num_groups (the file cannot say)") from None


def _read_file(sd: dict[str, Tensor], metadata: dict[str, str], source: str,
               norm_num_groups: int) -> tuple[dict[str, Tensor], VAEConfig]:
    # Ours, or a one-file pipeline of ours holding the VAE under "vae.".
    if metadata.get("format") == FORMAT and "config" in metadata:
        return sd, _stored_config(metadata["config"], source)
    prefix = next((p for p in _VAE_PREFIXES if any(k.startswith(p) for k in sd)), None)
    if prefix is not None:
        sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    else:
        sd = {k: v for k, v in sd.items() if not k.startswith(("loss.", "model_ema."))}
    if "vae_config" in metadata:
        return sd, _stored_config(metadata["vae_config"], source)
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in sd):
        sd = convert_diffusers_vae_state_dict(sd)  # a diffusers file without its folder
    return sd, config_from_weights(sd, source, norm_num_groups)


def _stored_config(text: str, source: str) -> VAEConfig:
    try:
        return VAEConfig.from_json(text)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source} has a damaged autoencoder config in its metadata ({e}): "
                        "save it again with attnvision.diffusion.vae_checkpoints.save_vae"
                        ) from None


def _read_diffusers_folder(path: Path) -> tuple[dict[str, Tensor], VAEConfig]:
    folder = path if (path / "config.json").is_file() else path / "vae"
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path} is a folder without config.json or vae/config.json: give a "
                        f"diffusers AutoencoderKL folder or a weights file ({WHERE})")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file} is not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file} holds no JSON object: download it again")
    vae_config = VAEConfig.from_diffusers(config, str(config_file))
    weights = next((folder / n for n in DIFFUSERS_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise UserError(f"{folder} has a config.json but no {DIFFUSERS_WEIGHTS[0]} (or .bin): "
                        "download the weights too")
    sd, _ = read_weights(weights)
    return convert_diffusers_vae_state_dict(sd), vae_config


def _build(config: VAEConfig, sd: dict[str, Tensor], source: str,
           dtype: torch.dtype) -> AutoencoderKL:
    # Built without memory or random init: every tensor then comes from the file.
    with torch.device("meta"):
        model = AutoencoderKL(config)
    problems = key_problems(model.state_dict(), sd)
    if problems:
        widths = ", ".join(map(str, config.block_out_channels))
        raise UserError(f"{source} does not fit a KL autoencoder of widths ({widths}) and "
                        f"{config.layers_per_block} blocks per level: {problems}")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def _count(sd: Mapping[str, Tensor], prefix: str) -> int:
    found = {int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found, default=-1) + 1


def _not_a_vae(sd: Mapping[str, Tensor], source: str) -> UserError:
    what = next((name for prefix, name in _LOOKS_LIKE if any(k.startswith(prefix) for k in sd)),
                None)
    if what is None:
        heads = sorted({k.split(".")[0] for k in sd})
        what = f"no model known here (its keys start with {', '.join(heads[:5]) or 'nothing'})"
    return UserError(f"{source} is not a KL autoencoder: it looks like {what}. {WHERE}")
