"""The latent diffusion model that ships inside the package, when there is one.

No generation weights can be downloaded on an offline machine; ``digits`` (a small VAE + DiT
trained here on MNIST digits) is the model ``attnvision generate`` and ``demo`` use when no
``--checkpoint`` is given. An install without it says so in one line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnvision.errors import UserError

SHIPPED_NAME = "digits"
SHIPPED = "digits.safetensors"


def shipped_checkpoint() -> Path:
    """Path of the shipped one-file pipeline."""
    path = Path(str(resources.files("attnvision.diffusion") / "weights" / SHIPPED))
    if not path.is_file():
        raise UserError("this install ships no generation model: pass --checkpoint (a "
                        "diffusers DiT pipeline folder such as facebook/DiT-XL-2-256, our "
                        "one-file pipeline, or Meta's DiT .pt with --vae)")
    return path


def has_shipped() -> bool:
    try:
        shipped_checkpoint()
    except UserError:
        return False
    return True
