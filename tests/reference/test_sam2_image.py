"""Parity of SAM 2's image model and image predictor with the official ``sam2`` package.

The official models (hiera tiny and base_plus, SAM 2.1) are built from the package's own
configs with seeded random weights, every tensor perturbed and the masks sharpened
(``reference.official_sam2``), saved as official ``.pt`` files and read by ``build_sam2``
with no name: the size comes from the file. Each model encodes the 1024 px input once per
config (module fixtures); the trunk and neck are also compared at small image sizes, where
windows need padding, and on random small Hiera configs.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sam2.modeling.backbones.hieradet import Hiera as RefHiera
from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder as RefPromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer as RefTwoWayTransformer
from sam2.sam2_image_predictor import SAM2ImagePredictor as RefPredictor
from sam2.utils.transforms import SAM2Transforms
from skimage import data

from attnvision.sam2 import SAM2ImagePredictor, build_sam2
from attnvision.sam2.configs import HieraConfig
from attnvision.sam2.hiera import Hiera
from attnvision.sam2.mask_decoder import SAM2MaskDecoder
from attnvision.sam2.transforms import image_to_input
from reference.official_sam2 import official_sam2, official_state, perturb

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

IMAGE = data.chelsea()  # 300 x 451: stretched to the 1024 px square, as SAM 2 does
MASK_AGREEMENT = 0.999
LOGIT_ATOL = 1e-3


@pytest.fixture(scope="module", params=["sam2.1_hiera_tiny", "sam2.1_hiera_base_plus"])
def predictors(request, tmp_path_factory):
    name = request.param
    ref = official_sam2(name)
    path = tmp_path_factory.mktemp("sam2") / f"{name}.pt"
    torch.save(official_state(ref), path)
    ours = build_sam2(None, path)  # the size and version read from the file
    path.unlink()  # 150-300 MB each: the test machine's disk is small
    assert ours.size_name == name
    ref_predictor, our_predictor = RefPredictor(ref), SAM2ImagePredictor(ours)
    with torch.inference_mode():
        ref_predictor.set_image(IMAGE)
    our_predictor.set_image(IMAGE)
    return ref_predictor, our_predictor


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


def test_image_features_match(predictors):
    ref, ours = predictors
    assert rel_err(ours.get_image_embedding(), ref.get_image_embedding()) < 1e-5
    assert len(ours._features["high_res_feats"]) == 2
    for got, expected in zip(ours._features["high_res_feats"], ref._features["high_res_feats"],
                             strict=True):
        assert got.shape == expected.shape
        assert rel_err(got, expected) < 1e-5


H, W = IMAGE.shape[:2]
CLICK = {"point_coords": np.array([[W * 0.5, H * 0.45]]), "point_labels": np.array([1])}
BOX = np.array([W * 0.25, H * 0.2, W * 0.75, H * 0.7])
PROMPTS = {
    "click": CLICK,
    "clicks": {"point_coords": np.array([[W * 0.5, H * 0.45], [W * 0.1, H * 0.9]]),
               "point_labels": np.array([1, 0])},
    "box": {"box": BOX},
    "box_and_clicks": {"box": BOX, "point_coords": np.array([[W * 0.5, H * 0.45],
                                                             [W * 0.3, H * 0.25]]),
                       "point_labels": np.array([1, 0])},
    "normalized_click": {"point_coords": np.array([[0.4, 0.6]]), "point_labels": np.array([1]),
                         "normalize_coords": False},
    "three_boxes": {"box": np.array([BOX, BOX * 0.8, [10.0, 20.0, 200.0, 280.0]])},
}


def assert_same_outputs(got, expected):
    (masks, iou, low), (ref_masks, ref_iou, ref_low) = got, expected
    assert masks.shape == ref_masks.shape and masks.dtype == ref_masks.dtype
    assert iou.shape == ref_iou.shape and low.shape == ref_low.shape
    assert (masks == ref_masks).mean() >= MASK_AGREEMENT
    assert np.abs(low - ref_low).max() <= LOGIT_ATOL
    np.testing.assert_allclose(iou, ref_iou, atol=1e-4)


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_predict_matches_official(predictors, prompt, multimask):
    ref, ours = predictors
    kwargs = {**PROMPTS[prompt], "multimask_output": multimask}
    with torch.inference_mode():
        expected = ref.predict(**kwargs)
    got = ours.predict(**kwargs)
    assert_same_outputs(got, expected)
    masks = got[0]
    assert masks.shape[-2:] == (H, W) and masks.shape[-3] == (3 if multimask else 1)
    assert 0.001 < masks.mean() < 0.999  # decisive masks, neither empty nor full


def test_mask_input_round_trip_matches_official(predictors):
    # The interactive loop: the previous low-res logits are the next call's mask prompt.
    ref, ours = predictors
    with torch.inference_mode():
        _, ref_iou, ref_low = ref.predict(**CLICK, multimask_output=True)
    _, iou, low = ours.predict(**CLICK, multimask_output=True)
    assert np.argmax(iou) == np.argmax(ref_iou)
    for multimask in (True, False):
        with torch.inference_mode():
            expected = ref.predict(**CLICK, mask_input=ref_low[np.argmax(ref_iou)][None],
                                   multimask_output=multimask)
        got = ours.predict(**CLICK, mask_input=low[np.argmax(iou)][None],
                           multimask_output=multimask)
        assert_same_outputs(got, expected)
    # A mask prompt alone.
    with torch.inference_mode():
        expected = ref.predict(mask_input=ref_low[:1], multimask_output=False)
    assert_same_outputs(ours.predict(mask_input=low[:1], multimask_output=False), expected)


def test_return_logits_match_official(predictors):
    ref, ours = predictors
    with torch.inference_mode():
        ref_logits, _, _ = ref.predict(box=BOX, return_logits=True)
    logits, _, _ = ours.predict(box=BOX, return_logits=True)
    assert logits.dtype == np.float32 and logits.shape == ref_logits.shape
    assert np.abs(logits - ref_logits).max() <= LOGIT_ATOL


def test_trunk_and_neck_match_at_a_small_size(predictors):
    # 160 px: grids of 40, 20, 10 and 5 tokens, so the windows of 14 and 7 (and the pooled
    # windows at the last stage change) need padding.
    ref, ours = predictors
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(160))
    ref_encoder, encoder = ref.model.image_encoder, ours.model.image_encoder
    with torch.inference_mode():
        ref_trunk, trunk = ref_encoder.trunk(x), encoder.trunk(x)
        ref_fpn, ref_pos = ref_encoder.neck(ref_trunk)
        fpn = encoder.neck(trunk)
    assert [t.shape[-1] for t in trunk] == [40, 20, 10, 5]
    for got, expected in zip(trunk, ref_trunk, strict=True):
        assert got.shape == expected.shape
        assert rel_err(got, expected) < 1e-5
    for got, expected in zip(fpn, ref_fpn, strict=True):
        assert rel_err(got, expected) < 1e-5
    # scalp = 1: the encoder keeps the three finest levels and their position codes.
    pos = encoder.neck.position_encoding(fpn[:-1])
    for got, expected in zip(pos, ref_pos[:-1], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@settings(max_examples=10, deadline=None)
@given(embed_dim=st.sampled_from([8, 16]), num_heads=st.sampled_from([1, 2]),
       stages=st.lists(st.integers(1, 2), min_size=4, max_size=4),
       windows=st.tuples(st.sampled_from([2, 4, 8]), st.sampled_from([2, 4]),
                         st.sampled_from([2, 4, 6, 14]), st.integers(1, 7)),
       n_global=st.integers(0, 2), bkg=st.integers(2, 9), size=st.integers(1, 5),
       batch=st.integers(1, 2), seed=st.integers(0, 1000))
def test_hiera_matches_official_for_any_shape(embed_dim, num_heads, stages, windows, n_global,
                                              bkg, size, batch, seed):
    # Grids of S/4 .. S/32 tokens for S = 32k, against windows that mostly do not divide
    # them: padded windows and pooled padded windows at stage changes. Global blocks go
    # anywhere but on a stage change, which the official Hiera cannot pool globally (nor do
    # the released configs ask it to).
    gen = torch.Generator().manual_seed(seed)
    depth = sum(stages)
    stage_starts = {sum(stages[:i]) for i in range(1, len(stages))}
    candidates = torch.tensor([i for i in range(depth) if i not in stage_starts])
    picked = candidates[torch.randperm(len(candidates), generator=gen)[:n_global]]
    global_blocks = tuple(sorted(picked.tolist()))
    torch.manual_seed(seed)
    ref = RefHiera(embed_dim=embed_dim, num_heads=num_heads, stages=tuple(stages),
                   window_spec=windows, global_att_blocks=global_blocks,
                   window_pos_embed_bkg_spatial_size=(bkg, bkg)).eval()
    perturb(ref, seed, noise=0.2)
    ours = Hiera(HieraConfig(embed_dim=embed_dim, num_heads=num_heads, stages=tuple(stages),
                             global_att_blocks=global_blocks, window_spec=windows,
                             window_pos_embed_bkg_spatial_size=(bkg, bkg))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert [b.window_size for b in ours.blocks] == [b.window_size for b in ref.blocks]
    x = torch.randn(batch, 3, 32 * size, 32 * size, generator=gen)
    with torch.inference_mode():
        expected, got = ref(x), ours(x)
    assert ours.channel_list == ref.channel_list
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_position_grid_must_tile_the_window_embedding():
    trunk = Hiera(HieraConfig(embed_dim=8, num_heads=1, stages=(1, 1, 1, 1),
                              global_att_blocks=()))
    with pytest.raises(ValueError, match="multiple of 32 pixels"):
        trunk(torch.zeros(1, 3, 48, 48))


def _decoders(sharpen: float):
    torch.manual_seed(0)
    ref = RefMaskDecoder(
        transformer_dim=256, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256,
        transformer=RefTwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
        pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
        dynamic_multimask_via_stability=True)
    perturb(ref, seed=3)
    with torch.no_grad():
        ref.output_hypernetworks_mlps[0].layers[-1].weight.mul_(sharpen)
        ref.pred_obj_score_head.layers[-1].bias.sub_(2.0)
    ours = SAM2MaskDecoder(use_high_res_features=True, iou_prediction_use_sigmoid=True,
                           pred_obj_scores=True, pred_obj_scores_mlp=True,
                           use_multimask_token_for_obj_ptr=True,
                           dynamic_multimask_via_stability=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref.eval(), ours.eval()


@pytest.mark.parametrize("sharpen", [1.0, 300.0], ids=["unstable", "stable"])
@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_mask_decoder_matches_official(sharpen, multimask, training):
    # Every output of the decoder, on a 16x16 embedding: masks, IoU, the object-pointer tokens
    # and the object scores; single masks through both branches of the stability fallback.
    ref, ours = _decoders(sharpen)
    ref.train(training), ours.train(training)
    gen = torch.Generator().manual_seed(5)
    prompts = RefPromptEncoder(embed_dim=256, image_embedding_size=(16, 16),
                               input_image_size=(256, 256), mask_in_chans=16)
    coords = torch.rand(4, 2, 2, generator=gen) * 255
    labels = torch.tensor([[1, 0], [1, 1], [2, 3], [0, 1]])
    image = torch.randn(1, 256, 16, 16, generator=gen)
    high_res = [torch.randn(1, 32, 64, 64, generator=gen),
                torch.randn(1, 64, 32, 32, generator=gen)]
    with torch.no_grad():
        sparse, dense = prompts((coords, labels), None, None)
        pe = prompts.get_dense_pe()
        expected = ref(image, pe, sparse, dense, multimask, repeat_image=True,
                       high_res_features=high_res)
        got = ours(image, pe, sparse, dense, multimask, high_res_features=high_res)
        if not multimask and not training:  # the fallback really is exercised both ways
            stable = ref._get_stability_scores(
                ref.predict_masks(image, pe, sparse, dense, True, high_res)[0][:, :1]) >= 0.98
            assert bool(stable.all()) == (sharpen > 1) and bool(stable.any()) == (sharpen > 1)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        assert rel_err(g, e) < 1e-5
    assert got[2].shape[1] == (3 if multimask else 1)  # use_multimask_token_for_obj_ptr


def test_image_transform_is_the_official_one():
    # torchvision's Resize of the float tensor (antialiased) and Normalize, without torchvision.
    official = SAM2Transforms(resolution=1024, mask_threshold=0.0)
    for image in (IMAGE, np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = official(image)
        assert torch.equal(image_to_input(image, 1024), expected)
