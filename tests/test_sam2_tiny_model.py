"""Our sam2_tiny: SAM 2 with the ViT encoder of the shipped SAM sam_tiny, started from it.

What must hold before any training: the model fits the package's size budget; started from
sam_tiny, its image path is sam_tiny's (the same embedding, and, with the new object-score
token left out, the same masks through the two predictors); the video predictors run on its
single feature level; our files of it load back, float32 and float16, and files that do not
fit are refused in one line.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch
from sam2_helpers import first_frame_outputs

from attnvision.errors import UserError
from attnvision.sam.build import build_sam
from attnvision.sam.predictor import SamPredictor
from attnvision.sam.pretrained import load_shipped, shipped_checkpoint
from attnvision.sam2 import (
    SAM2_CONFIGS,
    SAM2ImagePredictor,
    SAM2StreamPredictor,
    SAM2VideoPredictor,
    build_sam2,
    copy_sam_weights,
    sam2_from_sam,
    save_sam2,
)
from attnvision.sam2.from_sam import OBJECT_PRESENT_LOGIT
from attnvision.sam2.image_encoder import ViTImageEncoder
from attnvision.sam2.neck import sine_position_encoding

NAME = "sam2_tiny"
BUDGET = 25_000_000  # bytes of the float16 file the package will ship
S = 256  # sam2_tiny's input size


@pytest.fixture(scope="module")
def sam():
    """sam_tiny run at 256 px (the shipped file is stored at 512 px): SAM 2's own size."""
    return build_sam(None, shipped_checkpoint(), img_size=S)


@pytest.fixture(scope="module")
def model(sam):
    torch.manual_seed(0)
    return sam2_from_sam(sam)


def scene(seed=0):
    """A 256x256 image: a red rectangle on a noisy blue-grey ground."""
    rng = np.random.default_rng(seed)
    img = np.full((S, S, 3), (40, 60, 80), np.uint8)
    img[60:160, 80:200] = (220, 50, 50)
    return img + rng.integers(0, 20, img.shape).astype(np.uint8)


def test_builds_within_the_size_budget(tmp_path):
    model = build_sam2(NAME)
    assert isinstance(model.image_encoder, ViTImageEncoder)
    assert not model.config.use_high_res_features_in_sam
    assert not hasattr(model.sam_mask_decoder, "conv_s0")
    assert len(model.memory_attention.layers) == 2
    assert model.memory_attention.layers[0].linear1.out_features == 1024
    params = sum(p.numel() for p in model.parameters())
    assert params * 2 < BUDGET  # 12.1M parameters
    path = save_sam2(model, tmp_path / "fp16.safetensors", NAME, dtype=torch.float16)
    assert path.stat().st_size <= BUDGET
    # The official models keep their 2048-wide memory-attention MLPs.
    assert SAM2_CONFIGS["sam2.1_hiera_tiny"].video.dim_feedforward == 2048


def test_one_level_of_features_with_the_necks_position_code(model):
    x = torch.randn(2, 3, S, S)
    with torch.no_grad():
        out = model.forward_image(x)
    assert [tuple(f.shape) for f in out.backbone_fpn] == [(2, 256, 16, 16)]
    assert len(out.vision_pos_enc) == 1
    torch.testing.assert_close(out.vision_pos_enc[0],
                               sine_position_encoding(16, 16, 256).expand(2, -1, -1, -1),
                               rtol=0, atol=0)
    features = model.image_features(x)
    assert features["high_res_feats"] == []


