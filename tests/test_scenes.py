"""Synthetic scenes: deterministic, exact visible masks, honest descriptions, disjoint splits."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.data import scenes
from attnvision.data.scenes import COLOURS, PHOTOS, PLAIN_SHAPES, SHAPES, make_scene
from attnvision.errors import UserError


def check_scene(scene: scenes.Scene, size: int, packed: bool = False) -> None:
    assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
    covered = np.zeros((size, size), bool)
    for obj in scene.objects:
        assert obj.shape in SHAPES and obj.colour in COLOURS
        assert obj.mask.shape == (size, size) and obj.mask.sum() >= scenes.MIN_PIXELS
        assert not (covered & obj.mask).any()  # visible parts never overlap
        covered |= obj.mask
        ys, xs = np.nonzero(obj.mask)
        assert obj.box == (xs.min(), ys.min(), xs.max(), ys.max())
        assert 0 < obj.visible <= 1
        pixels = scene.image[obj.mask]
        if not obj.textured and not packed:  # a plain object's pixels are its colour, exactly
            assert (pixels == COLOURS[obj.colour]).all()
        elif not obj.textured:  # on a tray, one flat colour, a little lighter or darker
            assert (pixels == pixels[0]).all()
            colour = np.array(COLOURS[obj.colour])
            light = pixels[0] / np.maximum(colour, 1)
            assert np.all(light[colour > 40] >= 0.79)  # x 0.8-1.15, rounded
            assert np.all(light[(colour > 40) & (colour < 220)] <= 1.16)
        assert obj.description == f"the {obj.size} {obj.colour} {obj.shape} {obj.position}"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), split=st.sampled_from(["train", "test"]),
       size=st.sampled_from([64, 128, 256]),
       style=st.sampled_from(["standard", "packed", "large"]))
def test_scenes_hold_their_invariants(seed, split, size, style):
    check_scene(make_scene(seed, split, size, style=style), size, packed=style == "packed")


def test_a_scene_is_a_function_of_its_seed_and_split():
    a, b = make_scene(7), make_scene(7)
    assert np.array_equal(a.image, b.image)
    assert [o.description for o in a.objects] == [o.description for o in b.objects]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects,
                                                                strict=True))
    assert not np.array_equal(make_scene(8).image, a.image)
    assert not np.array_equal(make_scene(7, "test").image, a.image)


def test_the_test_split_never_uses_a_training_photo(monkeypatch):
    train = set(PHOTOS["train"]["backgrounds"]) | set(PHOTOS["train"]["textures"])
    test = set(PHOTOS["test"]["backgrounds"]) | set(PHOTOS["test"]["textures"])
    assert not train & test
    used = []
    original = scenes._photo
    monkeypatch.setattr(scenes, "_photo", lambda name: used.append(name) or original(name))
    for seed in range(30):
        make_scene(seed, "test", size=64)
    assert used and set(used) <= test
    assert set(used) & set(PHOTOS["test"]["textures"])  # textures were drawn too


def test_many_scenes_cover_every_shape_colour_and_size():
    objects = [o for seed in range(60) for o in make_scene(seed, size=128).objects]
    assert {o.shape for o in objects} == set(PLAIN_SHAPES)  # animals are the large style's
    assert {o.colour for o in objects} == set(COLOURS)
    assert {o.size for o in objects} == {"small", "medium", "large"}
    assert any(o.visible < 1 for o in objects)  # occlusion happens
    assert any(o.textured for o in objects) and any(not o.textured for o in objects)


@pytest.mark.parametrize("box, expected", [
    ((0, 0, 20, 20), "at the top left"), ((45, 0, 55, 20), "at the top"),
    ((80, 40, 99, 60), "on the right"), ((40, 40, 60, 60), "in the centre"),
    ((0, 80, 20, 99), "at the bottom left"), ((45, 80, 55, 99), "at the bottom")])
def test_positions_name_the_third_of_the_image(box, expected):
    mask = np.zeros((100, 100), bool)
    x0, y0, x1, y1 = box
    mask[y0:y1 + 1, x0:x1 + 1] = True
    assert scenes._position(mask) == expected


def test_bad_split_is_refused():
    with pytest.raises(UserError, match="'train' or 'test'"):
        make_scene(0, "validation")


def test_varied_scenes_have_larger_objects_and_standard_ones_stay_the_same():
    from attnvision.data.scenes import make_scene

    plain = make_scene(11, "train")
    assert np.array_equal(plain.image, make_scene(11, "train", style="standard").image)
    area = {style: np.mean([o.mask.sum() + 0.0 for s in range(12)
                            for o in make_scene(s, "train", style=style).objects])
            for style in ("standard", "varied")}
    assert area["varied"] > 1.5 * area["standard"]
    with pytest.raises(UserError, match="must be one of standard, varied, repeated, packed, "
                                        "large, mixed or shares"):
        make_scene(0, "train", style="wild")


def test_mixed_scenes_are_drawn_from_both_styles_by_seed():
    from attnvision.data.scenes import make_scene

    def large(style: str) -> int:
        """Scenes with an object too large for the standard style (radius <= 0.22 of the side,
        so at most 0.16 of the image)."""
        return sum(any(o.mask.mean() > 0.16 for o in make_scene(s, "train", size=64,
                                                                   style=style).objects)
                   for s in range(60))

    assert large("standard") == 0
    assert 0 < large("mixed") < large("varied")
    # Trays of look-alikes too: 5 or more objects of one kind (standard scenes have at most 6
    # objects of random kinds, so one kind five times over is the repeated style).
    trays = sum(max(Counter((o.shape, o.colour) for o in make_scene(
        s, "train", size=64, style="mixed").objects).values(), default=0) >= 5
        for s in range(60))
    assert 5 <= trays <= 35
    again = make_scene(5, "train", size=64, style="mixed")
    assert np.array_equal(again.image, make_scene(5, "train", size=64, style="mixed").image)


def test_a_mixture_of_your_own_shares():
    from attnvision.data.scenes import make_scene

    def tray(s: int, style: str) -> bool:  # the repeated style: 5+ objects of one kind
        objects = make_scene(s, "train", size=64, style=style).objects
        return max(Counter((o.shape, o.colour) for o in objects).values(), default=0) >= 5

    def large(s: int, style: str) -> bool:  # only the varied style draws objects this large
        return any(o.mask.mean() > 0.16 for o in make_scene(s, "train", size=64,
                                                               style=style).objects)

    # "mixed" is a name for its shares, in any order: the same scenes, pixel for pixel.
    for seed in range(4):
        a = make_scene(seed, "train", size=64, style="mixed")
        b = make_scene(seed, "train", size=64, style="repeated=0.3, standard=0.4,varied=0.3")
        assert np.array_equal(a.image, b.image)
    # One style at share 1 is that style; a style left out is never drawn.
    assert np.array_equal(make_scene(3, "train", size=64, style="repeated=1").image,
                          make_scene(3, "train", size=64, style="repeated").image)
    seventy = [tray(s, "standard=0.7,repeated=0.3") for s in range(60)]
    assert 8 <= sum(seventy) <= 30  # 18 expected
    assert not any(large(s, "standard=0.7,repeated=0.3") for s in range(60))
    for bad, message in (("standard=0.7,repeated=0.2", "sum to 1"),
                         ("standard=0.5,standard=0.5", "named once"),
                         ("wild=1", "named once"), ("standard=half,repeated=0.5", "not a share")):
        with pytest.raises(UserError, match=message):
            make_scene(0, "train", style=bad)


def test_repeated_scenes_hold_look_alike_objects_apart():
    from attnvision.data.scenes import make_scene

    scenes = [make_scene(s, "train", size=128, style="repeated") for s in range(10)]
    for scene in scenes:
        assert len({(o.shape, o.colour, o.textured) for o in scene.objects}) == 1
    assert np.mean([len(s.objects) for s in scenes]) >= 5
    # Placed apart: later objects hide almost nothing of earlier ones, but for the odd one
    # that found no free place.
    assert np.percentile([o.visible for s in scenes for o in s.objects], 10) > 0.9


def test_packed_scenes_set_look_alikes_in_rows_a_few_pixels_apart():
    from scipy.ndimage import distance_transform_edt

    scenes = [make_scene(s, "train", size=256, style="packed") for s in range(12)]
    assert np.mean([len(s.objects) for s in scenes]) >= 12
    gaps = []  # from each object to its nearest neighbour, in the object's widths
    for scene in scenes:
        assert len({(o.shape, o.colour, o.textured) for o in scene.objects}) == 1
        # Each in its own cell: at most an edge pixel shared with a neighbour.
        assert min(o.visible for o in scene.objects) > 0.95
        for k, obj in enumerate(scene.objects):
            others = np.zeros_like(obj.mask)
            for j, other in enumerate(scene.objects):
                if j != k:
                    others |= other.mask
            gaps.append(distance_transform_edt(~others)[obj.mask].min()
                        / (obj.box[2] - obj.box[0] + 1))
        # No two look quite alike: the mean colours of a tray's objects differ.
        assert np.std([scene.image[o.mask].mean() for o in scene.objects]) > 1
    # Most have a neighbour a fifth of their width away or closer, as coins on a tray.
    assert np.median(gaps) < 0.2 and np.percentile(gaps, 90) < 0.4
    again = make_scene(3, "train", size=256, style="packed")
    assert np.array_equal(again.image, scenes[3].image)


def test_large_scenes_fill_the_frame_cut_objects_and_mix_sizes():
    scenes = [make_scene(s, "train", size=128, style="large") for s in range(40)]
    # One object in most scenes covers over a quarter of the image (at most 0.16 elsewhere).
    assert sum(max(o.mask.mean() for o in sc.objects) > 0.25 for sc in scenes) >= 20
    assert any(max(o.mask.mean() for o in sc.objects) > 0.6 for sc in scenes)  # most of it
    # The border cuts objects: some touch an edge of the image.
    def touches(o) -> bool:
        return o.box[0] == 0 or o.box[1] == 0 or o.box[2] == 127 or o.box[3] == 127
    assert sum(touches(o) for sc in scenes for o in sc.objects) >= 20
    # Silhouettes, most of them wholly in the frame, and several sizes in one scene.
    animals = [o for sc in scenes for o in sc.objects if o.shape == "animal"]
    assert len(animals) >= 8 and sum(not touches(o) for o in animals) >= 4
    assert sum(len({o.size for o in sc.objects}) >= 2 for sc in scenes) >= 10
    # Plain backgrounds: the corners of a scene are then one colour.
    plain = sum(len({tuple(sc.image[y, x]) for y in (0, -1) for x in (0, -1)}) == 1
                and not any(o.mask[[0, 0, -1, -1], [0, -1, 0, -1]].any() for o in sc.objects)
                for sc in scenes)
    assert 5 <= plain <= 30


def test_an_object_on_a_plain_background_stands_out_from_it():
    for seed in range(40):
        scene = make_scene(seed, "train", size=64, style="large")
        background = ~np.any([o.mask for o in scene.objects], axis=0)
        colours = np.unique(scene.image[background], axis=0)
        if len(colours) != 1:  # a photo or a texture
            continue
        for obj in scene.objects:
            if not obj.textured:
                gap = np.linalg.norm(np.array(COLOURS[obj.colour]) - colours[0].astype(float))
                assert gap >= scenes.CONTRAST - 1  # the background's colour is rounded


def test_the_animal_silhouette_is_one_shape_with_thin_legs():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for _ in range(10):
        mask = scenes._shape_mask("animal", 200, rng, (0.25, 0.3))
        _, parts = ndimage.label(mask)
        assert parts == 1
        # Legs and tail are thin: opening with a disc of a tenth of the body removes a part.
        opened = ndimage.binary_opening(mask, structure=np.ones((9, 9)))
        assert 0.02 < 1 - opened.sum() / mask.sum() < 0.4
    assert "animal" in SHAPES and "animal" not in PLAIN_SHAPES
