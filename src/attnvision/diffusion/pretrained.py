"""The latent diffusion model that ships inside the package, when there is one.

No generation weights can be downloaded on an offline machine; ``digits`` (a small VAE + DiT
trained here on MNIST digits) is the model ``attnvision generate`` and ``demo`` use when no
``--checkpoint`` is given. An install without it says so in one line.
"""

from __future__ import annotations

from pathlib import Path

from attnvision.weights import shipped_file, shipped_path

SHIPPED_NAME = "digits"
SHIPPED = "digits.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped one-file pipeline."""
    return shipped_file("attnvision.diffusion", SHIPPED,
                        "this install ships no generation model: pass --checkpoint (a "
                        "diffusers DiT pipeline folder such as facebook/DiT-XL-2-256, our "
                        "one-file pipeline, or Meta's DiT .pt with --vae)")


def has_shipped() -> bool:
    return shipped_path("attnvision.diffusion", SHIPPED).is_file()
