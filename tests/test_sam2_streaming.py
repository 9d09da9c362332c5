"""SAM2StreamPredictor: the video predictor's masks, in bounded memory, one frame at a time."""

from dataclasses import fields, is_dataclass, replace

import numpy as np
import pytest
import torch

from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, SAM2StreamPredictor, SAM2VideoPredictor, sam2_from_config

H, W = 48, 64


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = sam2_from_config(replace(SAM2_CONFIGS["sam2.1_hiera_tiny"], image_size=128)).eval()
    with torch.no_grad():  # random weights call the object absent (blank masks): not here
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(100.0)
    return model


def clip(n, seed=0):
    """A bright square moving right over noise."""
    rng = np.random.default_rng(seed)
    for t in range(n):
        frame = rng.integers(0, 80, (H, W, 3), dtype=np.uint8)
        frame[14:30, 8 + 2 * t % 30:24 + 2 * t % 30] = 230
        yield frame


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_streamed_masks_equal_the_video_predictors(model):
    frames = np.stack(list(clip(12)))
    video = SAM2VideoPredictor(model)
    state = video.init_state(frames)
    video.add_new_points_or_box(state, 0, 1, points=[[15, 20]], labels=[1])
    expected = {t: m for t, _, m in video.propagate_in_video(state)}

    stream = SAM2StreamPredictor(model)
    stream.add_prompt(frame_idx=0, obj_id=1, points=[[15, 20]], labels=[1])
    got = list(stream.track(frames))
    assert [t for t, _, _ in got] == list(range(12))
    for t, ids, masks in got:
        assert ids == [1] and masks.shape == (1, 1, H, W)
        agree = ((masks > 0) == (expected[t] > 0)).float().mean().item()
        assert agree >= 0.999, (t, agree)
        torch.testing.assert_close(masks, expected[t], rtol=1e-4, atol=1e-3)
    shown = torch.cat([m for _, _, m in got]) > 0
    assert 0 < shown.float().mean() < 1  # masks that say something


def held(obj, seen=None):
    """(tensor elements, container entries) reachable from obj's attributes."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0, 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel(), 0
    if isinstance(obj, dict):
        items = [*obj.keys(), *obj.values()]
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif is_dataclass(obj):
        items = [getattr(obj, f.name) for f in fields(obj)]
    elif hasattr(obj, "__dict__"):
        items = [v for k, v in vars(obj).items() if k != "model"]
    else:
        return 0, 0
    numel, entries = 0, len(items) if not hasattr(obj, "__dict__") else 0
    for item in items:
        n, e = held(item, seen)
        numel, entries = numel + n, entries + e
    return numel, entries


def test_memory_stays_bounded_on_a_stream(model):
    stream = SAM2StreamPredictor(model)
    stream.add_prompt(0, "a", points=[[15, 20]], labels=[1])
    stream.add_prompt(0, "b", box=[30, 30, 60, 46])
    video = model.config.video
    sizes = {}
    for t, ids, masks in stream.track(clip(40)):  # a generator: length unknown
        assert ids == ["a", "b"] and masks.shape == (2, 1, H, W)
        for bank in stream.banks.values():
            memories = [m for m in [*bank.conditioning.values(), *bank.tracked.values()]
                        if m.maskmem is not None]
            assert len(memories) <= 1 + video.num_maskmem - 1
            assert len(bank.conditioning) + len(bank.tracked) <= video.max_obj_ptrs
            assert all(m.maskmem.dtype == torch.bfloat16 for m in memories)
        if t in (19, 39):
            sizes[t] = held(stream)
    assert sizes[19] == sizes[39]
    assert stream.next_frame == 40


def test_bad_prompts_are_one_line_errors(model):
    stream = SAM2StreamPredictor(model)
    with pytest.raises(UserError) as e:
        stream.add_prompt(0, 1, points=[[-1, 5]], labels=[1])
    assert "off the frame" in one_line(e)
    for kwargs in ({"points": [[1, 2]]}, {}, {"points": [[1, 2]], "labels": [5]},
                   {"box": [1, 2, 3]}, {"mask": np.ones((H, W)), "points": [[1, 2]],
                                        "labels": [1]}):
        with pytest.raises(UserError) as e:
            stream.add_prompt(0, 1, **kwargs)
        one_line(e)
    with pytest.raises(UserError) as e:
        stream.add_prompt(1.5, 1, points=[[1, 2]], labels=[1])
    one_line(e)
    with pytest.raises(UserError) as e:
        stream.remove_object(7)
    assert "7" in one_line(e)
    # Checked against the frame once its size is known: before any object changes.
    stream.add_prompt(0, 1, points=[[W + 5, 10]], labels=[1])
    with pytest.raises(UserError) as e:
        next(stream.track(clip(3)))
    assert "off the frame" in one_line(e)
    assert stream.obj_ids == [] and stream.next_frame == 0
    stream.add_prompt(0, 1, points=[[10, 10]], labels=[1])  # replaces the bad one
    frames = stream.track(clip(3))
    t, ids, _ = next(frames)
    assert (t, ids) == (0, [1])
    with pytest.raises(UserError) as e:
        stream.add_prompt(0, 2, points=[[10, 10]], labels=[1])
    assert "past" in one_line(e)
    with pytest.raises(UserError) as e:
        stream.add_prompt(1, 2, points=[[W + 5, 10]], labels=[1])  # size now known
    assert "off the frame" in one_line(e)
    stream.add_prompt(1, 2, mask=np.ones((H, W), bool))  # a new object, between frames
    t, ids, masks = next(frames)
    assert (t, ids) == (1, [1, 2]) and (masks[1] > 0).all()
