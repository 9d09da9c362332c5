"""A SAM 2 started from a SAM: the parts the two share copied, the rest new.

SAM 2's prompt encoder is SAM's, and its mask decoder is SAM's with additions; with SAM's ViT
as the image encoder (our ``sam2_tiny``, :class:`~attnvision.sam2.image_encoder.ViTImageEncoder`)
the whole of a SAM maps into a SAM 2 by renaming:

    image_encoder.X   -> image_encoder.trunk.X
    prompt_encoder.X  -> sam_prompt_encoder.X
    mask_decoder.X    -> sam_mask_decoder.X, the two-way blocks' mlp.lin1 / lin2 stored as
                         mlp.layers.0 / 1 (SAM 2's names for the same MLP)

What SAM has and SAM 2 does not is left out: the text prompts of our SAM
(``prompt_encoder.text_projection`` / ``text_locator``; SAM 2's predictors take no text, and
the text locator's dense prompt would stand in for the mask prompt the video side feeds).
What SAM 2 has and SAM does not keeps its fresh initialisation: the decoder's object-score
token and head (and the high-resolution projections of a model that has them), and every video
part (memory attention, memory encoder, object pointers, time codes). Three exceptions: the
memory attention's residual branches end in zeroed projections, so that the fresh memory
attention passes the frame's features through; the "no memory" embedding starts at zero, not
at random, so that on a still image (and on a video's first prompted frame) the new model
reads exactly SAM's image embedding; and the object-score head's last bias starts at
"present" (:data:`OBJECT_PRESENT_LOGIT`), so that the new model shows its masks before it has
learnt when an object is gone. Training moves all three. A ViT model with the pixel stem
(``sam2_tiny_hr``) has its high-resolution projections zeroed too, so its fresh stem adds
nothing to SAM's masks until training opens them.

:func:`with_pixel_stem` grows a trained model without the stem (the shipped ``sam2_tiny``)
into the same model with it, the same way: every weight kept, the stem fresh, its
projections at zero, so the grown model's masks are the old model's to start with.

A SAM 2 with a Hiera encoder takes SAM's prompt encoder and mask decoder only; its encoder
stays fresh. A SAM run at another input size than the SAM 2's has its grid-sized position
weights resampled (:func:`attnvision.sam.input_size.fit_to_input_size`): the shipped
``sam_tiny`` is stored at 512 px, ``sam2_tiny`` runs at 256 px.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnvision.errors import UserError
from attnvision.sam.input_size import fit_to_input_size
from attnvision.sam.model import Sam
from attnvision.sam2.build import build_sam2
from attnvision.sam2.configs import SAM2_CONFIGS, SAM2Config
from attnvision.sam2.image_encoder import ViTImageEncoder
from attnvision.sam2.model import SAM2
from attnvision.weights import key_problems

# SAM 2 decoder parts that SAM has no counterpart of.
_NEW_IN_DECODER = ("sam_mask_decoder.obj_score_token.", "sam_mask_decoder.pred_obj_score_head.",
                   "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.")
# The fresh object-score head's starting logit (copy_sam_weights says why).
OBJECT_PRESENT_LOGIT = 4.0
# Our SAM's text prompts: no part of SAM 2.
_TEXT = ("prompt_encoder.text_projection.", "prompt_encoder.text_locator.")


def sam_keys_as_sam2(sd: dict[str, Tensor], with_encoder: bool = True) -> dict[str, Tensor]:
    """A SAM state dict under SAM 2's names (module doc), without the text prompts (and
    without the image encoder unless ``with_encoder``)."""
    out = {}
    for key, value in sd.items():
        part, _, rest = key.partition(".")
        if key.startswith(_TEXT) or (part == "image_encoder" and not with_encoder):
            continue
        if part == "image_encoder":
            out[f"image_encoder.trunk.{rest}"] = value
        elif part == "prompt_encoder":
            out[f"sam_prompt_encoder.{rest}"] = value
        elif part == "mask_decoder":
            rest = rest.replace(".mlp.lin1.", ".mlp.layers.0.").replace(".mlp.lin2.",
                                                                        ".mlp.layers.1.")
            out[f"sam_mask_decoder.{rest}"] = value
        else:
            out[key] = value  # not SAM's: reported by the key check
    return out


@torch.no_grad()
def copy_sam_weights(model: SAM2, sam: Sam) -> list[str]:
    """Copy ``sam``'s weights into ``model`` where the parts are the same (module doc) and
    zero its "no memory" embedding; returns the keys of ``model`` not taken from ``sam``
    (left at their fresh initialisation), sorted. A SAM that does not fit (another width,
    depth, patch size ...) is refused in one line before anything is copied."""
    with_encoder = isinstance(model.image_encoder, ViTImageEncoder)
    sd = sam.state_dict()
    if with_encoder:
        # The grid-sized position weights, resampled if SAM runs at another input size.
        expected = {f"image_encoder.{k}": v
                    for k, v in model.image_encoder.trunk.state_dict().items()}
        sd = fit_to_input_size(sd, expected)
    mapped = sam_keys_as_sam2(sd, with_encoder)
    target = model.state_dict()  # shares storage with the parameters and buffers
    prefixes = ("sam_prompt_encoder.", "sam_mask_decoder.") + (
        ("image_encoder.trunk.",) if with_encoder else ())
    shared = {k: v for k, v in target.items()
              if k.startswith(prefixes) and not k.startswith(_NEW_IN_DECODER)}
    problems = key_problems(shared, mapped)
    if problems:
        raise UserError(f"SAM {sam.size_name or '(custom)'} does not fit SAM 2 "
                        f"{model.size_name or '(custom config)'}: {problems}")
    for key, value in mapped.items():
        target[key].copy_(value)  # cast to the model's dtype (a float16 SAM loads as float32)
    model.no_mem_embed.zero_()
    # Each memory-attention layer's residual branches end at zero (ReZero-style), so the
    # fresh memory attention passes the frame's features through (up to its final norm)
    # instead of scrambling them: tracked frames start from SAM's features, and training
    # grows what the memories add.
    for layer in model.memory_attention.layers:
        for out in (layer.self_attn.out_proj, layer.cross_attn_image.out_proj, layer.linear2):
            out.weight.zero_()
            out.bias.zero_()
    # A fresh object-score head answers about 0, which the tracker reads as "absent" and
    # blanks every mask (a converted sam_tiny then scored J&F 0.15 on held-out clips, all
    # from frames where the object is truly gone). Starting it at "present" (sigmoid(4) =
    # 0.98) lets the untrained model track and lets the mask losses train from the start;
    # training then learns when to say absent.
    head = getattr(model.sam_mask_decoder, "pred_obj_score_head", None)
    if head is not None:
        last = head.layers[-1] if hasattr(head, "layers") else head
        last.bias.fill_(OBJECT_PRESENT_LOGIT)
    if with_encoder and model.config.pixel_stem:
        _close_stem(model)
    return sorted(set(target) - set(mapped))


def _close_stem(model: SAM2) -> None:
    """Zero the projections of the pixel stem's maps: the decoder then ignores the stem."""
    for conv in (model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1):
        conv.weight.zero_()
        conv.bias.zero_()


