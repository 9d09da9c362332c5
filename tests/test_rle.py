"""COCO run-length encoding against pycocotools and the official SAM helpers (test-only)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask
from segment_anything.utils import amg

from attnvision.data.rle import coco_to_rle, masks_to_rle, rle_area, rle_to_coco, rle_to_mask

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools, numpy 2

masks_st = arrays(bool, st.tuples(st.integers(1, 4), st.integers(1, 23), st.integers(1, 23)))


@settings(max_examples=80, deadline=None)
@given(masks_st)
def test_rle_round_trip_and_pycocotools_interchange(masks):
    rles = masks_to_rle(torch.from_numpy(masks))
    theirs = [amg.mask_to_rle_pytorch(torch.from_numpy(m[None]))[0] for m in masks]
    assert rles == theirs  # same uncompressed counts as the official encoder
    for m, rle in zip(masks, rles, strict=True):
        np.testing.assert_array_equal(rle_to_mask(rle), m)
        assert rle_area(rle) == m.sum()
        coco = rle_to_coco(rle)
        official = amg.coco_encode_rle(rle)  # pycocotools' frPyObjects
        assert coco == official
        np.testing.assert_array_equal(coco_mask.decode(coco).astype(bool), m)  # ours by theirs
        encoded = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
        np.testing.assert_array_equal(rle_to_mask(encoded), m)  # theirs (bytes) by ours
        assert coco_to_rle(coco) == rle
        assert rle_area(coco) == int(coco_mask.area(encoded))


def test_coco_strings_with_long_runs():
    m = np.zeros((1000, 700), dtype=bool)
    m[3:997, 10:690] = True
    m[500, 5] = True
    coco = rle_to_coco(masks_to_rle(torch.from_numpy(m[None]))[0])
    assert coco["counts"] == coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))[
        "counts"].decode()
    np.testing.assert_array_equal(rle_to_mask(coco), m)
