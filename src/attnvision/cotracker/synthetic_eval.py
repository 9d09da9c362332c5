"""How well a CoTracker3 tracks on held-out synthetic videos: the TAP-Vid metrics against
exact tracks, and frames per second.

The clips (:func:`held_out_clips`) are the test split of :mod:`attnvision.data.moving_scenes`
(backgrounds and textures training never sees); the first, third, ... have a forced
occlusion (an object wholly hidden for 3+ frames, visible before and after), the others none,
so occlusion accuracy is measured on points that do disappear. A clip's truth is exact:
:meth:`~attnvision.data.moving_scenes.Clip.track` maps any point of frame 0 through every
frame and reads its visibility from the masks.

The protocol (:func:`evaluate_clips`):

- *Queries.* ``points`` points of frame 0 per clip (:func:`clip_queries`): about half on
  objects (uniform over their pixels) and half on the background, each at a random place
  within its pixel, from a random stream of the clip's seed, so the same clip always gets the
  same points. All of a clip's points are tracked together in one call, as a user would.
- *Scores.* :func:`attnvision.cotracker.metrics.compute_tapvid_metrics` in ``"first"`` mode
  (frames after the query frame), at the clip's own size (the metrics rescale to 256 x 256
  as the benchmark does): occlusion accuracy, δ^x and Jaccard at 1, 2, 4, 8, 16 pixels, their
  averages δ_avg and AJ. Each clip is scored alone and the scores are averaged over clips,
  as TAP-Vid averages over videos.
- *Speed.* ``fps``: frames tracked over the wall time of the tracker's calls (resizing, the
  model, the tracks back to the CPU), clips already in memory; scoring is left out.

The tracker is a parameter (:data:`Tracker`: frames and queries in, tracks and visibility
out), so the protocol is tested with fakes whose scores are known;
:func:`cotracker_tracker` makes the real one from a model, offline
(:class:`~attnvision.cotracker.predictor.CoTrackerPredictor`, with its support grid) or
online (:func:`~attnvision.cotracker.predictor.track_online`, the official chunk loop, which
``attnvision track --online`` also runs over a video decoded frame by frame).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from attnvision.cotracker.metrics import (
    TapVidMetrics,
    compute_tapvid_metrics,
    mean_tapvid_metrics,
)
from attnvision.cotracker.model import CoTracker3
from attnvision.cotracker.predictor import (
    CoTrackerOnlinePredictor,
    CoTrackerPredictor,
    track_online,
    video_tensor,
)
from attnvision.data.moving_scenes import MIN_OCCLUSION_FRAMES, Clip, make_clip
from attnvision.errors import UserError

ON_OBJECTS = 0.5  # share of a clip's query points placed on objects
QUERY_STREAM = 23  # the random stream of a clip's seed its query points come from

# frames (T, H, W, 3) uint8 and queries (N, 3) (t, x, y) pixels -> tracks (T, N, 2) float32
# (x, y) pixels and visibility (T, N) bool.
Tracker = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def held_out_clips(count: int = 50, frames: int = 24, size: int = 256,
                   first_seed: int = 0) -> list[Clip]:
    """``count`` clips of the test split, seeds ``first_seed``, ``first_seed + 1``, ...:
    ``frames`` frames of ``size`` x ``size``; the first, third, ... with a forced occlusion
    when ``frames`` allows one (5 or more), the others with none. Deterministic."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"the number of clips must be 1 or more, not {count!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise UserError(f"tracking is measured on the frames after the first: give clips of "
                        f"2 frames or more, not {frames!r}")
    occlusions = frames >= MIN_OCCLUSION_FRAMES
    return [make_clip(first_seed + k, split="test", size=size, frames=frames,
                      occlusion=occlusions and k % 2 == 0) for k in range(count)]


def clip_queries(clip: Clip, points: int) -> np.ndarray:
    """(points, 3) float32 queries (0, x, y) of frame 0 (module doc); deterministic."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise UserError(f"the number of query points must be 1 or more, not {points!r}")
    rng = np.random.default_rng([clip.seed, QUERY_STREAM])
    xy = clip.sample_tracks(points, rng, frame=0, on_objects=ON_OBJECTS)
    return np.concatenate([np.zeros((points, 1), np.float32), xy], axis=1)


def score_clip(clip: Clip, queries: np.ndarray, tracks: np.ndarray, visible: np.ndarray
               ) -> TapVidMetrics:
    """The TAP-Vid metrics ("first" mode) of one clip's predicted (T, N, 2) tracks and
    (T, N) visibility for its (N, 3) queries of frame 0, against the exact tracks."""
    queries = np.asarray(queries, np.float64)
    gt_xy, gt_visible = clip.track(queries[:, 1:], frame=0)
    tracks, visible = np.asarray(tracks), np.asarray(visible, bool)
    if tracks.shape != gt_xy.shape or visible.shape != gt_visible.shape:
        raise ValueError(f"the tracker gave tracks {tracks.shape} and visibility "
                         f"{visible.shape} for clip {clip.seed}; expected {gt_xy.shape} and "
                         f"{gt_visible.shape}")
    return compute_tapvid_metrics(
        queries, ~gt_visible.T, gt_xy.transpose(1, 0, 2), ~visible.T,
        tracks.transpose(1, 0, 2), frame_size=clip.masks.shape[1:], query_mode="first")


def evaluate_clips(tracker: Tracker, clips: Sequence[Clip], points: int = 64,
                   progress: bool = False,
                   on_clip: Callable[[Clip, np.ndarray, np.ndarray, np.ndarray], None]
                   | None = None) -> dict[str, Any]:
    """Track ``points`` query points of frame 0 through each clip and score them (module
    doc).

    Returns the means over clips under the metrics' own names ("average_jaccard" (AJ),
    "average_pts_within_thresh" (δ_avg), "occlusion_accuracy", "pts_within_1".. and
    "jaccard_1"..), "clips", "points", "fps", "seconds", "tracked_frames" and "per_clip"
    (each clip's seed, whether it has an occlusion, the share of its (point, frame) pairs
    visible in the truth, and its metrics). ``on_clip(clip, queries, tracks, visible)`` sees
    each clip's predictions (pictures)."""
    records: list[dict[str, Any]] = []
    per_clip: list[TapVidMetrics] = []
    seconds, tracked = 0.0, 0
    for clip in tqdm(clips, desc="eval track", unit="clip", file=sys.stderr,
                     disable=not progress):
        queries = clip_queries(clip, points)
        start = time.perf_counter()
        tracks, visible = tracker(clip.frames, queries)
        seconds += time.perf_counter() - start
        tracked += len(clip.frames)
        metrics = score_clip(clip, queries, tracks, visible)
        per_clip.append(metrics)
        _, gt_visible = clip.track(queries[:, 1:], frame=0)
        records.append({"seed": clip.seed, "occluded": clip.occlusion is not None,
                        "visible_share": float(gt_visible[1:].mean()) if len(clip.frames) > 1
                        else 1.0, **metrics.as_dict()})
        if on_clip is not None:
            on_clip(clip, queries, np.asarray(tracks), np.asarray(visible, bool))
    if not per_clip:
        raise UserError("no clips to evaluate: give 1 or more")
    return {**mean_tapvid_metrics(per_clip).as_dict(), "clips": len(records),
            "points": points, "fps": tracked / seconds if seconds > 0 else 0.0,
            "seconds": seconds, "tracked_frames": tracked, "per_clip": records}


