"""TAP-Vid point-tracking metrics: occlusion accuracy, δ^x, Jaccard, AJ (numpy, no torch).

The metrics of the TAP-Vid benchmark (Doersch et al., "TAP-Vid: A Benchmark for Tracking Any
Point in a Video", NeurIPS 2022), as ``compute_tapvid_metrics`` in google-deepmind/tapnet
(``tapnet/tapvid/evaluation_datasets.py``) defines them. Written from that definition, not
copied; the tests work every number out by hand.

Conventions
-----------
* One video has N query points and T frames. Query points are ``(t, x, y)`` in pixels, the
  order CoTracker's queries use (tapnet writes ``(t, y, x)``); only ``t`` enters the metrics.
  A fractional ``t`` is rounded as ``np.round`` rounds (half to even), as the reference does.
* Tracks are ``(N, T, 2)`` as ``(x, y)`` pixels of a frame of ``frame_size = (H, W)``;
  ``occluded`` is ``(N, T)`` bool, True where the point is hidden (not "visible").
* Positions are compared in a 256×256 frame, as the benchmark does after resizing every video
  to 256×256: both tracks are scaled by ``x·256/W``, ``y·256/H`` before any distance is taken.
  That is tapnet's ``points * (W, H)`` from [0, 1] coordinates (a pure scale, no half-pixel
  shift). CoTracker's TAP-Vid reader maps [0, 1] to [0, 255] instead (a scale by
  ``(W-1, H-1)``): a relative difference of 1/256, up to one pixel at the far edge of the
  256×256 frame. This module follows tapnet.

Which frames count
------------------
A point's query frame ``q`` is never evaluated (the tracker was given it).

* ``"first"``: only frames ``t > q``. The query is the first visible point of its track, so the
  frames before it are known to be occluded and are left out.
* ``"strided"``: every frame ``t != q``, before and after the query.

Call the evaluated (point, frame) pairs E, gt-visible ``v = ~gt_occluded``, predicted visible
``p = ~pred_occluded``, and for a threshold δ ∈ {1, 2, 4, 8, 16} (pixels at 256×256)
``close_δ = |pred - gt|₂ < δ`` (Euclidean, strict). Sums run over E of one video:

* occlusion_accuracy = Σ[p == v] / |E|
* pts_within_δ = Σ[v ∧ close_δ] / Σ[v]  (position accuracy among gt-visible points, whatever
  the predicted visibility); average_pts_within_thresh (δ_avg) = mean over the five δ.
* jaccard_δ = TP / (TP + FP + FN) with
  TP = Σ[v ∧ p ∧ close_δ]  (visible, predicted visible, close enough);
  FP = Σ[p ∧ (¬v ∨ ¬close_δ)]  (predicted visible, but occluded in gt or too far);
  FN = Σ[v ∧ (¬p ∨ ¬close_δ)]  (visible in gt, but predicted occluded or too far).
  A visible point predicted visible but too far is both a FP and a FN. Since TP + FN = Σ[v],
  the denominator is Σ[v] + FP, which is how the reference computes it.
  average_jaccard (AJ) = mean over the five δ.

Each video gets its own numbers; a benchmark score is the plain mean of the per-video numbers
(not pooled over all points), as the reference states. A video with nothing to divide by (no
evaluated frame, or no gt-visible evaluated point) gets NaN for the affected metrics, as in
the reference, and a NaN carries into the mean; no warning is raised. NaN positions are never
"close", so NaN predictions or NaN gt at occluded frames need no special care.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

THRESHOLDS: tuple[int, ...] = (1, 2, 4, 8, 16)  # δ in pixels of a 256×256 frame
METRIC_FRAME_SIZE = 256
QUERY_MODES = ("first", "strided")
QueryMode = Literal["first", "strided"]


@dataclass(frozen=True)
class TapVidMetrics:
    """TAP-Vid metrics of one video (or their mean over videos), each in [0, 1] or NaN.

    ``pts_within`` and ``jaccard`` map each threshold δ (1, 2, 4, 8, 16) to its value.
    """

    occlusion_accuracy: float
    pts_within: dict[int, float]
    jaccard: dict[int, float]
    average_pts_within_thresh: float  # δ_avg
    average_jaccard: float  # AJ

    def as_dict(self) -> dict[str, float]:
        """Flat dict with the reference's key names (``pts_within_4``, ``jaccard_16``, ...)."""
        out = {"occlusion_accuracy": self.occlusion_accuracy}
        out.update({f"pts_within_{d}": v for d, v in self.pts_within.items()})
        out.update({f"jaccard_{d}": v for d, v in self.jaccard.items()})
        out["average_pts_within_thresh"] = self.average_pts_within_thresh
        out["average_jaccard"] = self.average_jaccard
        return out


