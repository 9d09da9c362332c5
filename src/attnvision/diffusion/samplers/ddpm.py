"""DDPM (Ho et al. 2020): step back through the true posterior q(x_{t-1} | x_t, x̂_0).

Given the denoiser's x̂_0, the forward process is undone one step at a time by sampling

    x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z,   z ~ N(0, I)
    μ̃_t = √ᾱ_{t-1} β_t / (1 − ᾱ_t) · x̂_0 + √α_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t) · x_t      (eq. 7)

With fewer steps than training steps, t-1 means the previous timestep of the chain and
α_t = ᾱ_t / ᾱ_{t-1}, β_t = 1 − α_t are that jump's own. σ_t² is a choice (``variance_type``):
the posterior's β̃_t, the forward β_t, or, as DiT and improved DDPM (Nichol & Dhariwal 2021)
learn it, an interpolation of the two logs read from the second half of the model's output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from attnvision.diffusion.samplers.base import (
    COMMON_CHOICES,
    COMMON_DEFAULTS,
    THRESHOLDING_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    draw_noise,
    split_learned_variance,
)
from attnvision.diffusion.schedules import alpha_sigma, per_sample, predict_x0
from attnvision.errors import UserError

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


def ddpm_posterior_mean(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor | float,
                        alpha_bar_prev: Tensor | float) -> Tensor:
    """μ̃_t = √ᾱ_{t-1} β_t / (1 − ᾱ_t) · x̂_0 + √α_t (1 − ᾱ_{t-1}) / (1 − ᾱ_t) · x_t.

    x_t, x0: (B, ...); the ᾱ: scalars or (B,). α_t = ᾱ_t / ᾱ_{t-1}, β_t = 1 − α_t.
    """
    alpha_bar_t, alpha_bar_prev = per_sample(alpha_bar_t, x_t), per_sample(alpha_bar_prev, x_t)
    alpha_t = alpha_bar_t / alpha_bar_prev
    beta_t = 1 - alpha_t
    coef_x0 = alpha_bar_prev ** 0.5 * beta_t / (1 - alpha_bar_t)
    coef_xt = alpha_t ** 0.5 * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return coef_x0 * x0 + coef_xt * x_t


def ddpm_sigma(alpha_bar_t: Tensor, alpha_bar_prev: Tensor, variance_type: str = "fixed_small",
               v: Tensor | None = None) -> Tensor:
    """σ_t, the standard deviation of the step's noise.

        fixed_small    σ_t² = β̃_t = (1 − ᾱ_{t-1}) / (1 − ᾱ_t) · β_t   (the true posterior's)
        fixed_large    σ_t² = β_t                                    (DDPM found it as good)
        learned_range  log σ_t² = u log β_t + (1 − u) log β̃_t,  u = (v + 1) / 2
                       v is the model's variance output, one per value (improved DDPM eq. 15)

    β̃_t is clamped at 1e-20: it is 0 on the last step (ᾱ_{t-1} = 1), where its log is needed.
    """
    beta_t = 1 - alpha_bar_t / alpha_bar_prev
    beta_tilde = ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t).clamp(min=1e-20)
    if variance_type == "fixed_small":
        return beta_tilde ** 0.5
    if variance_type == "fixed_large":
        return beta_t ** 0.5
    if variance_type == "learned_range":
        if v is None:
            raise UserError("variance_type 'learned_range' needs the model's variance output: "
                            "give a model output with twice the sample's channels")
        u = (v + 1) / 2
        log_variance = u * torch.log(beta_t) + (1 - u) * torch.log(beta_tilde)
        return torch.exp(0.5 * log_variance)
    raise UserError(f"unknown variance_type {variance_type!r}: choose one of "
                    f"{', '.join(VARIANCE_TYPES)}")


def ddpm_step(x_t: Tensor, x0: Tensor, alpha_bar_t: Tensor | float,
              alpha_bar_prev: Tensor | float, sigma: Tensor | float = 0.0,
              noise: Tensor | None = None) -> Tensor:
    """x_{t-1} = μ̃_t(x_t, x̂_0) + σ_t z; without ``noise`` the mean alone (the last step)."""
    mean = ddpm_posterior_mean(x_t, x0, alpha_bar_t, alpha_bar_prev)
    return mean if noise is None else mean + sigma * noise


# diffusers' DDPMScheduler keys with its defaults, and what we support of them. variance_type
# None comes with a DPM-Solver config, which has no variance: DDPM then takes β̃, as diffusers.
DDPM_DEFAULTS = {
    **COMMON_DEFAULTS, **THRESHOLDING_DEFAULTS,
    "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0,
}
DDPM_CHOICES = {
    **COMMON_CHOICES, "thresholding": (False,), "variance_type": (*VARIANCE_TYPES, None),
}


class DDPMScheduler(Scheduler):
    """diffusers' ``DDPMScheduler``: same config keys, defaults, timesteps and random draws."""

    DEFAULTS = DDPM_DEFAULTS
    CHOICES = DDPM_CHOICES

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.variance_type = self.config.variance_type or "fixed_small"

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None,
                      ) -> None:
        """Choose the ``num_inference_steps`` timesteps of the chain (``timesteps``, int64)."""
        self._set_integer_timesteps(num_inference_steps, device)

    def previous_timestep(self, timestep: int) -> int:
        """The chain's next timestep after ``timestep``; -1 after the last (ᾱ_{-1} = 1)."""
        if self.num_inference_steps is None:
            return timestep - 1  # the full chain of training steps
        where = (self.timesteps.cpu() == timestep).nonzero()
        if len(where) == 0:
            raise UserError(f"timestep {timestep} is not one of this scheduler's timesteps")
        index = int(where[0, 0])
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
             generator: torch.Generator | list | None = None,
             return_dict: bool = True) -> SchedulerOutput | tuple:
        """x_{t-1} from the model's output at x_t = ``sample``.

        model_output: (B, C, ...) or, with a learned variance, (B, 2C, ...) whose second half
        is v (any other variance_type ignores that half).
        """
        t = int(timestep)
        prev_t = self.previous_timestep(t)
        prediction, v = split_learned_variance(model_output, sample)
        alpha_bar_t = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else torch.tensor(1.0)

        alpha, sigma = alpha_sigma(alpha_bar_t)
        x0 = predict_x0(prediction, sample, alpha, sigma, self.config.prediction_type)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)

        noise = None
        if t > 0:  # training step 0 ends the chain: its mean is the sample, no noise drawn
            noise = draw_noise(prediction.shape, generator, prediction.device, prediction.dtype)
        std = ddpm_sigma(alpha_bar_t, alpha_bar_prev, self.variance_type, v)
        prev_sample = ddpm_step(sample, x0, alpha_bar_t, alpha_bar_prev, std, noise)
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)
