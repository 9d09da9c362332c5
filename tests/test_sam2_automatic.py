"""SAM2AutomaticMaskGenerator beyond the official parity (tests/reference/
test_sam2_automatic.py): output modes, batching, explicit grids, agreement with
SAM2ImagePredictor, and bad arguments, on a small random SAM 2 at 256 px."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from attnvision.data.rle import rle_to_mask
from attnvision.sam.masks import point_grid
from attnvision.sam2 import (
    SAM2_CONFIGS,
    SAM2AutomaticMaskGenerator,
    SAM2ImagePredictor,
    sam2_from_config,
)

SMALL = replace(SAM2_CONFIGS["sam2.1_hiera_tiny"], image_size=256).with_trunk(
    embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4))
KEEP_ALL = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
IMAGE = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = sam2_from_config(SMALL).eval()
    with torch.no_grad():  # decisive masks from random weights
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
    return model


def masks(records: list[dict]) -> np.ndarray:
    return np.stack([r["segmentation"] if isinstance(r["segmentation"], np.ndarray)
                     else rle_to_mask(r["segmentation"]) for r in records])


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(masks(a), masks(b))
    for x, y in zip(a, b, strict=True):
        for key in ("area", "bbox", "point_coords", "crop_box"):
            assert x[key] == y[key]
        for key in ("predicted_iou", "stability_score"):
            assert x[key] == pytest.approx(y[key], abs=1e-5)


def test_records_have_the_official_keys_and_types(model):
    records = SAM2AutomaticMaskGenerator(model, points_per_side=4, **KEEP_ALL).generate(IMAGE)
    assert len(records) == 4 * 4 * 3
    for r in records:
        assert set(r) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords",
                          "stability_score", "crop_box"}
        assert r["segmentation"].shape == IMAGE.shape[:2] and r["segmentation"].dtype == bool
        assert r["area"] == int(r["segmentation"].sum())
        assert r["crop_box"] == [0, 0, 120, 90]
        assert len(r["point_coords"]) == 1 and len(r["point_coords"][0]) == 2


def test_output_modes_agree(model):
    kwargs = {"points_per_side": 3, **KEEP_ALL}
    binary = SAM2AutomaticMaskGenerator(model, **kwargs).generate(IMAGE)
    for mode in ("uncompressed_rle", "coco_rle"):
        records = SAM2AutomaticMaskGenerator(model, output_mode=mode, **kwargs).generate(IMAGE)
        assert all(isinstance(r["segmentation"], dict) for r in records)
        assert_same(records, binary)


@pytest.mark.parametrize("options", [{}, {"use_m2m": True}, {"multimask_output": False}],
                         ids=["multimask", "m2m", "single"])
def test_batch_size_and_explicit_grid_do_not_change_the_records(model, options):
    kwargs = {**KEEP_ALL, **options}
    expected = SAM2AutomaticMaskGenerator(model, points_per_side=3, **kwargs).generate(IMAGE)
    assert_same(SAM2AutomaticMaskGenerator(model, points_per_side=3, points_per_batch=4,
                                           **kwargs).generate(IMAGE), expected)
    assert_same(SAM2AutomaticMaskGenerator(model, points_per_side=None,
                                           point_grids=[point_grid(3)], **kwargs
                                           ).generate(IMAGE), expected)


def test_one_mask_per_point_without_multimask(model):
    records = SAM2AutomaticMaskGenerator(model, points_per_side=4, multimask_output=False,
                                         **KEEP_ALL).generate(IMAGE)
    points = [tuple(r["point_coords"][0]) for r in records]
    assert len(points) == len(set(points)) == 16


@pytest.mark.parametrize("area", [0, 20])
def test_masks_are_the_image_predictors(model, area):
    """With the filters off, every record is one of SAM2ImagePredictor's three masks for its
    point (with min_mask_region_area as the predictor's clean-up area)."""
    records = SAM2AutomaticMaskGenerator(model, points_per_side=3, min_mask_region_area=area,
                                         **KEEP_ALL).generate(IMAGE)
    predictor = SAM2ImagePredictor(model, max_hole_area=area, max_sprinkle_area=area)
    predictor.set_image(IMAGE)
    for r in records:
        found, scores, _ = predictor.predict(np.array(r["point_coords"]), np.array([1]))
        best = int(np.argmin(np.abs(scores - r["predicted_iou"])))
        assert scores[best] == pytest.approx(r["predicted_iou"], abs=1e-5)
        agree = (found[best].astype(bool) == r["segmentation"]).mean()
        assert agree >= 0.999


def test_nothing_left_gives_no_records(model):
    for options in ({}, {"use_m2m": True}, {"crop_n_layers": 1}):
        generator = SAM2AutomaticMaskGenerator(model, points_per_side=2, pred_iou_thresh=1.0,
                                               **options)
        assert generator.generate(IMAGE) == []


@pytest.mark.parametrize("kwargs", [
    {"output_mode": "polygons"},
    {"points_per_side": None},
    {"point_grids": [point_grid(2)]},  # with the default points_per_side
    {"points_per_batch": 0},
    {"points_per_side": None, "point_grids": [point_grid(2)], "crop_n_layers": 1},
], ids=["output_mode", "no_grid", "two_grids", "batch", "grid_per_layer"])
def test_bad_arguments_are_one_line_errors(model, kwargs):
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(model, **kwargs)
