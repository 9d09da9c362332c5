"""The SAM 2 that ships inside the package: ``sam2_tiny``, trained here on synthetic videos.

No SAM 2 weights can be downloaded on an offline machine, so a fresh install carries its own
small video model, as it carries SAM's ``sam_tiny``: SAM 2 with sam_tiny's ViT encoder, started
from sam_tiny and trained on the moving scenes, its decoder's high-resolution features drawn
from the pixels (config ``sam2_tiny_hr``; benchmarks/RESULTS.md, "The small SAM 2,
sam2_tiny", has its recipe and figures). It is stored in float16 to stay small and runs in
float32. The video commands and the demo use it when no ``--checkpoint`` is given.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnvision.sam2.model import SAM2
from attnvision.weights import corrupt, read_metadata, shipped_file

SHIPPED = "sam2_tiny.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped sam2_tiny weights."""
    return shipped_file("attnvision.sam2", SHIPPED,
                        "this install ships no SAM 2 weights: pass --checkpoint (an official "
                        "sam2.1_hiera_*.pt or ours), or train one with 'attnvision train sam2'")


def shipped_model() -> str:
    """The config name the shipped file records (``sam2_tiny``, or ``sam2_tiny_hr`` once a
    model with the pixel stem ships): what ``--model`` may name without ``--checkpoint``."""
    # The header only: the 24 MB of weights are read once, when the model is built.
    path = shipped_checkpoint()
    metadata = read_metadata(path)
    if "model" not in metadata:
        raise corrupt(path, KeyError("no 'model' in its metadata"))
    return metadata["model"]


def load_shipped(device: str | torch.device = "cpu", apply_postprocessing: bool = True
                 ) -> SAM2:
    """The shipped sam2_tiny, in eval mode, ready for
    :class:`~attnvision.sam2.video_predictor.SAM2VideoPredictor`. ``apply_postprocessing``
    (on, as the official video predictor has it): clicked masks enter the memory thresholded
    and an unstable single mask falls back to the best of three."""
    from attnvision.sam2.build import build_sam2

    return build_sam2(None, shipped_checkpoint(), device=device,
                      apply_postprocessing=apply_postprocessing)