@torch.no_grad()
def with_pixel_stem(model: SAM2, name: str) -> SAM2:
    """``model`` (a ViT SAM 2 without the pixel stem, e.g. ``sam2_tiny``) grown into config
    ``name`` (the same with the stem, e.g. ``sam2_tiny_hr``): every weight of ``model`` copied,
    the stem fresh and its projections zeroed (module doc), in eval mode on ``model``'s
    device. Any other difference between the two configs is refused in one line."""
    from dataclasses import replace

    if name not in SAM2_CONFIGS:
        raise UserError(f"unknown SAM 2 model {name!r}: choose one of {', '.join(SAM2_CONFIGS)}")
    # apply_postprocessing as the model was built (build_sam2 sets both flags from it)
    grown = build_sam2(name, apply_postprocessing=model.config.dynamic_multimask_via_stability)
    without = replace(grown.config, pixel_stem=False, use_high_res_features_in_sam=False)
    if not grown.config.pixel_stem or without != model.config:
        raise UserError(f"SAM 2 {model.size_name or '(custom config)'} does not grow into "
                        f"{name}: {name} must be that model plus the pixel stem")
    target = grown.state_dict()
    for key, value in model.state_dict().items():
        target[key].copy_(value)
    _close_stem(grown)
    return grown.to(model.device).eval()


def sam2_from_sam(sam: Sam, name: str | None = "sam2_tiny", *, config: SAM2Config | None = None,
                  apply_postprocessing: bool = True) -> SAM2:
    """A SAM 2 ``name`` (default ours, ``sam2_tiny``; ``config`` replaces the named config,
    as in :func:`~attnvision.sam2.build.build_sam2`) initialised from ``sam``: its image
    encoder, prompt encoder and mask decoder copied, the rest fresh (:func:`copy_sam_weights`
    says which keys), in eval mode on ``sam``'s device.

    The shipped SAM: ``sam2_from_sam(attnvision.sam.pretrained.load_shipped())``.
    """
    model = build_sam2(name, config=config, apply_postprocessing=apply_postprocessing)
    copy_sam_weights(model, sam)
    return model.to(sam.device).eval()
