"""Synthetic videos: deterministic, masks that match the drawn pixels, exact tracks, planned
occlusions, and one-line errors. Every check recomputes the truth through the clip's
coordinate maps on whole frames, not through the renderer's own boxes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.data import moving_scenes, scenes
from attnvision.data.moving_scenes import HIDDEN_RUN, Clip, make_clip
from attnvision.errors import UserError


def covers(clip: Clip, obj_id: int, t: int, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether object ``obj_id``'s shape covers each (N, 2) integer pixel of frame t, ignoring
    what is in front, and the sprite pixel each shows (N, 2)."""
    obj = clip.objects[obj_id - 1]
    uv = np.floor(clip.to_sprite(obj_id, t, pixels) + 0.5).astype(np.int64)
    h, w = obj.sprite_mask.shape
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    uv = np.where(inside[:, None], uv, 0)
    return inside & obj.sprite_mask[uv[:, 1], uv[:, 0]], uv


def grid(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)  # (H W, 2)


def redraw_masks(clip: Clip, t: int) -> np.ndarray:
    """Frame t's masks painted afresh, back to front, from every pixel's sprite coordinates."""
    height, width = clip.masks.shape[1:]
    masks = np.zeros(height * width, np.uint8)
    for obj in clip.objects:
        masks[covers(clip, obj.id, t, grid(height, width))[0]] = obj.id
    return masks.reshape(height, width)


def check_clip(clip: Clip, frames: int, height: int, width: int) -> None:
    assert clip.frames.shape == (frames, height, width, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (frames, height, width) and clip.masks.dtype == np.uint8
    assert clip.masks.max() <= len(clip.objects)
    for k, obj in enumerate(clip.objects, start=1):
        assert obj.id == k and obj.shape in scenes.SHAPES and obj.colour in scenes.COLOURS
        seen = (clip.masks == k).any((1, 2))
        assert obj.first_visible == (int(np.argmax(seen)) if seen.any() else -1)
        assert not set(obj.hidden) & set(obj.out_of_frame)
        assert not seen[list(obj.hidden)].any() and not seen[list(obj.out_of_frame)].any()
        # A frame where it is neither seen nor hidden nor out of the frame does not exist.
        assert set(np.nonzero(~seen)[0].tolist()) == set(obj.hidden) | set(obj.out_of_frame)
        if obj.distractor:
            model = clip.objects[obj.look_alike_of - 1]
            assert (model.shape, model.colour, model.textured) == (obj.shape, obj.colour,
                                                                   obj.textured)
            assert not model.distractor
        else:
            assert obj.look_alike_of == 0
    if clip.occlusion is not None:
        check_occlusion(clip)


def check_occlusion(clip: Clip) -> None:
    """The planned occlusion: the target wholly covered by the (nearer) occluder for >= 3
    consecutive frames in which its own shape lies in the frame, visible before and after."""
    occ = clip.occlusion
    target = clip.objects[occ.target - 1]
    assert occ.occluder > occ.target and not clip.objects[occ.occluder - 1].distractor
    assert len(occ.frames) >= HIDDEN_RUN
    assert occ.frames == tuple(range(occ.frames[0], occ.frames[-1] + 1))
    assert set(occ.frames) <= set(target.hidden)
    height, width = clip.masks.shape[1:]
    for t in occ.frames:
        assert not (clip.masks[t] == occ.target).any()
        own, _ = covers(clip, occ.target, t, grid(height, width))
        assert own.any()  # in the frame, under the occluder
    seen = (clip.masks == occ.target).any((1, 2))
    assert seen[0] and seen[occ.frames[-1] + 1:].any()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), split=st.sampled_from(["train", "test"]),
       frames=st.integers(1, 10), height=st.integers(16, 80), width=st.integers(16, 80),
       occlusion=st.sampled_from([None, False]), distractor=st.sampled_from([None, True]))
