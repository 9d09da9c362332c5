"""benchmarks/tracking_photo_gap.py: the photo pools it swaps, and what a swap keeps."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

from attnvision.data import scenes
from attnvision.data.moving_scenes import make_clip

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("tracking_photo_gap",
                                                      BENCHMARKS / "tracking_photo_gap.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_the_pools_cross_each_splits_backgrounds_with_each_splits_textures():
    pools = load().pools()
    train, test = scenes.PHOTOS["train"], scenes.PHOTOS["test"]
    assert pools["train photos"] == train and pools["test photos"] == test
    assert pools["test backgrounds"] == {"backgrounds": test["backgrounds"],
                                         "textures": train["textures"]}
    assert pools["test textures"] == {"backgrounds": train["backgrounds"],
                                      "textures": test["textures"]}


def test_other_backgrounds_keep_every_motion_and_the_pool_comes_back():
    bench = load()
    kept = scenes.PHOTOS["train"]
    before = make_clip(5, "train", size=64, frames=6)
    with bench.train_split_photos(bench.pools()["test backgrounds"]):
        swapped = make_clip(5, "train", size=64, frames=6)
    assert scenes.PHOTOS["train"] is kept
    # The objects and their masks are the same; the pixels behind them are not.
    assert np.array_equal(before.masks, swapped.masks)
    background = before.masks == 0
    assert not np.array_equal(before.frames[background], swapped.frames[background])
    assert np.array_equal(make_clip(5, "train", size=64, frames=6).frames, before.frames)
