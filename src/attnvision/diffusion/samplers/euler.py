"""Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Algorithm 1 without churn).

Dividing x_t = α_t x_0 + σ_t ε by α_t gives the variance-exploding sample x = x_0 + σ ε with
σ = √((1 − ᾱ) / ᾱ), whose ODE is simply

    dx/dσ = (x − x̂_0(x, σ)) / σ          (the noise direction ε̂, scaled by dσ)
    x_next = x + (σ_next − σ) · (x − x̂_0) / σ

The model was trained on α_t-scaled inputs, so it is given x / √(σ² + 1) (``scale_model_input``)
and the chain starts from x_T = σ_max · N(0, I) (``init_noise_sigma``). The timesteps are
float: with "linspace" spacing they fall between training steps, and σ is interpolated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnvision.diffusion.samplers.base import (
    COMMON_CHOICES,
    COMMON_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    split_learned_variance,
)
from attnvision.diffusion.schedules import noise_to_signal, spaced_timesteps
from attnvision.errors import UserError


def euler_x0(model_output: Tensor, x: Tensor, sigma: Tensor,
             prediction_type: str = "epsilon") -> Tensor:
    """x̂_0 of the sample x = x_0 + σ ε (``sigma`` a scalar tensor).

        epsilon        x̂_0 = x − σ ε̂
        v_prediction   x̂_0 = −σ / √(σ² + 1) · v̂ + x / (σ² + 1)   (α_t x_in − σ_t v̂, with the
                                                                   model's input x_in = α_t x)
        sample         x̂_0 = the model's output
    """
    if prediction_type == "epsilon":
        return x - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma ** 2 + 1) ** 0.5) + (x / (sigma ** 2 + 1))
    if prediction_type in ("sample", "original_sample"):
        return model_output
    raise UserError(f"unknown prediction_type {prediction_type!r}: choose one of "
                    "epsilon, v_prediction, sample")


def euler_step(x: Tensor, x0: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """x_next = x + (σ_next − σ) · (x − x̂_0) / σ."""
    derivative = (x - x0) / sigma
    return x + derivative * (sigma_next - sigma)


# diffusers' EulerDiscreteScheduler keys with its defaults, and what we support of them.
EULER_DEFAULTS = {
    **COMMON_DEFAULTS,
    "interpolation_type": "linear", "use_karras_sigmas": False, "use_exponential_sigmas": False,
    "use_beta_sigmas": False, "sigma_min": None, "sigma_max": None,
    "timestep_spacing": "linspace", "timestep_type": "discrete", "final_sigmas_type": "zero",
}
EULER_CHOICES = {
    **COMMON_CHOICES,
    "prediction_type": ("epsilon", "v_prediction", "sample", "original_sample"),
    "interpolation_type": ("linear",), "timestep_type": ("discrete",),
    "final_sigmas_type": ("zero", "sigma_min"),
    **{f"use_{kind}_sigmas": (False, None) for kind in ("karras", "exponential", "beta")},
}


class EulerDiscreteScheduler(Scheduler):
    """diffusers' ``EulerDiscreteScheduler`` (linear σ interpolation, no churn, no Karras σ)."""

    DEFAULTS = EULER_DEFAULTS
    CHOICES = EULER_CHOICES

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        t_max = self.config.num_train_timesteps
        if self.config.rescale_betas_zero_snr:
            self.alphas_cumprod[-1] = 2 ** -24  # ᾱ = 0 would make σ_max infinite
        self.sigmas = torch.cat([noise_to_signal(self.alphas_cumprod).flip(0), torch.zeros(1)])
        self.timesteps = torch.from_numpy(np.linspace(0, t_max - 1, t_max)[::-1].copy()).float()
        self.step_index: int | None = None

    @property
    def init_noise_sigma(self) -> Tensor:
        """σ_max, the scale of the starting noise; √(σ_max² + 1) with "leading" spacing, whose
        first timestep is below T-1 (as diffusers)."""
        sigma_max = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return sigma_max
        return (sigma_max ** 2 + 1) ** 0.5

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None,
                      ) -> None:
        """Choose the float32 timesteps and their σ, followed by the final σ (0 or σ_min)."""
        self._check_steps(num_inference_steps, at_most_train=False)
        c = self.config
        steps = spaced_timesteps(c.num_train_timesteps, num_inference_steps, c.timestep_spacing,
                                 c.steps_offset).float()
        self._set_sigmas(steps)
        self.timesteps = steps.to(device)
        self.num_inference_steps = num_inference_steps
        self.step_index = None

    def _index_of(self, timestep: float | Tensor) -> int:
        # the second match if a timestep repeats, as diffusers (an img2img start mid-chain)
        matches = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu()).nonzero()
        if len(matches) == 0:
            raise UserError(f"timestep {float(timestep)} is not one of this scheduler's timesteps")
        return int(matches[1 if len(matches) > 1 else 0, 0])

    def scale_model_input(self, sample: Tensor, timestep: float | Tensor | None = None) -> Tensor:
        """The model's input x / √(σ² + 1) = α_t x, the scale it was trained on."""
        if self.step_index is None:
            self.step_index = self._index_of(timestep)
        sigma = self.sigmas[self.step_index]
        return sample / ((sigma ** 2 + 1) ** 0.5)

    def step(self, model_output: Tensor, timestep: float | Tensor, sample: Tensor,
             s_churn: float = 0.0, generator: torch.Generator | list | None = None,
             return_dict: bool = True) -> SchedulerOutput | tuple:
        """x at the next σ from the model's output at x = ``sample`` (deterministic)."""
        self._check_ready()
        if s_churn:
            raise UserError("EulerDiscreteScheduler: s_churn > 0 (stochastic Euler) is not "
                            "supported; use s_churn=0")
        if self.step_index is None:
            self.step_index = self._index_of(timestep)
        prediction, _ = split_learned_variance(model_output, sample)
        x = sample.to(torch.float32)
        sigma, sigma_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        x0 = euler_x0(prediction, x, sigma, self.config.prediction_type)
        prev_sample = euler_step(x, x0, sigma, sigma_next).to(prediction.dtype)
        self.step_index += 1
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_0 + σ ε (the σ-scaled sample this sampler steps) at timesteps of this chain."""
        sigmas = self.sigmas.to(original_samples.device, original_samples.dtype)
        sigma = sigmas[[self._index_of(t) for t in timesteps]]
        return original_samples + noise * sigma.reshape(-1, *([1] * (original_samples.ndim - 1)))