def test_clips_of_any_length_and_size_hold_their_invariants(seed, split, frames, height, width,
                                                            occlusion, distractor):
    clip = make_clip(seed, split, (height, width), frames, occlusion=occlusion,
                     distractor=distractor)
    check_clip(clip, frames, height, width)
    assert np.array_equal(clip.masks[0], redraw_masks(clip, 0))
    points = clip.sample_tracks(20, np.random.default_rng(seed))
    check_tracks(clip, points)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), frames=st.integers(5, 12), side=st.integers(16, 96))
def test_occlusion_true_always_hides_an_object_and_brings_it_back(seed, frames, side):
    clip = make_clip(seed, size=side, frames=frames, occlusion=True, distractor=seed % 2 == 0)
    assert clip.occlusion is not None
    check_clip(clip, frames, side, side)


def test_a_clip_is_a_function_of_its_seed_and_split():
    a, b = make_clip(7, size=64, frames=6), make_clip(7, size=64, frames=6)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert [(o.shape, o.colour, o.hidden, o.out_of_frame) for o in a.objects] == [
        (o.shape, o.colour, o.hidden, o.out_of_frame) for o in b.objects]
    points = a.sample_tracks(10, np.random.default_rng(0))
    assert np.array_equal(points, b.sample_tracks(10, np.random.default_rng(0)))
    assert all(np.array_equal(x, y) for x, y in zip(a.track(points), b.track(points),
                                                    strict=True))
    assert not np.array_equal(make_clip(8, size=64, frames=6).frames, a.frames)
    assert not np.array_equal(make_clip(7, "test", size=64, frames=6).frames, a.frames)
    # The lighting and the camera draw from streams of their own: without them the lit clip
    # keeps its masks, and the objects their shapes (an occluder may be planned anew).
    dark = make_clip(7, size=64, frames=6, lighting=False)
    assert np.array_equal(dark.masks, a.masks) and not np.array_equal(dark.frames, a.frames)
    moving = make_clip(7, size=64, frames=6, occlusion=False)
    still = make_clip(7, size=64, frames=6, occlusion=False, camera=False)
    assert [(o.shape, o.colour) for o in still.objects] == [(o.shape, o.colour)
                                                            for o in moving.objects]
    assert np.array_equal(still.objects[0].sprite, moving.objects[0].sprite)


def test_the_test_split_never_uses_a_training_photo(monkeypatch):
    train = set(scenes.PHOTOS["train"]["backgrounds"]) | set(scenes.PHOTOS["train"]["textures"])
    test = set(scenes.PHOTOS["test"]["backgrounds"]) | set(scenes.PHOTOS["test"]["textures"])
    used = []
    original = scenes._photo
    monkeypatch.setattr(scenes, "_photo", lambda name: used.append(name) or original(name))
    for seed in range(12):
        make_clip(seed, "test", size=32, frames=2, distractor=True)
    assert used and set(used) <= test and not set(used) & train
    assert set(used) & set(scenes.PHOTOS["test"]["textures"])  # textures were drawn too


def test_masks_match_the_drawn_pixels():
    clip = make_clip(3, size=(72, 96), frames=10, occlusion=True, distractor=True,
                     lighting=False)
    height, width = clip.masks.shape[1:]
    pixels = grid(height, width)
    for t in range(len(clip.frames)):
        assert np.array_equal(clip.masks[t], redraw_masks(clip, t))  # afresh, whole frame
        image = clip.frames[t].reshape(-1, 3)
        masks = clip.masks[t].ravel()
        for obj in clip.objects:  # each object pixel is its sprite's pixel, exactly
            here = masks == obj.id
            _, uv = covers(clip, obj.id, t, pixels[here])
            assert np.array_equal(image[here], obj.sprite[uv[:, 1], uv[:, 0]])
        # The background: a bilinear read of the world photo where the camera looks.
        from scipy.ndimage import map_coordinates

        world = clip.to_world(t, pixels[masks == 0])
        expected = np.stack([map_coordinates(clip.background[..., c].astype(np.float64),
                                             [world[:, 1], world[:, 0]], order=1)
                             for c in range(3)], 1)
        assert np.abs(image[masks == 0] - expected).max() <= 1.01
    lit = make_clip(3, size=(72, 96), frames=10, occlusion=True, distractor=True)
    assert np.array_equal(lit.masks, clip.masks)  # lighting changes colours, never masks
    gain = lit.frames.astype(float).mean((1, 2)) / clip.frames.astype(float).mean((1, 2))
    assert np.ptp(gain) > 0.01  # (T, 3): it drifts over time