def sweep_visibility(tracker: Tracker, clips: Sequence[Clip], thresholds: Sequence[float],
                     points: int = 64, progress: bool = False) -> list[dict[str, Any]]:
    """The metrics of each visibility threshold, with one tracking pass per clip.

    ``tracker`` returns visibility *scores* (a :func:`cotracker_tracker` with ``scores``),
    which each threshold cuts into the booleans :func:`evaluate_clips` would have scored,
    the same queries and per-clip means. Returns one row per threshold, in order: the
    ``threshold`` and the means of "occlusion_accuracy", "average_jaccard" and
    "average_pts_within_thresh" (δ_avg, which visibility does not change). A threshold where
    the tracker's own cut would be gives the figures :func:`evaluate_clips` reports."""
    cuts = [float(t) for t in thresholds]
    if not cuts:
        raise UserError("give 1 or more visibility thresholds to try")
    per_cut: list[list[TapVidMetrics]] = [[] for _ in cuts]
    for clip in tqdm(clips, desc="sweep visibility", unit="clip", file=sys.stderr,
                     disable=not progress):
        queries = clip_queries(clip, points)
        tracks, scores = tracker(clip.frames, queries)
        scores = np.asarray(scores, np.float64)
        for metrics, cut in zip(per_cut, cuts, strict=True):
            metrics.append(score_clip(clip, queries, tracks, scores > cut))
    if not per_cut[0]:
        raise UserError("no clips to evaluate: give 1 or more")
    names = ("occlusion_accuracy", "average_jaccard", "average_pts_within_thresh")
    rows = []
    for cut, metrics in zip(cuts, per_cut, strict=True):
        mean = mean_tapvid_metrics(metrics).as_dict()
        rows.append({"threshold": cut, **{name: mean[name] for name in names}})
    return rows


# ---------------------------------------------------------------------------------------------
# The real tracker


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside (the predictors set it); every module's training flag as it was
    after, so a trainer can evaluate between epochs."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def cotracker_tracker(model: CoTracker3, online: bool = False, scores: bool = False
                      ) -> Tracker:
    """A :data:`Tracker` of ``model``: the offline predictor (its 6 x 6 support grid joins the
    queries, as the official one adds), or with ``online`` the online predictor over the
    frames in chunks (:func:`track_online`, the same support grid). Visibility is cut at the
    model's own thresholds; with ``scores`` it is the predictors' float scores instead (for
    :func:`sweep_visibility`)."""
    device = next(model.parameters()).device

    def offline_tracker(frames: np.ndarray, queries: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
        with _eval_mode(model):
            predictor = CoTrackerPredictor(model)
            predictor.return_scores = scores
            q = torch.as_tensor(np.asarray(queries, np.float32), device=device)[None]
            tracks, visible = predictor(video_tensor(frames, device), queries=q)
        visible = visible[0].cpu()
        return (tracks[0].float().cpu().numpy(),
                visible.float().numpy() if scores else visible.numpy().astype(bool))

    def online_tracker(frames: np.ndarray, queries: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        with _eval_mode(model):
            predictor = CoTrackerOnlinePredictor(model)
            predictor.return_scores = scores
            return track_online(predictor, frames, queries=queries, add_support_grid=True)

    return online_tracker if online else offline_tracker
