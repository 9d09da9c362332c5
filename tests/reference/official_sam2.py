"""The official SAM 2 (``sam2`` package) with seeded random weights, as the parity tests build
it: from its packaged configs through hydra, no download.

Every tensor the official ``.pt`` holds is perturbed, so no weight sits at a symmetric initial
value (zero position embeddings, unit norms) that could hide a swapped name. ``sharpen`` makes
the masks decisive (mask logits of several units instead of tenths, so that thresholding at
0 is not a coin flip) and pushes the object-score logit away from 0.
"""

from __future__ import annotations

import warnings

import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sam2.build_sam import build_sam2 as official_build_sam2
from torch.overrides import TorchFunctionMode

OFFICIAL_CONFIGS = {
    **{f"sam2.1_hiera_{size}": f"configs/sam2.1/sam2.1_hiera_{short}.yaml"
       for size, short in [("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")]},
    **{f"sam2_hiera_{size}": f"configs/sam2/sam2_hiera_{short}.yaml"
       for size, short in [("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")]},
}

# What the official build_sam2 adds by default (apply_postprocessing=True).
POSTPROCESSING = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
]


def perturb(model: torch.nn.Module, seed: int, noise: float = 0.05) -> None:
    """Add seeded noise to every tensor of the state dict, scaled to the tensor's spread."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict(keep_vars=True).values():
            scale = t.std().clamp_min(0.2).item() if t.numel() > 1 else 1.0
            t.add_(torch.randn(t.shape, generator=gen) * noise * scale)


def official_sam2(name: str = "sam2.1_hiera_tiny", seed: int = 0, noise: float = 0.05,
                  sharpen: bool = True) -> torch.nn.Module:
    """The official SAM2Base of ``name`` on the CPU, in eval mode, weights seeded."""
    torch.manual_seed(seed)
    model = official_build_sam2(OFFICIAL_CONFIGS[name], device="cpu")
    if noise:
        perturb(model, seed + 1, noise)
    if sharpen:
        decoder = model.sam_mask_decoder
        with torch.no_grad():
            for mlp in decoder.output_hypernetworks_mlps:
                mlp.layers[-1].weight.mul_(40.0)
                mlp.layers[-1].bias.mul_(40.0)
            decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
    return model.eval()


class _LinspaceOnCpu(TorchFunctionMode):
    """Official Hiera reads its drop-path rates with ``.item()``, which meta tensors refuse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def official_meta(name: str) -> torch.nn.Module:
    """The official model's structure only (meta tensors): keys and shapes, in no time."""
    cfg = compose(config_name=OFFICIAL_CONFIGS[name], overrides=POSTPROCESSING)
    OmegaConf.resolve(cfg)
    with torch.device("meta"), _LinspaceOnCpu(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return instantiate(cfg.model, _recursive_=True)


def official_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as the official ``.pt`` files hold it (``{"model": ...}``)."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