def test_weights_come_from_sam_where_the_parts_are_the_same(sam, model):
    fresh = copy_sam_weights(build_sam2(NAME), sam)
    # New in SAM 2: the object-score token and head, and the video parts.
    assert {k.split(".")[0] for k in fresh} == {
        "sam_mask_decoder", "memory_attention", "memory_encoder", "mask_downsample",
        "obj_ptr_proj", "obj_ptr_tpos_proj", "maskmem_tpos_enc", "no_mem_embed",
        "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"}
    assert {k.split(".")[1] for k in fresh if k.startswith("sam_mask_decoder.")} == {
        "obj_score_token", "pred_obj_score_head"}
    sd, ref = model.state_dict(), sam.state_dict()
    assert torch.equal(sd["image_encoder.trunk.blocks.3.attn.rel_pos_h"],
                       ref["image_encoder.blocks.3.attn.rel_pos_h"])
    assert torch.equal(sd["sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight"],
                       ref["mask_decoder.transformer.layers.1.mlp.lin1.weight"])
    assert torch.equal(sd["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
                       ref["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
    # SAM 2 takes no text: sam_tiny's text prompts stay behind.
    assert sam.prompt_encoder.text_projection is not None
    assert not any("text" in k for k in sd)
    assert not model.no_mem_embed.any()  # so an image reads SAM's embedding as it is


def test_the_shipped_512px_sam_is_resampled_to_256px(sam):
    model = sam2_from_sam(load_shipped())  # sam_tiny as shipped: 512 px, a 32x32 grid
    assert model.image_encoder.trunk.pos_embed.shape == (1, 16, 16, 192)
    ours, ref = model.state_dict(), sam.state_dict()
    for key in ("pos_embed", "blocks.7.attn.rel_pos_w"):
        # build_sam resamples the float16 file's weights; ours SAM's float32 copy of them.
        torch.testing.assert_close(ours[f"image_encoder.trunk.{key}"],
                                   ref[f"image_encoder.{key}"], rtol=1e-3, atol=1e-3)


def test_image_embedding_is_sams(sam, model):
    x = torch.randn(1, 3, S, S)  # one normalised input for both
    with torch.no_grad():
        expected = sam.image_encoder(x)
        got = model.forward_image(x).backbone_fpn[-1]  # before the no-memory embedding
        with_no_mem = model.image_features(x)["image_embed"]
    assert torch.equal(got, expected)
    assert torch.equal(with_no_mem, expected)  # the embedding starts at zero


def test_image_masks_are_sams_without_the_object_score_token(sam):
    """SAM 2's decoder puts a new object-score token before SAM's output tokens, and every
    token attends to every other: masks equal SAM's only without it (a config that leaves
    it out), and with the single-mask fallback off (SAM has none). The two predictors also
    normalise pixels differently (SAM on 0..255, SAM 2 on 0..1): inputs differ by 1e-7,
    logits by ~1e-5, so masks are compared as logits and where they are decisive."""
    config = replace(SAM2_CONFIGS[NAME], pred_obj_scores=False)
    model = sam2_from_sam(sam, config=config, apply_postprocessing=False)
    img = scene()
    ours, ref = SAM2ImagePredictor(model), SamPredictor(sam)
    ours.set_image(img)
    ref.set_image(img)
    torch.testing.assert_close(ours.get_image_embedding(), ref.get_image_embedding(),
                               rtol=0, atol=1e-5)
    point, label = np.array([[130, 100]]), np.array([1])
    for multimask in (True, False):
        logits, iou, low = ours.predict(point, label, multimask_output=multimask,
                                        return_logits=True)
        ref_logits, ref_iou, ref_low = ref.predict(point, label, multimask_output=multimask,
                                                   return_logits=True)
        assert logits.shape == ref_logits.shape == (3 if multimask else 1, S, S)
        np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-4)
        np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=1e-5)  # a linear IoU head
        # SAM 2's predictor returns its low-res logits clamped to [-32, 32].
        np.testing.assert_allclose(low, np.clip(ref_low, -32, 32), rtol=0, atol=1e-4)
        decisive = np.abs(ref_logits) > 1e-3
        assert ((logits > 0) == (ref_logits > 0))[decisive].all()
        assert 0.05 < (ref_logits > 0).mean() < 0.5  # a mask that says something


def clip(n=6):
    """A red square moving right over noise, (n, 256, 256, 3), and its true masks."""
    rng = np.random.default_rng(1)
    frames = rng.integers(20, 60, (n, S, S, 3), dtype=np.uint8)
    truth = np.zeros((n, S, S), bool)
    for t in range(n):
        frames[t, 80:150, 40 + 12 * t:110 + 12 * t] = (220, 60, 60)
        truth[t, 80:150, 40 + 12 * t:110 + 12 * t] = True
    return frames, truth


def test_video_and_stream_predictors_run_on_one_level(model):
    # The fresh object-score head starts at "present", so the untrained model shows its masks.
    bias = model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    assert torch.all(bias == OBJECT_PRESENT_LOGIT)
    frames, truth = clip()
    video = SAM2VideoPredictor(model)
    state = video.init_state(frames)
    _, ids, masks = video.add_new_points_or_box(state, 0, 1, points=[[75, 115]], labels=[1])
    assert ids == [1] and masks.shape == (1, 1, S, S)
    tracked = {t: m for t, _, m in video.propagate_in_video(state)}
    assert sorted(tracked) == list(range(len(frames)))
    assert all(m.shape == (1, 1, S, S) for m in tracked.values())
    first = (tracked[0][0, 0] > 0).numpy()
    assert (first & truth[0]).sum() / (first | truth[0]).sum() > 0.8  # sam_tiny's mask

    stream = SAM2StreamPredictor(model)
    stream.add_prompt(frame_idx=0, obj_id=1, points=[[75, 115]], labels=[1])
    for t, ids, m in stream.track(frames):
        assert ids == [1]
        torch.testing.assert_close(m, tracked[t], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_save_and_load_round_trip(model, tmp_path, dtype):
    path = save_sam2(model, tmp_path / "sam2_tiny.safetensors", NAME, dtype=dtype)
    x = torch.randn(1, 3, S, S)
    expected = first_frame_outputs(model, x)
    for name in (NAME, None):  # None: the name the file records
        loaded = build_sam2(name, path)
        assert loaded.size_name == NAME
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        got = first_frame_outputs(loaded, x)
        for a, b in zip(got, expected, strict=True):
            if dtype is None:
                assert torch.equal(a, b)
            else:  # float16 weights: about 3 decimal digits
                torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)


def test_a_file_without_our_metadata_is_recognised(model, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"model": model.state_dict()}, path)
    assert build_sam2(None, path).size_name == NAME


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_files_that_do_not_fit_are_refused_in_one_line(model, tmp_path):
    # Same name, another memory attention (the official 2048-wide MLPs).
    wide = replace(SAM2_CONFIGS[NAME], video=replace(SAM2_CONFIGS[NAME].video,
                                                     dim_feedforward=2048))
    path = save_sam2(build_sam2(NAME, config=wide), tmp_path / "wide.safetensors", NAME)
    with pytest.raises(UserError) as e:
        build_sam2(NAME, path)
    assert "does not fit SAM 2 sam2_tiny" in one_line(e) and "linear1" in one_line(e)
    ours = save_sam2(model, tmp_path / "ours.safetensors", NAME, dtype=torch.float16)
    with pytest.raises(UserError) as e:
        build_sam2("sam2.1_hiera_tiny", ours)
    assert "holds SAM 2 sam2_tiny weights" in one_line(e)
    with pytest.raises(UserError) as e:  # a SAM (v1) file is not a SAM 2 one
        build_sam2(NAME, shipped_checkpoint())
    assert "sam2_from_sam" in one_line(e)


