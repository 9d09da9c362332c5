"""Both SAMs with the same seeded random weights, for side-by-side runs.

The official model comes from tests/reference/official_sam.py (the parity tests' builder),
perturbed with the mask heads sharpened so that masks pass the automatic generator's default
filters; saved as an official ``.pth``, its weights load into ours with ``build_sam``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.official_sam import official_sam as _official_sam

from attnvision.sam import build_sam

FULL = {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)}
SMALL = {"embed_dim": 192, "depth": 2, "num_heads": 3, "global_attn_indexes": (1,)}


def official_sam(encoder: dict[str, Any], seed: int = 0):
    """The official SAM at 1024 px with ``encoder`` settings (FULL: vit_b) and seeded weights."""
    return _official_sam(noise=0.3, sharpen=True, seed=seed, **encoder)


def both_sams(encoder: dict[str, Any], folder: Path, seed: int = 0):
    """(ours, official, path of the shared .pth): the same weights in both models."""
    ref = official_sam(encoder, seed)
    path = folder / "sam_official_format.pth"
    torch.save(ref.state_dict(), path)
    return build_sam("vit_b", checkpoint=path, **encoder), ref, path