def check_tracks(clip: Clip, points: np.ndarray, frame: int = 0) -> tuple[np.ndarray, ...]:
    """Tracks land where they started: on the same sprite coordinate of their object or the
    same world point of the background; visible exactly where their pixel shows their own
    object, hidden under any nearer one, never visible out of the frame."""
    xy, visible = clip.track(points, frame)
    t_count, height, width = clip.masks.shape
    assert xy.shape == (t_count, len(points), 2) and visible.shape == (t_count, len(points))
    owner = clip.owner(points, frame)
    assert np.allclose(xy[frame], points, atol=1e-4) and visible[frame].all()
    start = {k: clip.to_sprite(k, frame, points[owner == k]) for k in set(owner.tolist()) - {0}}
    world = clip.to_world(frame, points[owner == 0])
    for t in range(t_count):
        for k, uv in start.items():  # the same texture pixel, to 1e-3 sprite pixels
            assert np.abs(clip.to_sprite(k, t, xy[t, owner == k]) - uv).max() < 1e-3
        assert np.abs(clip.to_world(t, xy[t, owner == 0]) - world).max(initial=0) < 1e-3
        pixel = np.floor(xy[t].astype(np.float64) + 0.5)
        inside = (pixel >= 0).all(1) & (pixel[:, 0] < width) & (pixel[:, 1] < height)
        front = np.zeros(len(points), bool)  # a nearer object covers its pixel
        own = owner == 0  # the background lies under everything
        for obj in clip.objects:
            hit, _ = covers(clip, obj.id, t, pixel)
            front |= hit & (obj.id > owner)
            own |= hit & (obj.id == owner)
        assert np.array_equal(visible[t], inside & own & ~front)
        assert not visible[t, ~inside].any()
    return xy, visible, owner


def test_tracks_land_on_the_same_texture_pixel_and_hidden_points_are_marked():
    clip = make_clip(11, size=96, frames=16, n_objects=(2, 4), occlusion=True, distractor=True)
    points = clip.sample_tracks(300, np.random.default_rng(1))
    _, visible, owner = check_tracks(clip, points)
    assert (owner > 0).sum() >= 100 and (owner == 0).sum() >= 100
    occ = clip.occlusion
    on_target = owner == occ.target
    assert on_target.any() and not visible[list(occ.frames)][:, on_target].any()
    assert visible[occ.frames[-1] + 1:, on_target].any()  # it comes back
    # Queries at a later frame work the same way (CoTracker queries any frame).
    check_tracks(clip, clip.sample_tracks(60, np.random.default_rng(2), frame=9), frame=9)


def test_tracks_leave_the_frame_and_come_back_as_the_camera_and_objects_move():
    outside = returned = 0
    for seed in range(6):
        clip = make_clip(seed, size=64, frames=24)
        xy, visible = clip.track(clip.sample_tracks(80, np.random.default_rng(seed)))
        out = ((np.floor(xy + 0.5) < 0) | (np.floor(xy + 0.5) >= 64)).any(2)  # (T, N)
        outside += out.any(0).sum()
        returned += sum(np.nonzero(out[:, n])[0].min() < np.nonzero(visible[:, n])[0].max()
                        for n in np.nonzero(out.any(0))[0] if visible[:, n].any())
        assert not visible[out].any()
    assert outside > 50 and returned > 5


