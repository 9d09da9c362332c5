"""The SAM that ships inside the package: ``sam_tiny``, trained here on synthetic scenes.

No SAM weights can be downloaded on an offline machine, so a fresh install carries its own
small model (benchmarks/RESULTS.md, "the shipped small SAM", has its recipe and figures). It
is stored in float16 to stay small and runs in float32.
"""

from __future__ import annotations

from pathlib import Path

from attnvision.sam.model import Sam
from attnvision.weights import shipped_file

SHIPPED = "sam_tiny.safetensors"
# Segment-everything filters (predicted IoU, stability) for sam_tiny, whose IoU head is modest:
# at the official 0.88 and 0.95 it keeps almost nothing (benchmarks/RESULTS.md).
EVERYTHING_THRESHOLDS = (0.7, 0.85)


def shipped_checkpoint() -> Path:
    """Path of the shipped sam_tiny weights."""
    return shipped_file("attnvision.sam", SHIPPED,
                        "this install ships no SAM weights: pass --checkpoint (an official "
                        "sam_vit_*.pth or ours), or train one with 'attnvision train sam'")


def load_shipped(precision: str = "fp32") -> Sam:
    """The shipped sam_tiny, ready for :class:`~attnvision.sam.predictor.SamPredictor`."""
    from attnvision.sam.build import build_sam

    return build_sam(None, shipped_checkpoint(), precision=precision)


def everything_thresholds(shipped: bool) -> tuple[float, float]:
    """Segment-everything filters (predicted IoU, stability): sam_tiny's own for the shipped
    model, the official generator's for any other."""
    from attnvision.sam.automatic import OFFICIAL_THRESHOLDS

    return EVERYTHING_THRESHOLDS if shipped else OFFICIAL_THRESHOLDS