@dataclass(frozen=True)
class TapVidBatchMetrics:
    """Per-video metrics of a batch and their mean over videos (how the benchmark averages)."""

    per_video: tuple[TapVidMetrics, ...]
    mean: TapVidMetrics


def evaluation_mask(query_frames: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(N,) integer query frames -> (N, T) bool: which (point, frame) pairs are evaluated.

    ``"first"``: frames after the query frame; ``"strided"``: all frames but the query frame.
    """
    _check_mode(query_mode)
    frames = np.arange(num_frames)[None, :]
    q = np.asarray(query_frames)[:, None]
    return frames > q if query_mode == "first" else frames != q


def rescale_tracks(
    tracks: np.ndarray, frame_size: tuple[int, int], size: int = METRIC_FRAME_SIZE
) -> np.ndarray:
    """(..., 2) ``(x, y)`` pixels of an (H, W) frame -> the same points in a size×size frame."""
    h, w = _check_frame_size(frame_size)
    scale = np.array([size / w, size / h], dtype=np.float64)
    return np.asarray(tracks, dtype=np.float64) * scale


def compute_tapvid_metrics(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    *,
    frame_size: tuple[int, int],
    query_mode: QueryMode = "first",
) -> TapVidMetrics:
    """TAP-Vid metrics of one video (see the module docstring for the formulas).

    Args:
        query_points: (N, 3) ``(t, x, y)``; only the frame ``t`` is used.
        gt_occluded: (N, T) bool, True = occluded in the ground truth.
        gt_tracks: (N, T, 2) ground-truth ``(x, y)`` in pixels of an (H, W) frame.
        pred_occluded: (N, T) bool, predicted occlusion.
        pred_tracks: (N, T, 2) predicted ``(x, y)`` in the same pixels.
        frame_size: (H, W) of the frame the tracks are in; rescaled to 256×256 to compare.
        query_mode: ``"first"`` or ``"strided"`` (which frames are evaluated).
    """
    _check_mode(query_mode)
    q, gt_occ, gt, pred_occ, pred = _check_video(
        query_points, gt_occluded, gt_tracks, pred_occluded, pred_tracks
    )
    return _video_metrics(q, gt_occ, gt, pred_occ, pred, frame_size, query_mode)


def compute_tapvid_metrics_batch(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    *,
    frame_size: tuple[int, int],
    query_mode: QueryMode = "first",
) -> TapVidBatchMetrics:
    """The reference's batched layout: a leading video axis B on every array (B, N, ...).

    Each video is scored alone, then the scores are averaged over videos.
    """
    _check_mode(query_mode)
    arrays = [np.asarray(a) for a in (query_points, gt_occluded, gt_tracks, pred_occluded,
                                      pred_tracks)]
    if arrays[0].ndim != 3:
        raise ValueError(f"query_points must be (B, N, 3), got shape {arrays[0].shape}")
    b = arrays[0].shape[0]
    names = ("query_points", "gt_occluded", "gt_tracks", "pred_occluded", "pred_tracks")
    for name, a in zip(names, arrays, strict=True):
        if a.ndim == 0 or a.shape[0] != b:
            raise ValueError(f"{name} has shape {a.shape}; expected a leading batch axis of {b}")
    per_video = tuple(
        compute_tapvid_metrics(*(a[i] for a in arrays), frame_size=frame_size,
                               query_mode=query_mode)
        for i in range(b)
    )
    return TapVidBatchMetrics(per_video=per_video, mean=mean_tapvid_metrics(per_video))


def mean_tapvid_metrics(per_video: Sequence[TapVidMetrics]) -> TapVidMetrics:
    """Plain mean over videos of each metric (the benchmark's score); NaN propagates."""
    if len(per_video) == 0:
        raise ValueError("mean_tapvid_metrics needs at least one video")

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(np.asarray(values, dtype=np.float64)))

    return TapVidMetrics(
        occlusion_accuracy=mean([m.occlusion_accuracy for m in per_video]),
        pts_within={d: mean([m.pts_within[d] for m in per_video]) for d in THRESHOLDS},
        jaccard={d: mean([m.jaccard[d] for m in per_video]) for d in THRESHOLDS},
        average_pts_within_thresh=mean([m.average_pts_within_thresh for m in per_video]),
        average_jaccard=mean([m.average_jaccard for m in per_video]),
    )


# --- internals ------------------------------------------------------------------------------


def _video_metrics(
    query_frames: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
    frame_size: tuple[int, int],
    query_mode: str,
) -> TapVidMetrics:
    evaluated = evaluation_mask(query_frames, gt_occluded.shape[1], query_mode)
    visible = ~gt_occluded
    pred_visible = ~pred_occluded
    gt = rescale_tracks(gt_tracks, frame_size)
    pred = rescale_tracks(pred_tracks, frame_size)
    with np.errstate(invalid="ignore"):  # NaN positions compare as "not close"
        sq_dist = np.sum(np.square(pred - gt), axis=-1)

    n_eval = int(evaluated.sum())
    n_visible = int((visible & evaluated).sum())  # TP + FN, for every δ
    occ_acc = _ratio(int(((pred_visible == visible) & evaluated).sum()), n_eval)

    pts_within: dict[int, float] = {}
    jaccard: dict[int, float] = {}
    for d in THRESHOLDS:
        with np.errstate(invalid="ignore"):
            close = sq_dist < d * d
        correct = visible & close & evaluated
        tp = int((correct & pred_visible).sum())
        fp = int((pred_visible & (~visible | ~close) & evaluated).sum())
        pts_within[d] = _ratio(int(correct.sum()), n_visible)
        jaccard[d] = _ratio(tp, n_visible + fp)
    return TapVidMetrics(
        occlusion_accuracy=occ_acc,
        pts_within=pts_within,
        jaccard=jaccard,
        average_pts_within_thresh=float(np.mean(list(pts_within.values()))),
        average_jaccard=float(np.mean(list(jaccard.values()))),
    )


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def _check_mode(query_mode: str) -> None:
    if query_mode not in QUERY_MODES:
        raise ValueError(f"query_mode must be 'first' or 'strided', got {query_mode!r}")


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    if len(frame_size) != 2 or any(int(s) != s or s <= 0 for s in frame_size):
        raise ValueError(f"frame_size must be (H, W) positive integers, got {frame_size!r}")
    return int(frame_size[0]), int(frame_size[1])


def _check_occlusion(name: str, a: np.ndarray) -> np.ndarray:
    if a.dtype != np.bool_:
        if not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (True = occluded), got values other than 0/1")
        a = a.astype(bool)
    return a


def _check_video(
    query_points: np.ndarray,
    gt_occluded: np.ndarray,
    gt_tracks: np.ndarray,
    pred_occluded: np.ndarray,
    pred_tracks: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    qp = np.asarray(query_points, dtype=np.float64)
    gt_occ = np.asarray(gt_occluded)
    pred_occ = np.asarray(pred_occluded)
    gt = np.asarray(gt_tracks, dtype=np.float64)
    pred = np.asarray(pred_tracks, dtype=np.float64)
    if gt_occ.ndim != 2:
        raise ValueError(f"gt_occluded must be (N, T), got shape {gt_occ.shape}")
    n, t = gt_occ.shape
    expected = {
        "query_points": (qp, (n, 3)),
        "gt_tracks": (gt, (n, t, 2)),
        "pred_occluded": (pred_occ, (n, t)),
        "pred_tracks": (pred, (n, t, 2)),
    }
    for name, (a, shape) in expected.items():
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape} (N={n}, T={t}), got {a.shape}")
    frames = qp[:, 0]
    if not np.isfinite(frames).all():
        raise ValueError("query_points frame t must be finite")
    q = np.round(frames).astype(np.int64)
    if ((q < 0) | (q >= t)).any():
        raise ValueError(f"query frames must lie in [0, {t - 1}], got {q.min()}..{q.max()}")
    gt_occ = _check_occlusion("gt_occluded", gt_occ)
    pred_occ = _check_occlusion("pred_occluded", pred_occ)
    return q, gt_occ, gt, pred_occ, pred
