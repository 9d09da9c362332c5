"""Where CoTracker cuts visibility: the official thresholds by default, a file's own ones from
its header, the predictors' scores behind the booleans, the sweep that reads every cut from one
tracking pass, and the recipe step that chooses the cuts on validation clips."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cotracker_helpers import SMALL, small_cotracker_weights
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from attnvision.cotracker import CoTracker3, build_cotracker
from attnvision.cotracker.checkpoints import THRESHOLD_KEYS, stored_thresholds
from attnvision.cotracker.configs import OFFLINE_THRESHOLD, ONLINE_THRESHOLD, CoTrackerConfig
from attnvision.cotracker.predictor import (
    CoTrackerOnlinePredictor,
    CoTrackerPredictor,
    track_online,
    video_tensor,
)
from attnvision.cotracker.synthetic_eval import (
    clip_queries,
    cotracker_tracker,
    evaluate_clips,
    held_out_clips,
    sweep_visibility,
)
from attnvision.errors import UserError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def with_header(path: Path, **header: str) -> Path:
    """The small model's weights with ``header`` as the file's metadata."""
    tensors = load_file(str(small_cotracker_weights(path)))
    save_file(tensors, str(path), metadata={"format": "pt", **header})
    return path


def test_the_official_cuts_are_the_default_and_a_cut_must_be_a_probability():
    assert (CoTrackerConfig().offline_threshold, CoTrackerConfig().online_threshold) == (
        OFFLINE_THRESHOLD, ONLINE_THRESHOLD) == (0.9, 0.6)
    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(ValueError, match="online_threshold must be in"):
            CoTrackerConfig(online_threshold=bad)


def test_a_file_of_ours_carries_its_cuts_and_an_official_file_has_none(tmp_path):
    header = {THRESHOLD_KEYS["offline_threshold"]: "0.7"}
    path = with_header(tmp_path / "ours.safetensors", **header)
    assert stored_thresholds(path) == {"offline_threshold": 0.7}  # online stays official
    model = build_cotracker(path, model_resolution=SMALL.model_resolution)
    assert (model.config.offline_threshold, model.config.online_threshold) == (0.7, 0.6)
    both = with_header(tmp_path / "both.safetensors", offline_visible_threshold="0.35",
                       online_visible_threshold="0.5")
    online = build_cotracker(both, offline=False, model_resolution=SMALL.model_resolution)
    assert (online.config.offline_threshold, online.config.online_threshold) == (0.35, 0.5)
    official = tmp_path / "scaled_offline.pth"
    torch.save(load_file(str(path)), official)
    assert stored_thresholds(official) == {}
    assert build_cotracker(official, model_resolution=SMALL.model_resolution
                           ).config.offline_threshold == OFFLINE_THRESHOLD


@pytest.mark.parametrize("value", ["high", "1.5", "-0.2"])
def test_a_bad_cut_in_a_header_is_one_line_naming_the_key(tmp_path, value):
    path = with_header(tmp_path / "bad.safetensors", online_visible_threshold=value)
    with pytest.raises(UserError, match="online_visible_threshold") as err:
        build_cotracker(path, model_resolution=SMALL.model_resolution)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def video_and_queries(frames: int = 8):
    clip = held_out_clips(1, frames, 48)[0]
    return clip, clip_queries(clip, 6)


@pytest.mark.parametrize("cut", [None, 0.3, 0.75])
def test_the_offline_predictor_cuts_its_own_scores_at_the_models_threshold(cut):
    torch.manual_seed(0)
    config = SMALL if cut is None else replace(SMALL, offline_threshold=cut)
    model = CoTracker3(config).eval()
    clip, queries = video_and_queries()
    video, q = video_tensor(clip.frames), torch.from_numpy(queries)[None]
    tracks, visible = CoTrackerPredictor(model)(video, queries=q)
    scorer = CoTrackerPredictor(model)
    scorer.return_scores = True
    same_tracks, scores = scorer(video, queries=q)
    assert visible.dtype == torch.bool and scores.is_floating_point()
    assert torch.equal(tracks, same_tracks)
    assert torch.equal(visible, scores > (OFFLINE_THRESHOLD if cut is None else cut))
    assert bool(scores[0, 0].eq(1).all())  # each query is visible at its own frame
    # A cut given to the predictor wins over the model's.
    _, mine = CoTrackerPredictor(model, visible_threshold=0.5)(video, queries=q)
    assert torch.equal(mine, scores > 0.5)


@pytest.mark.parametrize("cut", [None, 0.2])
def test_the_online_predictor_cuts_visibility_times_confidence_at_the_models_threshold(cut):
    torch.manual_seed(0)
    config = replace(SMALL, offline=False)
    model = CoTracker3(config if cut is None else replace(config, online_threshold=cut)).eval()
    clip, queries = video_and_queries(13)
    tracks, visible = track_online(CoTrackerOnlinePredictor(model), iter(clip.frames),
                                   queries=queries, add_support_grid=True)
    scorer = CoTrackerOnlinePredictor(model)
    scorer.return_scores = True
    same_tracks, scores = track_online(scorer, iter(clip.frames), queries=queries,
                                       add_support_grid=True)
    assert visible.dtype == bool and scores.dtype == np.float32
    np.testing.assert_array_equal(tracks, same_tracks)
    assert np.array_equal(visible, scores > (ONLINE_THRESHOLD if cut is None else cut))


@pytest.fixture(scope="module")
def clips():
    return held_out_clips(3, 8, 48)


@pytest.mark.parametrize("online", [False, True])
def test_the_sweep_reads_each_cut_as_evaluating_at_that_cut_would(clips, online):
    """One pass of scores, cut at each threshold, gives what evaluate_clips reports for a
    model whose own cut it is."""
    torch.manual_seed(0)
    config = replace(SMALL, offline=not online)
    model = CoTracker3(config).eval()
    cuts = [0.1, 0.5, 0.9]
    rows = sweep_visibility(cotracker_tracker(model, online=online, scores=True), clips, cuts,
                            points=6)
    assert [r["threshold"] for r in rows] == cuts
    for row in rows:
        key = "online_threshold" if online else "offline_threshold"
        cut_model = CoTracker3(replace(config, **{key: row["threshold"]}))
        cut_model.load_state_dict(model.state_dict())
        want = evaluate_clips(cotracker_tracker(cut_model.eval(), online=online), clips,
                              points=6)
        for name in ("occlusion_accuracy", "average_jaccard", "average_pts_within_thresh"):
            assert row[name] == pytest.approx(want[name], abs=1e-12)
    # δ_avg is scored on the truly visible points: no cut changes it.
    assert len({r["average_pts_within_thresh"] for r in rows}) == 1


def test_the_sweep_with_known_scores(clips):
    """A tracker at the true places whose score is 0.8 where the point is visible and 0.3
    where hidden: every cut in between is right everywhere, one above 0.8 calls all hidden."""
    def tracker(frames, queries):
        clip = next(c for c in clips if c.frames is frames)
        xy, visible = clip.track(np.asarray(queries)[:, 1:], frame=0)
        return xy.astype(np.float32), np.where(visible, 0.8, 0.3)

    low, right, high = sweep_visibility(tracker, clips, [0.2, 0.5, 0.85], points=8)
    assert right["occlusion_accuracy"] == 1.0 and right["average_jaccard"] == 1.0
    assert low["occlusion_accuracy"] < 1.0 or all(c.occlusion is None for c in clips)
    assert high["average_jaccard"] == 0.0
    with pytest.raises(UserError, match="thresholds"):
        sweep_visibility(tracker, clips, [], points=8)


def load_recipe():
    spec = importlib.util.spec_from_file_location("cotracker_visibility",
                                                  RECIPES / "cotracker_visibility.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def row(threshold, oa, aj):
    return {"threshold": threshold, "occlusion_accuracy": oa, "average_jaccard": aj,
            "average_pts_within_thresh": 0.7}


def test_the_rule_takes_the_best_aj_without_a_loss_of_occlusion_accuracy():
    choose = load_recipe().choose
    rows = [row(0.35, 0.93, 0.54), row(0.6, 0.88, 0.55), row(0.7, 0.91, 0.553),
            row(0.75, 0.90, 0.553), row(0.9, 0.85, 0.545)]
    assert choose(rows, 0.9)["threshold"] == 0.75  # an AJ tie: the cut nearer 0.9
    assert choose(rows, 0.6)["threshold"] == 0.7  # ... nearer 0.6
    # The best AJ would lose occlusion accuracy against the official cut: the official cut.
    worse = [row(0.5, 0.80, 0.56), row(0.9, 0.85, 0.545)]
    assert choose(worse, 0.9)["threshold"] == 0.9


def test_the_step_rewrites_only_the_header_and_the_file_then_cuts_there(tmp_path):
    ship = load_recipe().ship
    path = with_header(tmp_path / "tiny.safetensors", model_resolution="64,96", seed="11")
    before = load_file(str(path))
    ship(str(path), {"offline": 0.7, "online": 0.45}, str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["model_resolution"] == "64,96" and meta["seed"] == "11"
    assert "cotracker_visibility.py" in json.loads(meta["visibility_from"])
    after = load_file(str(path))
    assert all(torch.equal(after[k], v) for k, v in before.items())
    model = build_cotracker(path)
    assert (model.config.offline_threshold, model.config.online_threshold) == (0.7, 0.45)
    assert model.model_resolution == (64, 96)
