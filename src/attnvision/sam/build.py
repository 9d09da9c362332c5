"""Building SAM by size name, with the official registry's names and defaults."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from attnvision.errors import UserError
from attnvision.precision import check_precision
from attnvision.sam.checkpoints import load_sam_weights, read_sam_weights
from attnvision.sam.image_encoder import ENCODER_CONFIGS, build_image_encoder
from attnvision.sam.input_size import fit_to_input_size
from attnvision.sam.mask_decoder import MaskDecoder
from attnvision.sam.model import Sam
from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam.two_way import TwoWayTransformer

PROMPT_DIM = 256  # the width of prompt tokens, image embedding and decoder


def build_sam(name: str | None = "vit_h", checkpoint: str | os.PathLike[str] | None = None,
              *, img_size: int | None = None, precision: str = "fp32",
              text_dim: int | None = None, **encoder_overrides: Any) -> Sam:
    """SAM ``vit_b`` / ``vit_l`` / ``vit_h`` / ``sam_tiny``, with ``checkpoint``'s weights.

    ``name=None`` takes the size from the checkpoint. ``precision``: "fp32", "bf16" or
    "fp16" (GPU) autocast when the predictor runs the model (``model.precision`` changes it
    later, e.g. after ``.to("cuda")``). ``img_size`` (default: the size's own, 1024 for the
    official sizes) and ``encoder_overrides`` build other variants (tests, small models).
    An ``img_size`` other than the checkpoint's runs its weights at that size: the grid-sized
    position weights are resampled (:mod:`attnvision.sam.input_size`). ``text_dim`` adds text
    prompts (a projection of text_dim-wide phrase vectors); our files record it, like the
    other options.
    """
    check_precision(precision)  # the device is checked when the model runs
    sd = recorded = None
    resize = img_size is not None  # the caller's size wins over the checkpoint's
    if checkpoint is not None:
        sd, recorded, options = read_sam_weights(checkpoint, name)
        if options and not encoder_overrides:  # our file of a non-standard SAM
            options = dict(options)
            recorded_size = options.pop("img_size", None)
            img_size = img_size or recorded_size
            text_dim = options.pop("text_dim", text_dim)
            encoder_overrides = {k: tuple(v) if isinstance(v, list) else v
                                 for k, v in options.items()}
        if name is None:
            name = recorded
        elif recorded is not None and recorded != name:
            raise UserError(f"{checkpoint} holds SAM {recorded} weights, not {name}: "
                            f"use --model {recorded} (or build_sam('{recorded}', ...))")
    if name is None and checkpoint is not None:
        raise UserError(f"cannot tell the SAM size of {checkpoint} from its weights: name it, "
                        f"one of {sorted(ENCODER_CONFIGS)} (--model, or build_sam(name, ...))")
    if name not in ENCODER_CONFIGS:
        raise UserError(f"unknown SAM model {name!r}: choose one of {sorted(ENCODER_CONFIGS)}")
    if img_size is None:
        img_size = ENCODER_CONFIGS[name].img_size
    patch = encoder_overrides.get("patch_size", ENCODER_CONFIGS[name].patch_size)
    if img_size < 4 * patch or img_size % patch:
        raise UserError(f"a SAM input size must be a multiple of {patch} of at least "
                        f"{4 * patch} pixels (one token per {patch}x{patch} patch), "
                        f"not {img_size}")
    encoder = build_image_encoder(name, img_size=img_size, **encoder_overrides)
    grid = img_size // patch
    model = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                                     input_image_size=(img_size, img_size), mask_in_chans=16,
                                     text_dim=text_dim),
        mask_decoder=MaskDecoder(
            transformer_dim=PROMPT_DIM,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, num_heads=8,
                                          mlp_dim=2048),
            num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256),
    )
    if sd is not None:
        if resize:
            sd = fit_to_input_size(sd, model.state_dict())
        load_sam_weights(model, sd, str(checkpoint), name)
    model.precision = precision
    model.size_name = name
    if encoder_overrides or img_size != ENCODER_CONFIGS[name].img_size:  # what save_sam records
        model.build_options = {"img_size": img_size, **{
            k: list(v) if isinstance(v, tuple) else v for k, v in encoder_overrides.items()}}
    return model.eval()


def _builder(name: str) -> Callable[..., Sam]:
    def build(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
        return build_sam(name, checkpoint)

    build.__name__ = f"build_sam_{name}"
    return build


# The official names: sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth").
sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": _builder("vit_h"),
    "vit_h": _builder("vit_h"),
    "vit_l": _builder("vit_l"),
    "vit_b": _builder("vit_b"),
    "sam_tiny": _builder("sam_tiny"),  # ours: the model that ships in the package
}
