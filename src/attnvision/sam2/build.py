"""Building SAM 2 by config name, from the official checkpoints or ours."""

from __future__ import annotations

import os
from dataclasses import asdict, replace

import torch

from attnvision.errors import UserError
from attnvision.sam.image_encoder import EncoderConfig, ImageEncoderViT
from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam2.checkpoints import load_sam2_weights, read_sam2_weights, where_to_get
from attnvision.sam2.configs import SAM2_CONFIGS, SAM2Config, resolve_name
from attnvision.sam2.hiera import Hiera
from attnvision.sam2.image_encoder import ImageEncoder, ViTImageEncoder
from attnvision.sam2.mask_decoder import SAM2MaskDecoder, SAM2TwoWayTransformer
from attnvision.sam2.model import SAM2
from attnvision.sam2.neck import FpnNeck
from attnvision.sam2.pixel_stem import PixelStem


def _image_encoder(config: SAM2Config) -> ImageEncoder | ViTImageEncoder:
    """The config's trunk: a Hiera with its FPN neck, or SAM's ViT (module doc of
    :mod:`attnvision.sam2.image_encoder`)."""
    trunk = config.trunk
    if isinstance(trunk, EncoderConfig):
        # The memory encoder brings masks down 16x, to the grid of stride-16 features.
        if trunk.patch_size != 16 or config.backbone_stride != 16 or config.image_size % 16:
            raise UserError(f"a SAM 2 with a ViT encoder needs 16 px patches, backbone_stride "
                            f"16 and an image size that is a multiple of 16 (the memory "
                            f"encoder's stride), not {trunk.patch_size}, "
                            f"{config.backbone_stride} and {config.image_size}")
        if trunk.out_chans != config.d_model:
            raise UserError(f"the ViT's neck gives {trunk.out_chans} channels; the SAM 2 "
                            f"decoder is {config.d_model} wide: set out_chans = d_model")
        if config.use_high_res_features_in_sam != config.pixel_stem:
            raise UserError("a ViT encoder gives one (stride-16) level: its high-resolution "
                            "features need the pixel stem (set use_high_res_features_in_sam "
                            "and pixel_stem both, or neither)")
        # Built at the SAM 2 config's image size (see SAM2Config).
        vit = ImageEncoderViT(**{**asdict(trunk), "img_size": config.image_size})
        return ViTImageEncoder(vit, PixelStem(config.d_model) if config.pixel_stem else None)
    if config.pixel_stem:
        raise UserError("the pixel stem is for a ViT encoder; a Hiera gives its own "
                        "high-resolution levels: set pixel_stem=False")
    if config.image_size % 32:
        raise UserError(f"a SAM 2 image size must be a multiple of 32 pixels (four stages of "
                        f"2x pooling after a stride-4 patch embedding), not {config.image_size}")
    hiera = Hiera(trunk)
    neck = FpnNeck(config.d_model, hiera.channel_list, config.fpn_top_down_levels)
    return ImageEncoder(hiera, neck, config.scalp)


def sam2_from_config(config: SAM2Config) -> SAM2:
    """A SAM 2 image model of ``config`` with freshly initialised weights."""
    image_encoder = _image_encoder(config)
    grid = config.image_size // config.backbone_stride
    decoder = SAM2MaskDecoder(
        transformer_dim=config.d_model,
        transformer=SAM2TwoWayTransformer(depth=2, embedding_dim=config.d_model, num_heads=8,
                                          mlp_dim=2048),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256,
        use_high_res_features=config.use_high_res_features_in_sam,
        # The stem's maps are already as narrow as the projections' outputs.
        high_res_in_chans=((config.d_model // 8, config.d_model // 4) if config.pixel_stem
                           else None),
        iou_prediction_use_sigmoid=config.iou_prediction_use_sigmoid,
        dynamic_multimask_via_stability=config.dynamic_multimask_via_stability,
        dynamic_multimask_stability_delta=config.dynamic_multimask_stability_delta,
        dynamic_multimask_stability_thresh=config.dynamic_multimask_stability_thresh,
        pred_obj_scores=config.pred_obj_scores, pred_obj_scores_mlp=config.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=config.use_multimask_token_for_obj_ptr)
    prompt_encoder = PromptEncoder(embed_dim=config.d_model, image_embedding_size=(grid, grid),
                                   input_image_size=(config.image_size, config.image_size),
                                   mask_in_chans=16)
    return SAM2(image_encoder, prompt_encoder, decoder, config)


def _config_name(name: str) -> str:
    resolved = resolve_name(name)
    if resolved is None:
        raise UserError(f"unknown SAM 2 model {name!r}: choose one of "
                        f"{', '.join(SAM2_CONFIGS)}")
    return resolved


def build_sam2(name: str | None = None, checkpoint: str | os.PathLike[str] | None = None, *,
               device: str | torch.device = "cpu", apply_postprocessing: bool = True,
               config: SAM2Config | None = None) -> SAM2:
    """SAM 2 ``name`` ("sam2.1_hiera_tiny", or the official config name
    "configs/sam2.1/sam2.1_hiera_t.yaml"), with ``checkpoint``'s weights, in eval mode.

    ``name=None`` takes the model from the checkpoint. Without a checkpoint the weights are
    random. ``apply_postprocessing`` (the official option, on by default): a single mask
    falls back to the best multimask output when it is unstable, and (as the official video
    predictor) clicked frames enter the memory as thresholded masks. ``config`` replaces the
    named config (small test models); a checkpoint must then fit it. The official ``.pt``
    files and ours (``save_sam2``, float32 or float16: weights load as float32) are read,
    every key strictly.
    """
    if name is not None:
        name = _config_name(name)
    sd = None
    if checkpoint is not None:
        sd, recorded, certain = read_sam2_weights(checkpoint, name)
        if recorded is None and name is None and config is None:
            raise UserError(f"{checkpoint} does not look like any released SAM 2 model: "
                            f"give its name, e.g. build_sam2('sam2.1_hiera_tiny', ...)")
        if name is None:
            name = recorded
        elif (config is None and recorded is not None and recorded != name
              and (certain or _size(recorded) != _size(name))):
            raise UserError(f"{checkpoint} holds SAM 2 {recorded} weights, not {name}: use "
                            f"build_sam2('{recorded}', ...) (or name=None)")
    if name is None and config is None:
        raise UserError("build_sam2 needs a model name or a checkpoint: e.g. "
                        f"build_sam2('sam2.1_hiera_tiny', 'sam2.1_hiera_tiny.pt'); "
                        f"{where_to_get('sam2.1_hiera_tiny')}")
    config = config or SAM2_CONFIGS[name]
    config = replace(config, dynamic_multimask_via_stability=apply_postprocessing,
                     video=replace(config.video, binarize_mask_from_pts=apply_postprocessing))
    model = sam2_from_config(config)
    model.size_name = name
    if sd is not None:
        load_sam2_weights(model, sd, str(checkpoint), name or "(custom config)")
    return model.to(device).eval()


def _size(name: str) -> str:
    """"tiny" of "sam2.1_hiera_tiny": the image model, which 2.0 and 2.1 share."""
    return name.rpartition("_hiera_")[2]
