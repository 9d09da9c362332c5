"""The model resolution a file of ours records, and the shipped cotracker_tiny as the default
of the tracking commands."""

import torch
from cotracker_helpers import SMALL
from safetensors.torch import save_file

from attnvision.cotracker import CoTracker3, build_cotracker
from attnvision.cotracker.checkpoints import stored_resolution
from attnvision.cotracker.predictor import CoTrackerPredictor


def save_small(path, metadata=None):
    torch.manual_seed(0)
    model = CoTracker3(SMALL)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata=metadata)
    return path


def test_the_recorded_resolution_is_the_default(tmp_path):
    path = save_small(tmp_path / "small.safetensors", {"model_resolution": "64,96"})
    assert stored_resolution(path) == (64, 96)
    assert build_cotracker(path).model_resolution == (64, 96)
    assert CoTrackerPredictor(str(path)).interp_shape == (64, 96)
    # an explicit resolution wins
    assert build_cotracker(path, model_resolution=(32, 48)).model_resolution == (32, 48)


def test_files_without_one_run_at_the_released_resolution(tmp_path):
    bare = save_small(tmp_path / "bare.safetensors")
    odd = save_small(tmp_path / "odd.safetensors", {"model_resolution": "wide"})
    pth = tmp_path / "small.pth"
    torch.save(CoTracker3(SMALL).state_dict(), pth)
    for path in (bare, odd, pth):
        assert stored_resolution(path) is None
        assert build_cotracker(path).model_resolution == (384, 512)
