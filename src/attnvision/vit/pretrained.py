"""The ViT that ships inside the package: trained here on MNIST-5k (see benchmarks/RESULTS.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnvision.errors import UserError
from attnvision.vit.checkpoints import load_checkpoint
from attnvision.vit.model import VisionTransformer

SHIPPED = "vit_mnist5k.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped MNIST-5k ViT weights."""
    path = Path(str(resources.files("attnvision.vit") / "weights" / SHIPPED))
    if not path.is_file():
        raise UserError("this install ships no ViT weights: pass --checkpoint, or train one "
                        "with 'attnvision train vit --dataset mnist5k --out DIR'")
    return path


def load_shipped() -> VisionTransformer:
    return load_checkpoint(shipped_checkpoint())
