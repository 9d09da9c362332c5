"""The CoTracker3 that ships inside the package: ``cotracker_tiny``, trained here on synthetic
videos.

No tracker weights can be downloaded on an offline machine, so a fresh install carries its own
small point tracker, as it carries ``sam_tiny`` and ``sam2_tiny``: a 1.8 M-parameter
CoTracker3 trained at 192 x 256 on the moving scenes and run at 240 x 320, the size its file's
header records (chosen on validation clips within the 10 fps online target by
recipes/cotracker_resolution.py; benchmarks/RESULTS.md, "The small CoTracker,
cotracker_tiny", has its recipe and figures). One file serves the offline and the
online model (the weights do not say which way they run). It is stored in float16 to stay
small, with its resolution and its visibility cuts (chosen on validation clips by
recipes/cotracker_visibility.py) in the file's metadata, and runs in float32. ``attnvision track``,
``eval track``, ``figures`` and ``demo`` use it when no ``--checkpoint`` is given.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnvision.cotracker.model import CoTracker3
from attnvision.weights import shipped_file, shipped_path

SHIPPED = "cotracker_tiny.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped cotracker_tiny weights."""
    return shipped_file("attnvision.cotracker", SHIPPED,
                        "this install ships no CoTracker3 weights: pass --checkpoint (the "
                        "official scaled_offline.pth / scaled_online.pth, or ours), or train "
                        "one with 'attnvision train cotracker'")


def has_shipped() -> bool:
    return shipped_path("attnvision.cotracker", SHIPPED).is_file()


def load_shipped(offline: bool = True, device: str | torch.device = "cpu") -> CoTracker3:
    """The shipped cotracker_tiny, in eval mode, at its own resolution."""
    from attnvision.cotracker.build import build_cotracker

    return build_cotracker(shipped_checkpoint(), offline=offline, device=device)
