"""A small random-weight CoTracker3 that the tracking tests save and load, in seconds.

The widths of the stored fixtures' small model (``shared/fixtures/cotracker3/cases.json``,
``small_config``), saved as safetensors with the official key names: every width is read back
from the shapes. The model resolution is not in the weights, so the commands are run with
``--model-resolution 64,96`` (:data:`RESOLUTION_ARGS`), the size it is made for.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file

from attnvision.cotracker import CoTracker3, CoTrackerConfig

RESOLUTION = (64, 96)
RESOLUTION_ARGS = ["--model-resolution", f"{RESOLUTION[0]},{RESOLUTION[1]}"]
SMALL = CoTrackerConfig(window_len=8, model_resolution=RESOLUTION, latent_dim=32,
                        corr_mlp_hidden=32, hidden_size=48, num_heads=1, time_depth=1,
                        space_depth=1, num_virtual_tracks=4)


def small_cotracker_weights(path: Path) -> Path:
    """Save the small model, seeded; it loads offline and online (the weights are the same)."""
    torch.manual_seed(0)
    model = CoTracker3(SMALL)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
