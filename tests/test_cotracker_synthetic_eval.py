"""CoTracker3 on held-out synthetic clips (attnvision.cotracker.synthetic_eval): the clips and
their query points, the protocol with fake trackers whose scores are known, the real small
model offline and online, and the streaming online loop against the official one."""

import numpy as np
import pytest
import torch
from cotracker_helpers import RESOLUTION, SMALL

from attnvision.cotracker import CoTracker3, CoTrackerOnlinePredictor
from attnvision.cotracker.metrics import THRESHOLDS
from attnvision.cotracker.predictor import track_online, video_tensor
from attnvision.cotracker.synthetic_eval import (
    clip_queries,
    cotracker_tracker,
    evaluate_clips,
    held_out_clips,
    score_clip,
)
from attnvision.errors import UserError

T, S, P = 8, 64, 24


@pytest.fixture(scope="module")
def clips():
    return held_out_clips(3, T, S)


def truth(clip, queries):
    return clip.track(np.asarray(queries)[:, 1:], frame=0)


def fake(clips, answer):
    """A tracker that looks the clip up by its frames and answers from its truth."""
    def tracker(frames, queries):
        clip = next(c for c in clips if c.frames is frames)
        return answer(clip, queries)
    return tracker


# -- the clips and the queries ------------------------------------------------------------------

def test_clips_are_deterministic_and_every_other_one_occluded(clips):
    again = held_out_clips(3, T, S)
    assert [c.seed for c in clips] == [0, 1, 2] and {c.split for c in clips} == {"test"}
    for a, b in zip(clips, again, strict=True):
        assert np.array_equal(a.frames, b.frames) and a.frames.shape == (T, S, S, 3)
    assert [c.occlusion is not None for c in clips] == [True, False, True]
    assert all(c.occlusion is None for c in held_out_clips(2, 4, 32))  # too short for one
    for bad in ({"count": 0}, {"frames": 1}, {"count": True}):
        with pytest.raises(UserError):
            held_out_clips(**bad)


def test_queries_are_deterministic_half_on_objects_and_visible_at_first(clips):
    for clip in clips:
        queries = clip_queries(clip, P)
        assert queries.shape == (P, 3) and queries.dtype == np.float32
        assert np.array_equal(queries, clip_queries(clip, P)) and (queries[:, 0] == 0).all()
        on_objects = clip.owner(queries[:, 1:], 0) > 0
        assert on_objects.sum() == P // 2
        _, visible = truth(clip, queries)
        assert visible[0].all()
    assert not np.array_equal(clip_queries(clips[0], P), clip_queries(clips[1], P))
    with pytest.raises(UserError):
        clip_queries(clips[0], 0)


# -- the protocol, with fakes whose scores are known ---------------------------------------------

def test_a_perfect_tracker_scores_one_everywhere(clips):
    result = evaluate_clips(fake(clips, truth), clips, P)
    for d in THRESHOLDS:
        assert result[f"pts_within_{d}"] == 1.0 and result[f"jaccard_{d}"] == 1.0
    assert result["average_jaccard"] == result["average_pts_within_thresh"] == 1.0
    assert result["occlusion_accuracy"] == 1.0
    assert (result["clips"], result["points"], result["tracked_frames"]) == (3, P, 3 * T)
    assert result["fps"] > 0 and result["seconds"] > 0
    assert [r["seed"] for r in result["per_clip"]] == [0, 1, 2]
    assert [r["occluded"] for r in result["per_clip"]] == [True, False, True]
    assert all(0 < r["visible_share"] <= 1 and r["average_jaccard"] == 1.0
               for r in result["per_clip"])


def test_right_places_all_called_hidden(clips):
    """δ^x only asks where visible points are: 1. Nothing predicted visible: no true
    positive, Jaccard 0. Occlusion accuracy: the share of hidden (point, frame) pairs."""
    def hidden(clip, queries):
        xy, visible = truth(clip, queries)
        return xy, np.zeros_like(visible)

    result = evaluate_clips(fake(clips, hidden), clips, P)
    shares = [1 - truth(c, clip_queries(c, P))[1][1:].mean() for c in clips]
    assert result["occlusion_accuracy"] == pytest.approx(np.mean(shares))
    assert result["average_pts_within_thresh"] == 1.0 and result["average_jaccard"] == 0.0


def test_a_shift_of_12_pixels_at_256_passes_only_the_16_pixel_threshold(clips):
    """3 px in a 64 px clip is 12 px in the metrics' 256 x 256 frame: within 16, not 8."""
    def shifted(clip, queries):
        xy, visible = truth(clip, queries)
        return xy + np.array([3.0, 0.0], np.float32), visible

    result = evaluate_clips(fake(clips, shifted), clips, P)
    for d in THRESHOLDS:
        want = 1.0 if d == 16 else 0.0
        assert result[f"pts_within_{d}"] == want and result[f"jaccard_{d}"] == want, d
    assert result["average_jaccard"] == pytest.approx(0.2)
    assert result["occlusion_accuracy"] == 1.0


def test_each_clip_is_seen_and_a_wrong_shape_is_refused(clips):
    seen = []
    evaluate_clips(fake(clips, truth), clips[:2], 4,
                   on_clip=lambda clip, q, tracks, vis: seen.append((clip.seed, tracks.shape)))
    assert seen == [(0, (T, 4, 2)), (1, (T, 4, 2))]
    with pytest.raises(ValueError, match="expected"):
        evaluate_clips(fake(clips, lambda c, q: (truth(c, q)[0][:, :2], truth(c, q)[1])),
                       clips[:1], 4)
    queries = clip_queries(clips[0], 4)
    metrics = score_clip(clips[0], queries, *truth(clips[0], queries))
    assert metrics.average_jaccard == 1.0


# -- the real model ----------------------------------------------------------------------------

def small_model(offline: bool) -> CoTracker3:
    torch.manual_seed(0)
    from dataclasses import replace

    return CoTracker3(replace(SMALL, offline=offline))


@pytest.mark.parametrize("offline", [True, False])
def test_the_small_model_offline_and_online(clips, offline):
    model = small_model(offline).train()
    result = evaluate_clips(cotracker_tracker(model, online=not offline), clips[:2], 8)
    for key in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy"):
        assert 0 <= result[key] <= 1
    assert model.training and all(m.training for m in model.modules())  # left as it was
    assert model.model_resolution == RESOLUTION


@pytest.mark.parametrize("frames", [3, 4, 8, 10, 13])
def test_streaming_online_equals_the_official_loop(frames):
    """Chunks sent as their frames arrive are the official video[ind : ind + 2 step]; a clip
    no longer than a step is sent whole (the official loop would send nothing)."""
    clip = held_out_clips(1, frames, 48)[0]
    queries = clip_queries(clip, 5)
    model = small_model(False).eval()
    step_calls = []
    tracks, visible = track_online(CoTrackerOnlinePredictor(model), iter(clip.frames),
                                   queries=queries, add_support_grid=True,
                                   on_frames=step_calls.append)
    assert tracks.shape == (frames, 5, 2) and visible.shape == (frames, 5)
    assert sum(step_calls) == frames

    predictor = CoTrackerOnlinePredictor(model)
    video = video_tensor(clip.frames)
    predictor(video, is_first_step=True, queries=torch.from_numpy(queries)[None],
              add_support_grid=True)
    step = predictor.step
    for ind in range(0, frames - step, step) or [0]:
        want_tracks, want_visible = predictor(video[:, ind:ind + 2 * step])
    np.testing.assert_allclose(tracks, want_tracks[0].numpy(), atol=1e-4)
    assert np.array_equal(visible, want_visible[0].numpy())
