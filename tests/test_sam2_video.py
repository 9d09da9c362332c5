"""SAM2VideoPredictor's input checks: one-line UserErrors, raised before the state changes."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, SAM2VideoPredictor, sam2_from_config

T, H, W = 4, 48, 64


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    config = replace(SAM2_CONFIGS["sam2.1_hiera_tiny"], image_size=128)
    return SAM2VideoPredictor(sam2_from_config(config))


@pytest.fixture
def state(predictor):
    frames = np.random.default_rng(0).integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    return predictor.init_state(frames)


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_state_reads_like_the_official_dict(state):
    assert (state["num_frames"], state["video_height"], state["video_width"]) == (T, H, W)
    assert state["obj_ids"] == []


@pytest.mark.parametrize("frame_idx", [-1, T, 2.0])
def test_frame_index_out_of_range(predictor, state, frame_idx):
    with pytest.raises(UserError) as e:
        predictor.add_new_points_or_box(state, frame_idx, 1, points=[[10, 10]], labels=[1])
    assert "frame" in one_line(e)
    assert state.obj_ids == []  # nothing added by a bad call
    with pytest.raises(UserError):
        predictor.add_new_mask(state, frame_idx, 1, np.ones((H, W), bool))


@pytest.mark.parametrize(("points", "normalize"), [([[W + 1, 10]], True), ([[-1, 5]], True),
                                                   ([[10, 10]], False)])
def test_a_point_off_the_frame(predictor, state, points, normalize):
    with pytest.raises(UserError) as e:
        predictor.add_new_points_or_box(state, 0, 1, points=points, labels=[1],
                                        normalize_coords=normalize)
    assert "off the frame" in one_line(e)
    assert state.obj_ids == []


@pytest.mark.parametrize("kwargs", [
    {"points": [[1, 2]]},  # no labels
    {},  # nothing
    {"points": [[1, 2], [3, 4]], "labels": [1]},
    {"points": [[1, 2]], "labels": [5]},
    {"box": [1, 2, 3]},
    {"box": [0, 0, W + 5, 10]},
    {"box": [0, 0, 10, 10], "clear_old_points": False},
])
def test_malformed_prompts(predictor, state, kwargs):
    with pytest.raises(UserError) as e:
        predictor.add_new_points_or_box(state, 0, 1, **kwargs)
    one_line(e)


def test_unknown_object_to_remove(predictor, state):
    with pytest.raises(UserError) as e:
        predictor.remove_object(state, 7)
    assert "7" in one_line(e)


def test_propagation_needs_prompts_and_a_valid_start(predictor, state):
    with pytest.raises(UserError):
        next(predictor.propagate_in_video(state))
    predictor.add_new_points_or_box(state, 1, "a", points=[[10, 10]], labels=[1])
    with pytest.raises(UserError):
        next(predictor.propagate_in_video(state, start_frame_idx=T))


def test_a_session_with_two_objects_and_removal(predictor, state):
    _, ids, masks = predictor.add_new_points_or_box(state, 1, "a", points=[[10, 10]],
                                                    labels=[1])
    assert ids == ["a"] and masks.shape == (1, 1, H, W)
    _, ids, masks = predictor.add_new_mask(state, 2, "b", np.ones((H, W), bool))
    assert ids == ["a", "b"] and masks.shape == (2, 1, H, W)
    assert (masks[1] > 0).all()  # a mask prompt is the frame's output
    outs = list(predictor.propagate_in_video(state))
    assert [t for t, _, _ in outs] == [1, 2, 3]
    back = list(predictor.propagate_in_video(state, start_frame_idx=3, reverse=True))
    assert [t for t, _, _ in back] == [3, 2, 1, 0]
    ids, updated = predictor.remove_object(state, "b")
    assert ids == ["a"] and [t for t, _ in updated] == [2]
    assert updated[0][1].shape == (1, 1, H, W)
    predictor.reset_state(state)
    assert state.obj_ids == []
