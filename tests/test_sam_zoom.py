"""Zooming in on a box: the window's geometry, and a crop that changes nothing but resolution."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sam_helpers import small_sam

from attnvision.errors import UserError
from attnvision.sam import SamPredictor
from attnvision.sam.zoom import predict_zoomed, zoom_window


@pytest.fixture(scope="module")
def predictor():
    p = SamPredictor(small_sam())
    p.set_image(np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8))
    return p


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), fx=st.tuples(st.floats(0, 1), st.floats(0, 1)),
       fy=st.tuples(st.floats(0, 1), st.floats(0, 1)), margin=st.floats(0, 2))
def test_the_window_holds_the_box_and_stays_in_the_image(h, w, fx, fy, margin):
    (bx0, bx1), (by0, by1) = sorted(v * w for v in fx), sorted(v * h for v in fy)
    x0, y0, x1, y1 = zoom_window(np.array([bx0, by0, bx1, by1]), (h, w), margin)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # Every pixel the box touches is in the window (x1 may be the last pixel itself).
    assert x0 <= int(bx0) and min(int(bx1) + 1, w) <= x1
    assert y0 <= int(by0) and min(int(by1) + 1, h) <= y1
    side = (1 + 2 * margin) * max(bx1 - bx0, by1 - by0, 1)
    if x0 > 0 and x1 < w:  # not clipped: as wide as the margin asks, to a pixel
        assert side <= x1 - x0 <= side + 2


def test_a_box_around_the_whole_image_gives_the_plain_mask(predictor):
    box = np.array([0, 0, 150, 90])
    mask, score, window = predict_zoomed(predictor, box)
    assert window == (0, 0, 150, 90)
    masks, scores, _ = predictor.predict(box=box, multimask_output=False)
    assert np.array_equal(mask, masks[0]) and score == pytest.approx(float(scores[0]))


def test_a_small_box_is_segmented_in_its_window_alone(predictor):
    box = np.array([60, 30, 75, 40])
    logits, _, (x0, y0, x1, y1) = predict_zoomed(predictor, box, 0.5, return_logits=True)
    assert (x0, y0, x1, y1) == (52, 20, 83, 50)  # twice the 15 px side, centred, to a pixel
    inside = np.zeros(logits.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert np.isneginf(logits[~inside]).all() and np.isfinite(logits[inside]).all()
    # The window, encoded on its own, is what answers: the same crop gives the same logits.
    crop = SamPredictor(predictor.model)
    crop.set_image(predictor.image[y0:y1, x0:x1].copy())
    expected, _, _ = crop.predict(box=box - [x0, y0, x0, y0], multimask_output=False,
                                  return_logits=True)
    np.testing.assert_allclose(logits[inside].reshape(y1 - y0, x1 - x0), expected[0])
    mask, _, _ = predict_zoomed(predictor, box, 0.5)
    assert np.array_equal(mask, logits > predictor.model.mask_threshold)


def test_bad_zooms(predictor):
    with pytest.raises(UserError, match="outside the 150x90 image"):
        predict_zoomed(predictor, np.array([10, 10, 200, 50]))
    with pytest.raises(UserError, match="one box"):
        predict_zoomed(predictor, np.array([[10, 10, 20, 20], [30, 30, 40, 40]]))
    with pytest.raises(UserError, match="margin must be >= 0"):
        predict_zoomed(predictor, np.array([10, 10, 20, 20]), margin=-1)
    stale = SamPredictor(predictor.model)
    stale.set_image(predictor.image)
    stale.image = stale.image[:50]  # not the image that was embedded
    with pytest.raises(UserError, match="set the image again"):
        predict_zoomed(stale, np.array([10, 10, 20, 20]))
    embedded = SamPredictor(predictor.model)
    embedded.set_image_embedding(predictor.get_image_embedding(), predictor.original_size)
    with pytest.raises(UserError, match="needs the image itself"):
        predict_zoomed(embedded, np.array([10, 10, 20, 20]))


def test_the_zoomed_image_is_the_embedded_one(predictor):
    frame = np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    p = SamPredictor(predictor.model)
    p.set_image(frame)
    before, _, _ = predict_zoomed(p, np.array([60, 30, 75, 40]), return_logits=True)
    frame[:] = 0  # the caller reuses its buffer for the next frame
    after, _, _ = predict_zoomed(p, np.array([60, 30, 75, 40]), return_logits=True)
    np.testing.assert_array_equal(before, after)
    # Another image's embedding takes the image away with the old one.
    p.set_image_embedding(predictor.get_image_embedding(), predictor.original_size)
    with pytest.raises(UserError, match="needs the image itself"):
        predict_zoomed(p, np.array([60, 30, 75, 40]))


def test_an_embedding_from_the_cache_keeps_its_image_too(predictor, tmp_path):
    from attnvision.sam.embedding_cache import EmbeddingCache

    frame = np.random.default_rng(2).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    cache = EmbeddingCache(tmp_path)
    first = SamPredictor(predictor.model)
    assert not cache.set_image(first, frame)
    expected, _, _ = predict_zoomed(first, np.array([60, 30, 75, 40]), return_logits=True)
    hit = SamPredictor(predictor.model)
    assert cache.set_image(hit, frame)  # no encoding: the image is kept all the same
    frame[:] = 0  # and it is a copy, not the caller's reused buffer
    got, _, _ = predict_zoomed(hit, np.array([60, 30, 75, 40]), return_logits=True)
    np.testing.assert_array_equal(got, expected)
