"""TAP-Vid metrics (attnvision.cotracker.metrics): hand-worked cases and proven properties.

Every expected number below is worked out by hand in the comments, from the TAP-Vid definition
(tapnet's compute_tapvid_metrics): frames evaluated are t > q ("first") or t != q ("strided");
close_δ = |pred - gt| < δ in a 256×256 frame; δ^x = Σ[v ∧ close] / Σ[v];
J = TP / (Σ[v] + FP), TP = Σ[v ∧ p ∧ close], FP = Σ[p ∧ (¬v ∨ ¬close)].
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnvision.cotracker.metrics import (
    THRESHOLDS,
    TapVidMetrics,
    compute_tapvid_metrics,
    compute_tapvid_metrics_batch,
    evaluation_mask,
    mean_tapvid_metrics,
    rescale_tracks,
)


def _assert_metrics(m: TapVidMetrics, *, occ: float, within: dict[int, float],
                    jac: dict[int, float]) -> None:
    assert m.occlusion_accuracy == pytest.approx(occ)
    assert m.pts_within == pytest.approx(within)
    assert m.jaccard == pytest.approx(jac)
    assert m.average_pts_within_thresh == pytest.approx(sum(within.values()) / 5)
    assert m.average_jaccard == pytest.approx(sum(jac.values()) / 5)


# --- the hand-worked case: 2 points x 5 frames, 256x256 -------------------------------------
#
# Both queries at frame 0 (never evaluated: the predictions there are deliberately wrong).
# Point A at (100, 100), visible in every frame. Point B at (50, 200), occluded at frames 2-3.
# Prediction offsets (dx, dy) and predicted visibility per frame:
#   frame:   1                 2                 3                   4
#   A      (0.5, 0) vis      (0, 3) vis        (6, 8)=10 px vis    (0.5, 0) OCCLUDED
#   B      (0, 3)   vis      exact, vis        exact, OCCLUDED     (6, 8)=10 px vis
#                            (gt occluded)     (gt occluded)
# Evaluated: 8 pairs. Occlusion right at A1 A2 A3 B1 B3 B4, wrong at A4, B2 -> OA = 6/8 = 0.75.
# gt-visible: A1 A2 A3 A4 B1 B4 (6), distances 0.5 3 10 0.5 3 10.
#   δ=1, 2: close A1 A4 -> 2/6;  δ=4, 8: + A2 B1 -> 4/6;  δ=16: all 6 -> 6/6.
#   δ_avg = (1/3 + 1/3 + 2/3 + 2/3 + 1) / 5 = 3/5.
# Predicted visible: A1 A2 A3 B1 B2 B4 (A4, B3 predicted occluded).
#   δ=1, 2: TP = A1 (A4 close but predicted occluded) = 1; FP = A2 A3 B1 (far) + B2 (gt occ) = 5
#           J = 1 / (6 + 5) = 1/11   [FN = A2 A3 A4 B1 B4 = 5: TP+FP+FN = 11]
#   δ=4, 8: TP = A1 A2 B1 = 3; FP = A3 B4 (far) + B2 = 3; J = 3 / (6 + 3) = 1/3
#   δ=16:   TP = A1 A2 A3 B1 B4 = 5; FP = B2 = 1; J = 5 / (6 + 1) = 5/7
#   AJ = (2/11 + 2/3 + 5/7) / 5 = (42 + 154 + 165) / 231 / 5 = 361/1155.

HAND_OCC = 0.75
HAND_WITHIN = {1: 1 / 3, 2: 1 / 3, 4: 2 / 3, 8: 2 / 3, 16: 1.0}
HAND_JACCARD = {1: 1 / 11, 2: 1 / 11, 4: 1 / 3, 8: 1 / 3, 16: 5 / 7}


def _hand_case(sx: float = 1.0, sy: float = 1.0) -> dict[str, np.ndarray]:
    """The case above; (sx, sy) scale x and y (for the same case in another frame size)."""
    gt = np.zeros((2, 5, 2))
    gt[0] = (100, 100)
    gt[1] = (50, 200)
    offsets = np.array([
        [(40, 40), (0.5, 0), (0, 3), (6, 8), (0.5, 0)],
        [(-30, 0), (0, 3), (0, 0), (0, 0), (6, 8)],
    ])
    gt_occ = np.array([[0, 0, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=bool)
    pred_occ = np.array([[1, 0, 0, 0, 1], [1, 0, 0, 1, 0]], dtype=bool)
    scale = np.array([sx, sy])
    queries = np.array([[0, 100, 100], [0, 50, 200]], dtype=float)  # (t, x, y)
    queries[:, 1:] *= scale
    return {"query_points": queries, "gt_occluded": gt_occ, "gt_tracks": gt * scale,
            "pred_occluded": pred_occ, "pred_tracks": (gt + offsets) * scale}


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_hand_case(mode):
    # Queries at frame 0: "first" (t > 0) and "strided" (t != 0) evaluate the same frames.
    m = compute_tapvid_metrics(**_hand_case(), frame_size=(256, 256), query_mode=mode)
    _assert_metrics(m, occ=HAND_OCC, within=HAND_WITHIN, jac=HAND_JACCARD)
    assert m.average_pts_within_thresh == pytest.approx(3 / 5)
    assert m.average_jaccard == pytest.approx(361 / 1155)


def test_as_dict_uses_the_reference_names():
    d = compute_tapvid_metrics(**_hand_case(), frame_size=(256, 256)).as_dict()
    assert set(d) == {"occlusion_accuracy", "average_jaccard", "average_pts_within_thresh",
                      *(f"pts_within_{t}" for t in THRESHOLDS),
                      *(f"jaccard_{t}" for t in THRESHOLDS)}
    assert d["jaccard_16"] == pytest.approx(5 / 7)
    assert d["pts_within_4"] == pytest.approx(2 / 3)
    assert all(isinstance(v, float) for v in d.values())


def test_rescaled_to_256_before_thresholds():
    # Same case at 512x512 with doubled coordinates: halved back to 256 -> identical numbers.
    m = compute_tapvid_metrics(**_hand_case(2, 2), frame_size=(512, 512))
    _assert_metrics(m, occ=HAND_OCC, within=HAND_WITHIN, jac=HAND_JACCARD)
    # Non-square (H, W) = (128, 512): x scales by 256/512, y by 256/128.
    m = compute_tapvid_metrics(**_hand_case(2, 0.5), frame_size=(128, 512))
    _assert_metrics(m, occ=HAND_OCC, within=HAND_WITHIN, jac=HAND_JACCARD)
    # Left as is in the 512 frame, the distances would double (1, 6, 20 px): δ changes.
    m = compute_tapvid_metrics(**_hand_case(2, 2), frame_size=(256, 256))
    assert m.pts_within[1] == 0.0


def test_non_square_frame_scales_x_and_y_separately():
    # (H, W) = (128, 512). Frame 1: 7 px in x -> 7 * 256/512 = 3.5 px: close at δ=4, not δ=2.
    # Frame 2: 7 px in y -> 7 * 256/128 = 14 px: close at δ=16 only.
    # Per δ (2 visible evaluated frames): δ=1, 2: 0/2; δ=4, 8: 1/2; δ=16: 2/2.
    gt = np.full((1, 3, 2), 60.0)
    pred = gt + np.array([[[0, 0], [7, 0], [0, 7]]])
    occ = np.zeros((1, 3), dtype=bool)
    m = compute_tapvid_metrics(np.array([[0, 60, 60]]), occ, gt, occ, pred,
                               frame_size=(128, 512))
    assert m.pts_within == pytest.approx({1: 0, 2: 0, 4: 0.5, 8: 0.5, 16: 1})
    np.testing.assert_allclose(rescale_tracks(np.array([7.0, 7.0]), (128, 512)), [3.5, 14.0])


@pytest.mark.parametrize(
    ("offset", "close_from"),
    [((4, 0), 8),  # exactly 4 px is not "within 4" (strict <)
     ((3, 3), 8),  # Euclidean 4.24 px: not within 4 (it would be under a per-axis max of 3)
     ((0, 3.99), 4),
     ((0.99, 0), 1),
     ((16, 0), None)],  # not within any threshold
)
def test_threshold_is_strict_and_euclidean(offset, close_from):
    gt = np.zeros((1, 2, 2)) + 100
    pred = gt.copy()
    pred[0, 1] += offset
    occ = np.zeros((1, 2), dtype=bool)
    m = compute_tapvid_metrics(np.array([[0, 100, 100]]), occ, gt, occ, pred,
                               frame_size=(256, 256))
    # One evaluated frame, visible and predicted visible: δ = J = 1 if close, else 0.
    for d in THRESHOLDS:
        expected = 1.0 if close_from is not None and d >= close_from else 0.0
        assert m.pts_within[d] == expected
        assert m.jaccard[d] == expected


def test_first_versus_strided():
    # One point, 5 frames, query at frame 2, visible throughout. Predictions: frames 0-1 are
    # 10 px off (predicted visible), frames 3-4 exact; frame 2 (the query) is wildly wrong
    # and predicted occluded, which never counts.
    # "first" evaluates frames 3, 4 only: everything is right -> all 1.
    # "strided" evaluates 0, 1, 3, 4: OA 4/4; δ=1..8: 2/4, δ=16: 4/4 -> δ_avg = 3/5;
    #   J for δ < 16: TP 2, FP 2 (frames 0, 1 too far), Σv 4 -> 2/6; J_16 = 4/4 -> AJ = 7/15.
    gt = np.tile(np.array([120.0, 80.0]), (1, 5, 1))
    pred = gt.copy()
    pred[0, 0:2] += (6, 8)
    pred[0, 2] += (90, 90)
    gt_occ = np.zeros((1, 5), dtype=bool)
    pred_occ = np.array([[0, 0, 1, 0, 0]], dtype=bool)
    args = (np.array([[2, 120, 80]]), gt_occ, gt, pred_occ, pred)
    first = compute_tapvid_metrics(*args, frame_size=(256, 256), query_mode="first")
    _assert_metrics(first, occ=1.0, within=dict.fromkeys(THRESHOLDS, 1.0),
                    jac=dict.fromkeys(THRESHOLDS, 1.0))
    strided = compute_tapvid_metrics(*args, frame_size=(256, 256), query_mode="strided")
    _assert_metrics(strided, occ=1.0, within={1: 0.5, 2: 0.5, 4: 0.5, 8: 0.5, 16: 1.0},
                    jac={1: 1 / 3, 2: 1 / 3, 4: 1 / 3, 8: 1 / 3, 16: 1.0})
    assert strided.average_pts_within_thresh == pytest.approx(3 / 5)
    assert strided.average_jaccard == pytest.approx(7 / 15)


def test_evaluation_mask():
    q = np.array([0, 2, 4])
    np.testing.assert_array_equal(
        evaluation_mask(q, 5, "first"),
        [[0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        evaluation_mask(q, 5, "strided"),
        [[0, 1, 1, 1, 1], [1, 1, 0, 1, 1], [1, 1, 1, 1, 0]])


def test_fractional_query_frame_is_rounded_like_numpy():
    # The reference rounds t with np.round (half to even): 2.5 -> 2, 2.6 -> 3.
    # Frame 3 is 10 px off, frames 0-2 and 4 exact; "first" mode.
    gt = np.full((1, 5, 2), 50.0)
    pred = gt.copy()
    pred[0, 3] += (6, 8)
    occ = np.zeros((1, 5), dtype=bool)

    def within_1(t: float) -> float:
        m = compute_tapvid_metrics(np.array([[t, 50, 50]]), occ, gt, occ, pred,
                                   frame_size=(256, 256))
        return m.pts_within[1]

    assert within_1(2.5) == 0.5  # q = 2: frames 3, 4 -> 1/2
    assert within_1(2.6) == 1.0  # q = 3: frame 4 -> 1/1


def test_perfect_prediction_is_all_ones():
    case = _hand_case()
    m = compute_tapvid_metrics(case["query_points"], case["gt_occluded"], case["gt_tracks"],
                               case["gt_occluded"], case["gt_tracks"], frame_size=(256, 256))
    assert all(v == 1.0 for v in m.as_dict().values())


def test_mean_is_per_video_then_averaged():
    # Video 1: 1 point, 2 frames, query 0, frame 1 exact -> every metric 1.
    # Video 2: 1 point, 5 frames, query 0, frames 1-4 visible, predicted visible 20 px off
    #   -> δ = 0 and J = 0 / (4 + 4) = 0 at every threshold; OA 1.
    # Benchmark mean: (1 + 0) / 2 = 0.5 for δ and J. (Pooling the 5 evaluated points would
    # give δ = 1/5 instead: that is not how TAP-Vid averages.)
    occ2, occ5 = np.zeros((1, 2), dtype=bool), np.zeros((1, 5), dtype=bool)
    gt2, gt5 = np.full((1, 2, 2), 30.0), np.full((1, 5, 2), 30.0)
    q = np.array([[0, 30, 30]])
    v1 = compute_tapvid_metrics(q, occ2, gt2, occ2, gt2, frame_size=(256, 256))
    v2 = compute_tapvid_metrics(q, occ5, gt5, occ5, gt5 + np.array([20, 0]), frame_size=(256, 256))
    assert v2.average_jaccard == 0.0 and v2.average_pts_within_thresh == 0.0
    mean = mean_tapvid_metrics([v1, v2])
    _assert_metrics(mean, occ=1.0, within=dict.fromkeys(THRESHOLDS, 0.5),
                    jac=dict.fromkeys(THRESHOLDS, 0.5))
    # A plain mean over videos, whatever their sizes: (1 + 0 + 0) / 3.
    assert mean_tapvid_metrics([v1, v2, v2]).average_jaccard == pytest.approx(1 / 3)


def test_batch_matches_per_video_calls():
    one = _hand_case()
    two = _hand_case()
    two["pred_occluded"] = two["gt_occluded"].copy()  # perfect occlusion in the second video
    batch = {k: np.stack([one[k], two[k]]) for k in one}
    out = compute_tapvid_metrics_batch(**batch, frame_size=(256, 256))
    singles = [compute_tapvid_metrics(**v, frame_size=(256, 256)) for v in (one, two)]
    assert out.per_video == tuple(singles)
    assert out.per_video[0].occlusion_accuracy == pytest.approx(0.75)
    assert out.per_video[1].occlusion_accuracy == 1.0
    assert out.mean.occlusion_accuracy == pytest.approx((0.75 + 1.0) / 2)
    assert out.mean == mean_tapvid_metrics(singles)


def test_nothing_to_evaluate_gives_nan():
    # "first" mode with the query on the last frame: no evaluated frame at all.
    occ = np.zeros((1, 3), dtype=bool)
    gt = np.zeros((1, 3, 2))
    m = compute_tapvid_metrics(np.array([[2, 0, 0]]), occ, gt, occ, gt, frame_size=(256, 256))
    assert all(math.isnan(v) for v in m.as_dict().values())
    # Evaluated frames, all occluded in gt and predicted occluded: OA 1, the rest 0/0 = NaN.
    occ = np.array([[0, 1, 1]], dtype=bool)
    m = compute_tapvid_metrics(np.array([[0, 0, 0]]), occ, gt, occ, gt, frame_size=(256, 256))
    assert m.occlusion_accuracy == 1.0
    assert math.isnan(m.average_jaccard) and math.isnan(m.pts_within[4])


# --- errors ---------------------------------------------------------------------------------


def _bad(**changes):
    case = _hand_case()
    case.update(changes)
    return case


@pytest.mark.parametrize(
    ("case", "kwargs", "match"),
    [
        (_bad(), {"query_mode": "all"}, "query_mode"),
        (_bad(), {"frame_size": (256,)}, "frame_size"),
        (_bad(), {"frame_size": (0, 256)}, "frame_size"),
        (_bad(query_points=np.zeros((2, 2))), {}, "query_points"),
        (_bad(query_points=np.zeros((3, 3))), {}, "query_points"),
        (_bad(gt_occluded=np.zeros(5, dtype=bool)), {}, "gt_occluded"),
        (_bad(gt_tracks=np.zeros((2, 4, 2))), {}, "gt_tracks"),
        (_bad(pred_tracks=np.zeros((2, 5, 3))), {}, "pred_tracks"),
        (_bad(pred_occluded=np.zeros((5, 2), dtype=bool)), {}, "pred_occluded"),
        (_bad(pred_occluded=np.full((2, 5), 0.7)), {}, "boolean"),
        (_bad(query_points=np.array([[5.0, 0, 0], [0, 0, 0]])), {}, "query frames"),
        (_bad(query_points=np.array([[-1.0, 0, 0], [0, 0, 0]])), {}, "query frames"),
        (_bad(query_points=np.array([[np.nan, 0, 0], [0, 0, 0]])), {}, "finite"),
    ],
)
def test_errors(case, kwargs, match):
    kwargs = {"frame_size": (256, 256), **kwargs}
    with pytest.raises(ValueError, match=match):
        compute_tapvid_metrics(**case, **kwargs)


def test_batch_and_mean_errors():
    case = _hand_case()
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        compute_tapvid_metrics_batch(**case, frame_size=(256, 256))
    batch = {k: v[None] for k, v in case.items()}
    batch["pred_tracks"] = np.concatenate([batch["pred_tracks"]] * 2)
    with pytest.raises(ValueError, match="batch axis"):
        compute_tapvid_metrics_batch(**batch, frame_size=(256, 256))
    with pytest.raises(ValueError, match="at least one"):
        mean_tapvid_metrics([])


def test_integer_occlusion_flags_are_accepted():
    case = _hand_case()
    ints = {**case, "gt_occluded": case["gt_occluded"].astype(np.int8),
            "pred_occluded": case["pred_occluded"].astype(np.uint8)}
    assert (compute_tapvid_metrics(**ints, frame_size=(256, 256))
            == compute_tapvid_metrics(**case, frame_size=(256, 256)))


# --- properties -----------------------------------------------------------------------------


@st.composite
def videos(draw):
    n = draw(st.integers(1, 4))
    t = draw(st.integers(1, 6))
    h = draw(st.sampled_from([64, 256, 480]))
    w = draw(st.sampled_from([64, 256, 640]))
    coords = st.floats(-50, 700, allow_nan=False, allow_subnormal=False)
    errors = st.floats(-40, 40, allow_nan=False, allow_subnormal=False)
    gt = draw(arrays(np.float64, (n, t, 2), elements=coords))
    err = draw(arrays(np.float64, (n, t, 2), elements=errors))
    q = draw(arrays(np.int64, n, elements=st.integers(0, t - 1)))
    qp = np.stack([q, *draw(arrays(np.float64, (2, n), elements=coords))], axis=-1)
    return {
        "query_points": qp.astype(np.float64),
        "gt_occluded": draw(arrays(bool, (n, t))),
        "gt_tracks": gt,
        "pred_occluded": draw(arrays(bool, (n, t))),
        "pred_tracks": gt + err,
        "frame_size": (h, w),
        "query_mode": draw(st.sampled_from(["first", "strided"])),
    }


def _counts(case):
    """|E| and Σ[v] over evaluated pairs, for which metrics are defined (non-NaN)."""
    t = case["gt_occluded"].shape[1]
    evaluated = evaluation_mask(case["query_points"][:, 0].astype(int), t, case["query_mode"])
    return int(evaluated.sum()), int((evaluated & ~case["gt_occluded"]).sum())


@settings(max_examples=150, deadline=None)
@given(videos())
def test_ranges_monotonicity_and_aj_bound(case):
    m = compute_tapvid_metrics(**case)
    n_eval, n_visible = _counts(case)
    assert math.isnan(m.occlusion_accuracy) == (n_eval == 0)
    if n_visible == 0:  # δ and J divide by Σ[v] (+ FP for J, which may also be 0)
        assert all(math.isnan(v) for v in m.pts_within.values())
        return
    values = m.as_dict().values()
    assert all(0.0 <= v <= 1.0 for v in values)
    within = [m.pts_within[d] for d in THRESHOLDS]
    jac = [m.jaccard[d] for d in THRESHOLDS]
    # close_δ grows with δ: correct and TP grow, FP shrinks -> δ^x and J non-decreasing.
    assert within == sorted(within)
    assert jac == sorted(jac)
    # TP ≤ Σ[v ∧ close] and Σ[v] + FP ≥ Σ[v] -> J_δ ≤ δ^x_δ, hence AJ ≤ δ_avg.
    assert all(j <= w + 1e-12 for j, w in zip(jac, within, strict=True))
    assert m.average_jaccard <= m.average_pts_within_thresh + 1e-12


@settings(max_examples=100, deadline=None)
@given(videos())
def test_perfect_prediction(case):
    case = {**case, "pred_occluded": case["gt_occluded"], "pred_tracks": case["gt_tracks"]}
    m = compute_tapvid_metrics(**case)
    n_eval, n_visible = _counts(case)
    if n_eval:
        assert m.occlusion_accuracy == 1.0
    else:
        assert math.isnan(m.occlusion_accuracy)
    if n_visible:  # TP = Σ[v], FP = 0
        assert all(v == 1.0 for v in m.as_dict().values())


@settings(max_examples=100, deadline=None)
@given(videos(), st.integers(-2, 2))
def test_power_of_two_rescale_is_exactly_invariant(case, k):
    # Scaling coordinates and frame size by 2^k changes nothing once both are brought to 256.
    f = 2.0 ** k
    h, w = case["frame_size"]
    scaled = {**case, "gt_tracks": case["gt_tracks"] * f, "pred_tracks": case["pred_tracks"] * f,
              "frame_size": (int(h * f), int(w * f))}
    a = compute_tapvid_metrics(**case).as_dict()
    b = compute_tapvid_metrics(**scaled).as_dict()
    np.testing.assert_array_equal(list(a.values()), list(b.values()))


@settings(max_examples=100, deadline=None)
@given(videos(), st.randoms(use_true_random=False))
def test_invariances(case, rnd):
    base = compute_tapvid_metrics(**case).as_dict()
    n = case["gt_occluded"].shape[0]
    # The order of the points does not matter.
    perm = list(range(n))
    rnd.shuffle(perm)
    permuted = {k: (v[perm] if isinstance(v, np.ndarray) else v) for k, v in case.items()}
    np.testing.assert_allclose(list(compute_tapvid_metrics(**permuted).as_dict().values()),
                               list(base.values()), equal_nan=True)
    # The query's (x, y) never enter the metrics; occlusion accuracy ignores positions.
    moved = case["query_points"].copy()
    moved[:, 1:] += 1000
    other = compute_tapvid_metrics(**{**case, "query_points": moved}).as_dict()
    np.testing.assert_array_equal(list(other.values()), list(base.values()))
    far = compute_tapvid_metrics(**{**case, "pred_tracks": case["pred_tracks"] + 500})
    np.testing.assert_array_equal(far.occlusion_accuracy, base["occlusion_accuracy"])


@settings(max_examples=100, deadline=None)
@given(videos())
def test_all_predicted_occluded_and_all_visible(case):
    n_eval, n_visible = _counts(case)
    # Nothing predicted visible: TP = FP = 0 -> J = 0; OA = share of gt-occluded pairs.
    hidden = compute_tapvid_metrics(**{**case, "pred_occluded": np.ones_like(case["gt_occluded"])})
    if n_eval:
        assert hidden.occlusion_accuracy == pytest.approx((n_eval - n_visible) / n_eval)
    if n_visible:
        assert all(hidden.jaccard[d] == 0.0 for d in THRESHOLDS)
    # Everything visible and predicted visible: TP = c, FP = Σv - c -> J = δ / (2 - δ).
    shown = np.zeros_like(case["gt_occluded"])
    m = compute_tapvid_metrics(**{**case, "gt_occluded": shown, "pred_occluded": shown})
    if n_eval:
        for d in THRESHOLDS:
            w = m.pts_within[d]
            assert m.jaccard[d] == pytest.approx(w / (2 - w))
