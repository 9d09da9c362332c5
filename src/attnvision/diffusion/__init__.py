"""Latent diffusion: the KL autoencoder, the DiT denoiser, the samplers and the pipeline.

    images <-> AutoencoderKL <-> latents;  DiT predicts the noise in a latent at step t for
    class y;  a sampler (DDPM, DDIM, DPM-Solver++, Euler) walks from noise to a latent;
    DiTPipeline runs the three as diffusers' DiTPipeline does.
"""

from attnvision.diffusion.autoencoder_kl import (
    VAE_CONFIGS,
    AutoencoderKL,
    DiagonalGaussian,
    VAEConfig,
)
from attnvision.diffusion.dit import DIT_CONFIGS, DiT, DiTConfig, guided_output
from attnvision.diffusion.dit_checkpoints import load_dit, save_dit
from attnvision.diffusion.pipeline import DiTPipeline, ImagePipelineOutput, save_pipeline
from attnvision.diffusion.samplers import (
    SCHEDULERS,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    make_scheduler,
)
from attnvision.diffusion.vae_checkpoints import load_vae, save_vae

__all__ = [
    "DIT_CONFIGS",
    "SCHEDULERS",
    "VAE_CONFIGS",
    "AutoencoderKL",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "DiT",
    "DiTConfig",
    "DiTPipeline",
    "DiagonalGaussian",
    "EulerDiscreteScheduler",
    "ImagePipelineOutput",
    "VAEConfig",
    "guided_output",
    "load_dit",
    "load_vae",
    "make_scheduler",
    "save_dit",
    "save_pipeline",
    "save_vae",
]
