"""A small random-weight latent diffusion pipeline (a 2-level VAE and a 2-block DiT over 8x8
latents, 16x16 images, 10 classes) for the command-line and figure tests."""

from pathlib import Path

import torch

from attnvision.diffusion import (
    AutoencoderKL,
    DiT,
    DiTConfig,
    DiTPipeline,
    VAEConfig,
    make_scheduler,
    save_pipeline,
)

SIZE = 16  # pixels; latents of 8 x 8
CLASSES = 10
LABELS = {0: "zero, nought", 7: "seven"}


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Every weight random (a fresh DiT's adaLN-Zero would make it output zeros)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def small_pipeline(seed: int = 0) -> DiTPipeline:
    dit = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2,
                        num_heads=2, num_classes=CLASSES, learn_sigma=True))
    vae = AutoencoderKL(VAEConfig(block_out_channels=(16, 32), layers_per_block=1,
                                  latent_channels=4, norm_num_groups=8, sample_size=SIZE))
    randomize(dit, seed)
    randomize(vae, seed + 1, 0.1)
    scheduler = make_scheduler("ddim", {"num_train_timesteps": 1000,
                                        "beta_schedule": "linear", "clip_sample": False})
    return DiTPipeline(dit, vae, scheduler, id2label=LABELS)


def small_pipeline_file(path: Path, seed: int = 0) -> Path:
    return save_pipeline(small_pipeline(seed), path)


def small_digits_pipeline(seed: int = 0) -> DiTPipeline:
    """The shipped digits model's shapes (28 x 28 grayscale, 4 x 7 x 7 latents, patch 1),
    tiny and random."""
    dit = DiT(DiTConfig(input_size=7, patch_size=1, in_channels=4, hidden_size=32, depth=1,
                        num_heads=2, num_classes=CLASSES, learn_sigma=False,
                        guided_channels=4))
    vae = AutoencoderKL(VAEConfig(in_channels=1, out_channels=1, block_out_channels=(16, 16, 16),
                                  layers_per_block=1, latent_channels=4, norm_num_groups=8,
                                  sample_size=28))
    randomize(dit, seed)
    randomize(vae, seed + 1, 0.1)
    scheduler = make_scheduler("dpm++", {"num_train_timesteps": 1000, "beta_schedule": "linear"})
    return DiTPipeline(dit, vae, scheduler, id2label={i: str(i) for i in range(CLASSES)})
