"""The ViT that ships inside the package: trained here on MNIST-5k (see benchmarks/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

from attnvision.vit.checkpoints import load_checkpoint
from attnvision.vit.model import VisionTransformer
from attnvision.weights import shipped_file

SHIPPED = "vit_mnist5k.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped MNIST-5k ViT weights."""
    return shipped_file("attnvision.vit", SHIPPED,
                        "this install ships no ViT weights: pass --checkpoint, or train one "
                        "with 'attnvision train vit --dataset mnist5k --out DIR'")


def load_shipped() -> VisionTransformer:
    return load_checkpoint(shipped_checkpoint())
