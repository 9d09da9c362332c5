"""DDIM (Song et al. 2021): jump from x_t straight to where x̂_0 and ε̂ say x_{t-1} lies.

A DDPM-trained model also fits a family of non-Markovian forward processes with the same
q(x_t | x_0); their reverse step (eq. 12) is

    x_{t-1} = √ᾱ_{t-1} x̂_0  +  √(1 − ᾱ_{t-1} − σ_t²) ε̂  +  σ_t z
              "predicted x_0"   "direction pointing to x_t"  random noise
    σ_t = η √((1 − ᾱ_{t-1}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t-1})                           (eq. 16)

η = 0 is deterministic (an ODE solver: few steps, and the same noise always gives the same
image); η = 1 is DDPM. If ε̂ is the true noise of x_t, x̂_0 is the true x_0 and every step stays
on the line x = √ᾱ x_0 + √(1 − ᾱ) ε̂: any number of steps ends on x_0 exactly.
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
from attnvision.diffusion.schedules import (
    alpha_sigma,
    eps_from_x0,
    per_sample,
    predict_eps,
    predict_x0,
    x0_from_eps,
)
from attnvision.errors import UserError


def ddim_sigma(alpha_bar_t: Tensor | float, alpha_bar_prev: Tensor | float,
               eta: float = 0.0) -> Tensor | float:
    """σ_t = η √((1 − ᾱ_{t-1}) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_{t-1})); η = 1 gives DDPM's β̃_t."""
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
    return eta * variance ** 0.5


def ddim_step(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor | float,
              alpha_bar_prev: Tensor | float, eta: float = 0.0, noise: Tensor | None = None,
              x0: Tensor | None = None) -> Tensor:
    """x_{t-1} = √ᾱ_{t-1} x̂_0 + √(1 − ᾱ_{t-1} − σ_t²) ε̂ + σ_t z.

    x_t, eps: (B, ...); the ᾱ: scalars or (B,). ``x0`` defaults to (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t;
    give it when x̂_0 was found otherwise (v-prediction) or clipped. ``noise`` is z (η > 0).
    """
    alpha_bar_t, alpha_bar_prev = per_sample(alpha_bar_t, x_t), per_sample(alpha_bar_prev, x_t)
    if x0 is None:
        x0 = x0_from_eps(x_t, eps, *alpha_sigma(alpha_bar_t))
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = (1 - alpha_bar_prev - sigma ** 2) ** 0.5 * eps
    x_prev = alpha_bar_prev ** 0.5 * x0 + direction
    return x_prev if noise is None else x_prev + sigma * noise


# diffusers' DDIMScheduler keys with its defaults, and what we support of them.
DDIM_DEFAULTS = {
    **COMMON_DEFAULTS, **THRESHOLDING_DEFAULTS,
    "clip_sample": True, "set_alpha_to_one": True, "clip_sample_range": 1.0,
}
DDIM_CHOICES = {**COMMON_CHOICES, "thresholding": (False,)}


class DDIMScheduler(Scheduler):
    """diffusers' ``DDIMScheduler``: same config keys, defaults, timesteps and random draws.

    As in diffusers, the step goes from t to t − T // n whatever the spacing (with "linspace"
    that is not exactly the next timestep), and after the last step ᾱ is 1 if
    ``set_alpha_to_one`` else ᾱ_0.
    """

    DEFAULTS = DDIM_DEFAULTS
    CHOICES = DDIM_CHOICES

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.final_alpha_cumprod = (torch.tensor(1.0) if self.config.set_alpha_to_one
                                    else self.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None,
                      ) -> None:
        """Choose the ``num_inference_steps`` timesteps of the chain (``timesteps``, int64)."""
        self._set_integer_timesteps(num_inference_steps, device)

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
             eta: float = 0.0, use_clipped_model_output: bool = False,
             generator: torch.Generator | list | None = None,
             variance_noise: Tensor | None = None,
             return_dict: bool = True) -> SchedulerOutput | tuple:
        """x_{t-1} from the model's output at x_t = ``sample``; η = ``eta``.

        ``use_clipped_model_output`` recomputes ε̂ from the clipped x̂_0; ``variance_noise``
        gives z instead of drawing it from ``generator``.
        """
        self._check_ready()
        t = int(timestep)
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alpha_bar_t = self.alphas_cumprod[t]
        alpha_bar_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod

        prediction, _ = split_learned_variance(model_output, sample)
        alpha, sigma = alpha_sigma(alpha_bar_t)
        kind = self.config.prediction_type
        x0 = predict_x0(prediction, sample, alpha, sigma, kind)
        eps = predict_eps(prediction, sample, alpha, sigma, kind)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        if use_clipped_model_output:
            eps = eps_from_x0(sample, x0, alpha, sigma)

        noise = None
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise UserError("give DDIM's step either a generator or variance_noise, not both")
            noise = variance_noise
            if noise is None:
                noise = draw_noise(prediction.shape, generator, prediction.device,
                                   prediction.dtype)
        prev_sample = ddim_step(sample, eps, alpha_bar_t, alpha_bar_prev, eta, noise, x0=x0)
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)
