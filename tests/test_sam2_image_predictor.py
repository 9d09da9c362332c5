"""SAM2ImagePredictor beyond the official parity (tests/reference/test_sam2_image.py): image
inputs, batches, prompt checks and the mask clean-up, on a small random SAM 2 at 256 px."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, SAM2ImagePredictor, build_sam2, sam2_from_config
from attnvision.sam2.transforms import fill_holes_and_sprinkles

SMALL = replace(SAM2_CONFIGS["sam2.1_hiera_tiny"], image_size=256).with_trunk(
    embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4))


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = sam2_from_config(SMALL).eval()
    with torch.no_grad():  # decisive masks from random weights
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
    return SAM2ImagePredictor(model)


def image(seed: int, h: int = 90, w: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_array_pil_and_path_give_the_same_embedding(predictor, tmp_path):
    rgb = image(0)
    predictor.set_image(rgb)
    expected = predictor.get_image_embedding().clone()
    assert expected.shape == (1, 256, 16, 16)
    predictor.set_image(Image.fromarray(rgb))
    assert torch.equal(predictor.get_image_embedding(), expected)
    Image.fromarray(rgb).save(tmp_path / "image.png")
    predictor.set_image(tmp_path / "image.png")
    assert torch.equal(predictor.get_image_embedding(), expected)
    predictor.set_image(Image.fromarray(rgb).convert("L"))  # any mode becomes RGB
    assert predictor.get_image_embedding().shape == expected.shape


def test_outputs_have_the_official_shapes_and_types(predictor):
    predictor.set_image(image(1))
    masks, iou, low = predictor.predict(point_coords=np.array([[60, 40]]),
                                        point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert iou.shape == (3,) and ((iou >= 0) & (iou <= 1)).all()  # sigmoid IoU head
    assert low.shape == (3, 64, 64) and np.abs(low).max() <= 32
    # K prompts: one box per object, sharing the click.
    boxes = np.array([[10, 10, 60, 50], [50, 20, 110, 80]])
    masks, iou, low = predictor.predict(point_coords=np.array([[60, 40]]),
                                        point_labels=np.array([1]), box=boxes,
                                        multimask_output=False)
    assert masks.shape == (2, 1, 90, 120) and iou.shape == (2, 1) and low.shape == (2, 1, 64, 64)
    logits, _, _ = predictor.predict(box=boxes[0], return_logits=True)
    assert logits.dtype == np.float32 and np.abs(logits).max() > 1


def test_predict_batch_matches_predict_per_image(predictor):
    images = [image(2), image(3, 70, 50)]
    clicks = [np.array([[30.0, 20.0]]), np.array([[10.0, 60.0]])]
    labels = [np.array([1]), np.array([1])]
    predictor.set_image_batch(images)
    assert predictor.get_image_embedding().shape[0] == 2
    masks, ious, lows = predictor.predict_batch(clicks, labels, multimask_output=False)
    for i, rgb in enumerate(images):
        predictor.set_image(rgb)
        m, s, low = predictor.predict(clicks[i], labels[i], multimask_output=False)
        assert masks[i].shape == m.shape == (1, *rgb.shape[:2])
        np.testing.assert_allclose(lows[i], low, atol=1e-4)
        np.testing.assert_allclose(ious[i], s, atol=1e-5)
    with pytest.raises(UserError, match="set_image_batch"):
        predictor.predict_batch(clicks, labels)


def test_prompt_mistakes_are_one_line_errors(predictor):
    predictor.reset_predictor()
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(box=np.array([0, 0, 10, 10]))
    predictor.set_image(image(4))
    cases = [
        ({"point_coords": np.array([[1.0, 2.0]])}, "needs point_labels"),
        ({"point_coords": np.array([1.0, 2.0]), "point_labels": np.array([1])}, r"\(N, 2\)"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1, 0])},
         "one label per point"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([7])},
         "must be 1 \\(foreground\\)"),
        ({"box": np.array([1.0, 2.0, 3.0])}, "x0, y0, x1, y1"),
        ({"mask_input": np.zeros((1, 32, 32))}, r"mask_input must be \(1, 64, 64\)"),
        ({"box": np.zeros((3, 4)), "point_coords": np.zeros((2, 1, 2)),
          "point_labels": np.ones((2, 1))}, "3 boxes and 2 point sets"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message) as e:
            predictor.predict(**kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="uint8"):
        predictor.set_image(np.zeros((10, 10, 3), dtype=np.float32))


def test_holes_and_sprinkles_are_cleaned_like_the_official_postprocessing():
    logits = torch.full((1, 1, 12, 12), -5.0)
    logits[..., 2:10, 2:10] = 5.0  # an object
    logits[..., 5:7, 5:7] = -5.0  # with a 4-pixel hole
    logits[..., 0, 11] = 5.0  # and a 1-pixel speck
    out = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=4, max_sprinkle_area=1)
    assert (out[..., 5:7, 5:7] == 10.0).all() and out[0, 0, 0, 11] == -10.0
    assert torch.equal(out[..., 2:5, 2:10], logits[..., 2:5, 2:10])
    # Areas are "at most": a 4-pixel hole stays with max_hole_area=3, and so does the
    # background around the object, a large region.
    out = fill_holes_and_sprinkles(logits, 0.0, max_hole_area=3)
    assert torch.equal(out, logits)
    predictor = SAM2ImagePredictor(sam2_from_config(SMALL).eval(), max_hole_area=8.0)
    predictor.set_image(image(5))
    masks, _, _ = predictor.predict(point_coords=np.array([[60, 40]]),
                                    point_labels=np.array([1]))
    assert masks.shape == (3, 90, 120)


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(UserError, match="multiple of 32"):
        sam2_from_config(replace(SMALL, image_size=200))


def test_build_options():
    model = build_sam2(config=SMALL, apply_postprocessing=False)
    assert not model.training and model.size_name is None
    assert not model.sam_mask_decoder.dynamic_multimask_via_stability
    assert build_sam2(config=SMALL).sam_mask_decoder.dynamic_multimask_via_stability


def test_encoder_output_layout(predictor):
    encoder = predictor.model.image_encoder
    with torch.inference_mode():
        out = encoder(torch.zeros(2, 3, 64, 64))
        bare = encoder(torch.zeros(1, 3, 64, 64), positions=False)
    assert [f.shape for f in out.backbone_fpn] == [(2, 256, 16, 16), (2, 256, 8, 8),
                                                   (2, 256, 4, 4)]  # scalp: no stride 32
    assert [p.shape for p in out.vision_pos_enc] == [f.shape for f in out.backbone_fpn]
    assert out.vision_features is out.backbone_fpn[-1] and bare.vision_pos_enc is None
