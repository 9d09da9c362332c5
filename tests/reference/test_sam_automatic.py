"""Parity of ``SamAutomaticMaskGenerator`` with the official generator on identical weights.

The official SAM is built small to keep CPU time low (a 2-block, 192-wide encoder at 256 px;
the full-size prompt encoder and mask decoder), every weight perturbed with seeded noise, then
the mask heads sharpened (hypernetwork outputs x40, so masks are stable) and the IoU head
shifted (+1.1, so about half the masks pass 0.88): random weights otherwise give masks that
every filter rejects. Random masks are scattered over the whole image (every box is the
image), so with the default NMS threshold all but one are duplicates; the "many" cases lower
the score thresholds to 0 and raise the NMS thresholds to 1 to keep every mask (hundreds).
"""

import sys

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator as RefGenerator
from segment_anything.modeling import (
    Sam,
)
from skimage import data

from attnvision.data.rle import rle_to_mask
from attnvision.sam import build_sam
from attnvision.sam.automatic import SamAutomaticMaskGenerator
from reference.official_sam import official_sam

IMG_SIZE = 256
ENCODER = {"embed_dim": 192, "depth": 2, "num_heads": 3, "global_attn_indexes": (1,)}


def official_tiny_sam() -> Sam:
    return official_sam(img_size=IMG_SIZE, noise=0.3, sharpen=True, **ENCODER)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ref = official_tiny_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(ref.state_dict(), path)
    return ref, build_sam("vit_b", checkpoint=path, img_size=IMG_SIZE, **ENCODER)


def mask_of(record: dict) -> np.ndarray:
    seg = record["segmentation"]
    return seg if isinstance(seg, np.ndarray) else rle_to_mask(seg)


def assert_same_records(ours: list[dict], ref: list[dict]) -> None:
    """Same count; each of our masks matched to a distinct official one with IoU >= 0.99 and
    the same scores, box and prompt."""
    assert len(ours) == len(ref)
    ref_masks = np.stack([mask_of(r) for r in ref]).reshape(len(ref), -1) if ref else None
    free = np.ones(len(ref), dtype=bool)
    for o in ours:
        m = mask_of(o).reshape(-1)
        inter = (ref_masks & m).sum(1)
        union = (ref_masks | m).sum(1)
        iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        # The same mask can come from several prompts: prefer the one with our prompt.
        same_point = np.array([r["point_coords"] == o["point_coords"] for r in ref])
        candidates = np.flatnonzero(free & (iou >= 0.99))
        assert candidates.size, f"no official mask matches ours (best IoU {iou.max():.4f})"
        best = [i for i in candidates if same_point[i]] or list(candidates)
        j = best[0]
        free[j] = False
        r = ref[j]
        assert abs(o["predicted_iou"] - r["predicted_iou"]) < 1e-3
        assert o["stability_score"] == pytest.approx(r["stability_score"], abs=1e-3,
                                                     nan_ok=True)
        assert o["area"] == pytest.approx(r["area"], rel=0.01)
        assert o["crop_box"] == r["crop_box"]
        np.testing.assert_allclose(o["point_coords"], r["point_coords"], atol=1e-6)


CASES = {
    "default": {},
    "many": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0,
             "crop_nms_thresh": 1.0},
}


@pytest.mark.parametrize("crop_n_layers", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_records_match_the_official_generator(models, case, crop_n_layers):
    ref_model, our_model = models
    image = data.chelsea()
    kwargs = {"points_per_side": 8, "crop_n_layers": crop_n_layers, **CASES[case]}
    ref = RefGenerator(ref_model, **kwargs).generate(image)
    ours = SamAutomaticMaskGenerator(our_model, **kwargs).generate(image)
    assert len(ref) >= (20 if case == "many" else 1)
    assert_same_records(ours, ref)
    for o in ours:
        assert o["segmentation"].shape == image.shape[:2]
        assert o["area"] == int(o["segmentation"].sum())
        x, y, w, h = o["bbox"]
        ys, xs = np.nonzero(o["segmentation"])
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max(), ys.max())


def test_output_modes_agree(models):
    _, our_model = models
    image = data.chelsea()[::2, ::2].copy()
    kwargs = {"points_per_side": 4, **CASES["many"]}
    binary = SamAutomaticMaskGenerator(our_model, **kwargs).generate(image)
    for mode in ("uncompressed_rle", "coco_rle"):
        records = SamAutomaticMaskGenerator(our_model, output_mode=mode, **kwargs).generate(image)
        assert len(records) == len(binary) > 0
        for r, b in zip(records, binary, strict=True):
            np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), b["segmentation"])
            assert r["area"] == b["area"]


def test_small_region_removal_matches_the_official_postprocessing(models, monkeypatch):
    """min_mask_region_area > 0: the official code needs OpenCV; without it, its
    postprocessing is run here with our own remove_small_regions in cv2's place."""
    import segment_anything.automatic_mask_generator as official

    from attnvision.sam import masks as ours_masks

    ref_model, our_model = models
    image = data.chelsea()
    kwargs = {"points_per_side": 4, "min_mask_region_area": 400, **CASES["many"]}
    try:
        import cv2  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "cv2", object())  # only its import is checked
        monkeypatch.setattr(official, "remove_small_regions", ours_masks.remove_small_regions)
    ref = RefGenerator(ref_model, **kwargs).generate(image)
    ours = SamAutomaticMaskGenerator(our_model, **kwargs).generate(image)
    assert len(ref) >= 5
    assert_same_records(ours, ref)