def test_objects_move_smoothly_and_the_camera_pans_and_zooms():
    side = 128
    for seed in range(4):
        clip = make_clip(seed, size=side, frames=24, occlusion=True)
        xy, _ = clip.track(clip.sample_tracks(200, np.random.default_rng(seed)))
        step = np.linalg.norm(np.diff(xy, axis=0), axis=2)  # (T - 1, N) px per frame
        assert step.max() < 0.2 * side  # no teleports
        assert np.median(step) > 0.05  # but motion
        # The background moves with the camera: its points drift and their spacing changes.
        background = clip.track(np.array([[10.0, 10.0], [110.0, 110.0]]))[0]
        assert np.abs(background[-1] - background[0]).max() > 1
        assert np.ptp(np.linalg.norm(background[:, 1] - background[:, 0], axis=1)) > 0.5
    still = make_clip(0, size=side, frames=12, camera=False)
    points = np.array([[5.0, 7.0], [100.0, 60.0]])
    assert np.allclose(still.track(points)[0], points, atol=1e-4)  # for background points


def test_objects_enter_leave_occlude_and_have_look_alikes_by_chance():
    clips = [make_clip(seed, size=48, frames=24) for seed in range(24)]
    objects = [o for clip in clips for o in clip.objects]
    assert any(o.first_visible > 0 for o in objects)  # entering
    assert any(o.out_of_frame and o.out_of_frame[-1] > o.first_visible >= 0
               for o in objects)  # leaving
    comebacks = 0  # seen, then out of the frame, then seen again
    for clip in clips:
        for obj in clip.objects:
            seen = np.nonzero((clip.masks == obj.id).any((1, 2)))[0]
            comebacks += any(seen.min() < t < seen.max() for t in obj.out_of_frame)
    assert comebacks >= 2
    occluded = sum(c.occlusion is not None for c in clips)
    distracted = sum(any(o.distractor for o in c.objects) for c in clips)
    assert 4 <= occluded <= 20 and 1 <= distracted <= 16
    assert {o.shape for o in objects} >= set(scenes.PLAIN_SHAPES)
    assert {o.textured for o in objects} == {True, False}
    for clip in clips:
        check_clip(clip, 24, 48, 48)
        real = sum(not o.distractor for o in clip.objects)  # the occluder counts among them
        assert (2 if clip.occlusion else 1) <= real <= 3


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "validation"}, "'train' or 'test'"),
    ({"size": 8}, "size must be"), ({"size": (32,)}, "size must be"),
    ({"size": (32, 5000)}, "size must be"), ({"size": "large"}, "size must be"),
    ({"size": 32.0}, "size must be"), ({"n_objects": 2}, "n_objects must be"),
    ({"frames": 0}, "frames must be"), ({"frames": 2.5}, "frames must be"),
    ({"n_objects": (0, 2)}, "n_objects must be"), ({"n_objects": (3, 2)}, "n_objects must be"),
    ({"frames": 4, "occlusion": True}, "an occlusion needs frames >= 5"),
])
def test_bad_arguments_are_one_line_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as error:
        make_clip(0, **{"size": 32, "frames": 3, **kwargs})
    assert "\n" not in str(error.value)


def test_bad_queries_are_user_errors():
    clip = make_clip(0, size=32, frames=3)
    with pytest.raises(UserError, match="must lie in the 32x32 frame"):
        clip.track(np.array([[40.0, 3.0]]))
    with pytest.raises(UserError, match=r"frame must be 0\.\.2"):
        clip.track(np.array([[4.0, 3.0]]), frame=3)
    with pytest.raises(UserError, match="object id must be"):
        clip.to_sprite(len(clip.objects) + 1, 0, np.zeros((1, 2)))


def test_the_wobble_is_inverted_exactly():
    clip = make_clip(5, size=64, frames=8, occlusion=True)
    rng = np.random.default_rng(0)
    for obj in clip.objects:
        uv = rng.uniform(0, obj.sprite_mask.shape[::-1], (50, 2))
        for t in (0, 7):
            assert np.abs(clip.to_sprite(obj.id, t, clip.from_sprite(obj.id, t, uv)) - uv
                          ).max() < 1e-6
    assert moving_scenes.WOBBLE_TERMS * moving_scenes.WOBBLE_AMPLITUDE[1] \
        * moving_scenes.WOBBLE_WAVES[1] < 0.2  # a contraction: the iteration converges