def test_a_sam_that_does_not_fit_is_refused_in_one_line():
    torch.manual_seed(0)
    other = build_sam("sam_tiny", depth=6)  # two blocks fewer than sam2_tiny's trunk
    with pytest.raises(UserError) as e:
        sam2_from_sam(other)
    assert "does not fit SAM 2 sam2_tiny" in one_line(e)
    assert "missing keys: image_encoder.trunk.blocks.6." in one_line(e)


def test_automatic_mask_generator_runs_on_one_level(model):
    from attnvision.sam2 import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.5,
                                           stability_score_thresh=0.5)
    masks = generator.generate(scene())
    assert masks and all(m["segmentation"].shape == (S, S) for m in masks)


def test_config_checks_and_a_smaller_input_size():
    from attnvision.sam2 import sam2_from_config

    config = SAM2_CONFIGS[NAME]
    with pytest.raises(UserError) as e:  # a ViT alone has no stride-4 / stride-8 levels
        sam2_from_config(replace(config, use_high_res_features_in_sam=True))
    assert "need the pixel stem" in one_line(e)
    with pytest.raises(UserError) as e:
        sam2_from_config(replace(config, image_size=200))
    assert "multiple of 16" in one_line(e)
    small = sam2_from_config(replace(config, image_size=128)).eval()  # the ViT follows
    with torch.no_grad():
        features = small.image_features(torch.randn(1, 3, 128, 128))
    assert features["image_embed"].shape == (1, 256, 8, 8)


def test_position_codes_are_computed_once_and_serve_training_after_inference():
    from attnvision.sam2.neck import position_codes

    with torch.inference_mode():
        first = sine_position_encoding(12, 10, 64)
    assert not first.is_inference() and not first.requires_grad
    again = sine_position_encoding(12, 10, 64)
    assert again.data_ptr() == first.data_ptr()  # the same tensor, not a new one
    maps = [torch.zeros(2, 8, 12, 10, dtype=torch.bfloat16)]
    (codes,) = position_codes(maps, 64)
    assert codes.shape == (2, 64, 12, 10) and codes.dtype == torch.bfloat16
    torch.testing.assert_close(codes[1].float(), first[0], atol=1e-2, rtol=1e-2)
    # used in a step that trains (saved for backward) after the inference-mode call
    w = torch.ones(1, requires_grad=True)
    (first * w * w).sum().backward()
    assert w.grad is not None
