"""DAVIS measures on hand-made masks whose values are worked out by hand, and the DAVIS
folder format (indexed PNGs with the VOC palette)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from attnvision.data.davis import davis_sequences, read_indexed_png, voc_palette, write_indexed_png
from attnvision.errors import UserError
from attnvision.sam2.metrics import (
    boundary_map,
    contour_accuracy,
    region_similarity,
    sequence_scores,
    tolerance_pixels,
)


def square(rows: tuple[int, int], cols: tuple[int, int], size: int = 20) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return m


def test_the_boundary_of_a_square_by_hand():
    # A 6x6 square at rows/columns 5-10: its lower row and right column (11 pixels inside),
    # and the pixels above and to its left whose lower or right neighbour is in it (row 4,
    # columns 4-10 and column 4, rows 4-10: 13 outside). 24 in all.
    edge = boundary_map(square((5, 10), (5, 10)))
    assert edge.sum() == 24
    assert edge[10, 5:11].all() and edge[5:11, 10].all()
    assert edge[4, 4:11].all() and edge[4:11, 4].all()
    assert not edge[5:10, 5:10].any()


def test_j_and_f_of_a_square_one_column_too_wide():
    truth, wider = square((5, 10), (5, 10)), square((5, 10), (5, 11))
    assert region_similarity(wider, truth) == pytest.approx(36 / 42)
    # With no tolerance, the boundaries share 19 pixels (row 10 cols 5-10, row 4 cols 4-10,
    # col 4 rows 5-10) of the truth's 24 and the prediction's 26: P = 19/26, R = 19/24,
    # F = 2PR / (P + R) = 38 / 50.
    assert contour_accuracy(wider, truth, tolerance=0) == pytest.approx(0.76)
    # One pixel of tolerance (this 20x20 image's DAVIS tolerance: ceil(0.008 x 28.3) = 1)
    # matches every boundary pixel: F = 1.
    assert tolerance_pixels((20, 20)) == 1 and tolerance_pixels((480, 854)) == 8
    assert contour_accuracy(wider, truth) == 1.0


def test_empty_masks_and_void_pixels():
    empty, truth = np.zeros((20, 20), bool), square((5, 10), (5, 10))
    assert region_similarity(empty, empty) == 1.0 and contour_accuracy(empty, empty) == 1.0
    assert region_similarity(empty, truth) == 0.0 and contour_accuracy(empty, truth) == 0.0
    assert contour_accuracy(truth, empty) == 0.0
    # Void pixels leave the masks: a prediction that spills only into void is exact.
    spill = square((5, 10), (5, 14))
    void = square((0, 19), (11, 19))
    assert region_similarity(spill, truth, void) == 1.0
    assert region_similarity(spill, truth) == pytest.approx(36 / 60)


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(st.integers(2, 24), st.integers(2, 24))),
       arrays(bool, st.tuples(st.integers(2, 24), st.integers(2, 24))))
def test_measures_are_symmetric_bounded_and_exact_on_equal_masks(a, b):
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    for measure in (region_similarity, contour_accuracy):
        assert 0.0 <= measure(a, b) <= 1.0
        assert measure(a, b) == pytest.approx(measure(b, a))
        assert measure(a, a) == 1.0


def test_a_sequence_leaves_out_its_first_and_last_frames():
    truth = [np.zeros((20, 20), np.uint8) for _ in range(4)]
    for t in truth:
        t[square((5, 10), (5, 10))] = 1
    predicted = [t.copy() for t in truth]
    predicted[0][:] = 0  # the first and last frames are not scored
    predicted[3][:] = 0
    predicted[2][square((5, 10), (5, 11))] = 1
    scores = sequence_scores(predicted, truth, [1])
    j = (1 + 36 / 42) / 2
    assert scores["J"] == pytest.approx(j) and scores["F"] == 1.0
    assert scores["J&F"] == pytest.approx((j + 1) / 2)
    everything = sequence_scores(predicted, truth, [1], skip_first_and_last=False)
    assert everything["J"] == pytest.approx((1 + 36 / 42) / 4)


def test_indexed_pngs_and_davis_folders(tmp_path):
    palette = voc_palette()
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0]
    assert palette[3].tolist() == [128, 128, 0]
    for layout in ("JPEGImages/480p/cows", "JPEGImages/cows"):
        root = tmp_path / layout.split("/")[0].lower()
        frames_dir = root / layout
        masks_dir = root / layout.replace("JPEGImages", "Annotations")
        frames_dir.mkdir(parents=True)
        masks_dir.mkdir(parents=True)
        labels = np.zeros((12, 16), np.uint8)
        labels[2:6, 3:9], labels[7:10, 10:14], labels[0, 0] = 1, 2, 255
        for i in range(3):
            Image.fromarray(np.full((12, 16, 3), 40 * i, np.uint8)).save(
                frames_dir / f"{i:05d}.jpg")
        write_indexed_png(masks_dir / "00000.png", labels)
        (sequence,) = davis_sequences(root)
        assert sequence.name == "cows" and len(sequence.frames) == 3
        assert list(sequence.masks) == [0] and sequence.object_ids() == [1, 2]
        assert np.array_equal(sequence.mask(0), labels)
        with Image.open(masks_dir / "00000.png") as png:
            assert png.mode == "P" and png.convert("RGB").getpixel((3, 2)) == (128, 0, 0)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="not a mask of object ids"):
        read_indexed_png(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="needs JPEGImages/ and Annotations/"):
        davis_sequences(tmp_path / "rgb.png")
