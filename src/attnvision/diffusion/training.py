"""Training latent diffusion on the shared loop: the autoencoder first, then the DiT on its
latents.

The shared loop (:func:`attnvision.train.loop.fit`) calls ``loss_fn(net(inputs), targets)``;
both models here are wrapped in a module whose forward returns the loss itself, so the loop's
bf16, checkpoints, resume and DDP work unchanged and the randomness (posterior samples, time
steps, noise, dropped labels) comes from the global generator the loop saves and restores.

Autoencoder (:class:`VAETraining`), images x in -1..1:

    z ~ q(z | x) = N(μ(x), σ²(x)),   x̂ = D(z)
    L = |x̂ − x|₁ + λ_p ‖φ(x̂) − φ(x)‖² + λ_KL KL(q(z | x) ‖ N(0, I))

with φ a frozen classifier's features (the perceptual term: what makes a digit readable
matters more than each pixel) and a small λ_KL that keeps the latents near N(0, I) without
blurring them. After training, ``scaling_factor`` = 1 / std of the training latents, as
Stable Diffusion's VAE sets it, so the DiT sees latents of unit variance.

Denoiser (:class:`DiTTraining`), latents z₀ of class y:

    t ~ U{0 … T−1},  ε ~ N(0, I),  z_t = √ᾱ_t z₀ + √(1 − ᾱ_t) ε
    L = ‖ε − ε_θ(z_t, t, y)‖²          (y replaced by the null class in 10 % of the examples)

An exponential moving average of the weights (EMA, the DiT paper's 0.9999; here a warm-up
min(decay, (1 + n) / (10 + n)) over the n updates made) is what ships: at the start of each
training forward it moves towards the weights the previous optimiser step left.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from attnvision.diffusion.autoencoder_kl import AutoencoderKL
from attnvision.diffusion.dit import DiT
from attnvision.diffusion.schedules import alphas_cumprod, make_betas


class VAETraining(nn.Module):
    """forward(images in 0..1, (B, C, H, W)) -> the autoencoder's training loss (a scalar)."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float = 1e-6,
                 perceptual: nn.Module | None = None, perceptual_weight: float = 0.0) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.perceptual_weight = perceptual_weight
        # Kept out of the state dict and the optimiser: a frozen judge, not a part of the model.
        self._perceptual = [perceptual.eval().requires_grad_(False)] if perceptual else []

    def forward(self, images: Tensor) -> Tensor:
        # images: (B, C, H, W) in 0..1
        x = images * 2 - 1
        posterior = self.vae.encode(x)
        recon = self.vae.decode(posterior.sample())
        loss = (recon - x).abs().mean()
        if self.kl_weight:
            loss = loss + self.kl_weight * posterior.kl().mean()
        if self._perceptual and self.perceptual_weight:
            judge = self._perceptual[0]
            loss = loss + self.perceptual_weight * F.mse_loss(
                judge(((recon + 1) / 2).clamp(0, 1)), judge(images))
        return loss


def loss_is_output(output: Tensor, targets: object) -> Tensor:
    """The loop's ``loss_fn`` for modules that return their own loss."""
    return output


@torch.no_grad()
def latent_statistics(vae: AutoencoderKL, images: Tensor, batch_size: int = 500
                      ) -> tuple[Tensor, Tensor]:
    """The posterior mean and log-variance of every image (in 0..1), (N, C, h, w) each."""
    vae.eval()
    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(images[start:start + batch_size] * 2 - 1)
        means.append(posterior.mean)
        logvars.append(posterior.logvar)
    return torch.cat(means), torch.cat(logvars)


class LatentDigits(Dataset):
    """((posterior mean and log-variance, label), label) per image: the DiT samples its
    latent z = μ + σ ε afresh at each step, as latent diffusion trains."""

    def __init__(self, mean: Tensor, logvar: Tensor, labels: Tensor) -> None:
        self.stats = torch.cat([mean, logvar], dim=1)  # (N, 2C, h, w)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        return (self.stats[i], self.labels[i]), self.labels[i]


class DiTTraining(nn.Module):
    """forward((latent statistics, labels)) -> the noise-prediction loss; keeps the EMA."""

    def __init__(self, dit: DiT, scaling_factor: float, beta_schedule: str = "linear",
                 num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, ema_decay: float = 0.9999) -> None:
        super().__init__()
        self.dit = dit
        self.ema = copy.deepcopy(dit).requires_grad_(False)
        self.scaling_factor = scaling_factor
        self.ema_decay = ema_decay
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_ema(self) -> None:
        n = int(self.ema_updates)
        decay = min(self.ema_decay, (1 + n) / (10 + n))
        for e, p in zip(self.ema.parameters(), self.dit.parameters(), strict=True):
            e.lerp_(p, 1 - decay)
        self.ema_updates += 1

    def forward(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        stats, labels = batch  # (B, 2C, h, w), (B,)
        if self.training:
            self.update_ema()
        mean, logvar = stats.chunk(2, dim=1)
        z0 = (mean + (0.5 * logvar).exp() * torch.randn_like(mean)) * self.scaling_factor
        t = torch.randint(0, len(self.alphas_cumprod), (len(z0),), device=z0.device)
        noise = torch.randn_like(z0)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        prediction = self.dit(zt, t, labels)[:, :z0.shape[1]]  # the noise channels
        return F.mse_loss(prediction.float(), noise)
