"""DPM-Solver++ (Lu et al. 2022), multistep: an exponential integrator of the diffusion ODE.

Written for the data prediction x̂_θ(x, λ) in λ = log(α_t / σ_t) (half the log-SNR), the
probability-flow ODE has the exact solution from s to t (h = λ_t − λ_s > 0)

    x_t = (σ_t / σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^λ x̂_θ dλ

whose linear part is solved exactly; only x̂_θ is approximated. Constant x̂_θ (1st order; DDIM):

    x_t = (σ_t / σ_s) x_s − α_t (e^{−h} − 1) x̂_s

2M (the paper's Algorithm 2) also uses the previous step's x̂, at s1 before s, with r = h_prev / h:

    D = (x̂_s − x̂_{s1}) / r
    x_t = (σ_t / σ_s) x_s − α_t (e^{−h} − 1) (x̂_s + D / 2)                      (midpoint)
    x_t = (σ_t / σ_s) x_s − α_t (e^{−h} − 1) x̂_s + α_t ((e^{−h} − 1) / h + 1) D  (heun)

The functions take diffusers' ``sigmas``, the noise-to-signal ratio σ = √((1 − ᾱ) / ᾱ), from
which α_t = 1 / √(1 + σ²) and σ_t = σ α_t. The last step goes to σ = 0 (λ = ∞, e^{−h} = 0),
where the first-order update is x̂_s itself; it is taken at first order, as diffusers does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnvision.diffusion.samplers.base import (
    COMMON_CHOICES,
    COMMON_DEFAULTS,
    THRESHOLDING_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    split_learned_variance,
)
from attnvision.diffusion.schedules import (
    alpha_sigma,
    noise_to_signal,
    predict_x0,
    spaced_timesteps,
)


def vp_alpha_sigma_lambda(sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(α_t, σ_t, λ_t) of noise-to-signal ratio σ: 1 / √(1 + σ²), σ α_t, log α_t − log σ_t."""
    alpha_t = 1 / ((sigma ** 2 + 1) ** 0.5)
    sigma_t = sigma * alpha_t
    return alpha_t, sigma_t, torch.log(alpha_t) - torch.log(sigma_t)


def dpm_solver_first_order(x: Tensor, x0: Tensor, sigma_s: Tensor, sigma_t: Tensor) -> Tensor:
    """x_t = (σ_t / σ_s) x_s − α_t (e^{−h} − 1) x̂_s, from ratio ``sigma_s`` to ``sigma_t``."""
    _, vp_sigma_s, lambda_s = vp_alpha_sigma_lambda(sigma_s)
    alpha_t, vp_sigma_t, lambda_t = vp_alpha_sigma_lambda(sigma_t)
    h = lambda_t - lambda_s
    return (vp_sigma_t / vp_sigma_s) * x - (alpha_t * (torch.exp(-h) - 1.0)) * x0


def dpm_solver_2m(x: Tensor, x0: Tensor, x0_prev: Tensor, sigma_prev: Tensor, sigma_s: Tensor,
                  sigma_t: Tensor, solver_type: str = "midpoint") -> Tensor:
    """The 2nd-order multistep update from s to t with x̂_s and x̂ of the step before (s1)."""
    _, _, lambda_s1 = vp_alpha_sigma_lambda(sigma_prev)
    _, vp_sigma_s, lambda_s = vp_alpha_sigma_lambda(sigma_s)
    alpha_t, vp_sigma_t, lambda_t = vp_alpha_sigma_lambda(sigma_t)
    h, h_prev = lambda_t - lambda_s, lambda_s - lambda_s1
    r = h_prev / h
    d = (1.0 / r) * (x0 - x0_prev)  # ≈ h · dx̂/dλ: the slope the 1st-order step ignores
    x_t = (vp_sigma_t / vp_sigma_s) * x - (alpha_t * (torch.exp(-h) - 1.0)) * x0
    if solver_type == "midpoint":
        return x_t - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d
    return x_t + (alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0)) * d


def dpm_solver_3m(x: Tensor, x0s: tuple[Tensor, Tensor, Tensor],
                  sigmas: tuple[Tensor, Tensor, Tensor], sigma_t: Tensor) -> Tensor:
    """The 3rd-order update: x̂ and σ at s2, s1, s (oldest first); a quadratic in λ for x̂."""
    (m2, m1, m0), (sigma_s2, sigma_s1, sigma_s) = x0s, sigmas
    _, _, lambda_s2 = vp_alpha_sigma_lambda(sigma_s2)
    _, _, lambda_s1 = vp_alpha_sigma_lambda(sigma_s1)
    _, vp_sigma_s, lambda_s = vp_alpha_sigma_lambda(sigma_s)
    alpha_t, vp_sigma_t, lambda_t = vp_alpha_sigma_lambda(sigma_t)
    h, h_0, h_1 = lambda_t - lambda_s, lambda_s - lambda_s1, lambda_s1 - lambda_s2
    r0, r1 = h_0 / h, h_1 / h
    d1_0, d1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)  # first derivative, second-order accurate
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)  # second derivative
    phi = torch.exp(-h) - 1.0
    return ((vp_sigma_t / vp_sigma_s) * x - (alpha_t * phi) * m0
            + (alpha_t * (phi / h + 1.0)) * d1 - (alpha_t * ((phi + h) / h ** 2 - 0.5)) * d2)


# diffusers' DPMSolverMultistepScheduler keys with its defaults, and what we support of them.
DPM_DEFAULTS = {
    **COMMON_DEFAULTS, **THRESHOLDING_DEFAULTS,
    "solver_order": 2, "algorithm_type": "dpmsolver++", "solver_type": "midpoint",
    "lower_order_final": True, "euler_at_final": False, "use_karras_sigmas": False,
    "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_lu_lambdas": False,
    "use_flow_sigmas": False, "flow_shift": 1.0, "final_sigmas_type": "zero",
    "lambda_min_clipped": -float("inf"), "variance_type": None, "timestep_spacing": "linspace",
    "use_dynamic_shifting": False, "time_shift_type": "exponential",
}
DPM_CHOICES = {
    **COMMON_CHOICES, "thresholding": (False,), "solver_order": (1, 2, 3),
    "algorithm_type": ("dpmsolver++",), "solver_type": ("midpoint", "heun"),
    "lower_order_final": (True, False), "euler_at_final": (False, True),
    "final_sigmas_type": ("zero", "sigma_min"), "use_dynamic_shifting": (False,),
    **{f"use_{kind}_sigmas": (False, None) for kind in ("karras", "exponential", "beta", "flow")},
    "use_lu_lambdas": (False, None),
}


class DPMSolverMultistepScheduler(Scheduler):
    """diffusers' ``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"``.

    Orders 1-3, midpoint or heun 2nd order, ``lower_order_final`` (1st order for the last step
    and 2nd for the one before when fewer than 15 steps: stabler), ``euler_at_final``,
    ``final_sigmas_type`` "zero" or "sigma_min", ``lambda_min_clipped``. Karras/exponential/
    beta/Lu/flow sigmas, thresholding, dynamic shifting and the SDE variants are not supported.
    The step returns x̂_0 too (diffusers' keeps it only in ``model_outputs``).
    """

    DEFAULTS = DPM_DEFAULTS
    CHOICES = DPM_CHOICES

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        if self.config.rescale_betas_zero_snr:
            # ᾱ = 0 would make σ infinite: diffusers keeps a tiny ᾱ instead
            self.alphas_cumprod[-1] = 2 ** -24
        self.sigmas = noise_to_signal(self.alphas_cumprod)
        self._reset()

    def _reset(self) -> None:
        self.model_outputs: list[Tensor | None] = [None] * self.config.solver_order
        self.lower_order_nums = 0
        self.step_index: int | None = None

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None,
                      ) -> None:
        """Choose the timesteps (int64) and their σ, followed by the final σ (0 or σ_min).

        The spacing is of n + 1 points of which the last (t = 0) is dropped: the final step
        goes to σ = 0 instead. ``lambda_min_clipped`` cuts the noisiest steps off first.
        """
        self._check_steps(num_inference_steps, at_most_train=False)
        c, n = self.config, num_inference_steps
        alpha_t, sigma_t = alpha_sigma(self.alphas_cumprod)
        lambdas = torch.log(alpha_t) - torch.log(sigma_t)
        last = c.num_train_timesteps - int((lambdas < c.lambda_min_clipped).sum())
        if c.timestep_spacing == "trailing":  # the unclipped step T/n, from the clipped end
            steps = torch.from_numpy(np.arange(last, 0, -c.num_train_timesteps / n).round() - 1)
        else:
            steps = spaced_timesteps(last, n + 1, c.timestep_spacing, c.steps_offset)[:-1]
        steps = steps.round().long()
        self._set_sigmas(steps)
        self.timesteps = steps.to(device)
        self.num_inference_steps = len(steps)
        self._reset()

    def _index_of(self, timestep: int | Tensor) -> int:
        # the second match if a timestep repeats, as diffusers (an img2img start mid-chain)
        matches = (self.timesteps.cpu() == torch.as_tensor(timestep).cpu()).nonzero()
        if len(matches) == 0:
            return len(self.timesteps) - 1
        return int(matches[1 if len(matches) > 1 else 0, 0])

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
             generator: torch.Generator | list | None = None,
             return_dict: bool = True) -> SchedulerOutput | tuple:
        """x at the next σ from the model's output at x = ``sample`` (no noise is drawn)."""
        self._check_ready()
        if self.step_index is None:
            self.step_index = self._index_of(timestep)
        c, i, n = self.config, self.step_index, len(self.timesteps)
        few_steps = c.lower_order_final and n < 15
        final_first_order = i == n - 1 and (c.euler_at_final or few_steps
                                            or c.final_sigmas_type == "zero")
        final_second_order = i == n - 2 and few_steps

        prediction, _ = split_learned_variance(model_output, sample)
        alpha_t, sigma_t, _ = vp_alpha_sigma_lambda(self.sigmas[i])
        x0 = predict_x0(prediction, sample, alpha_t, sigma_t, c.prediction_type)
        self.model_outputs = [*self.model_outputs[1:], x0]

        x = sample.to(torch.float32)
        s = self.sigmas
        if c.solver_order == 1 or self.lower_order_nums < 1 or final_first_order:
            prev_sample = dpm_solver_first_order(x, x0, s[i], s[i + 1])
        elif c.solver_order == 2 or self.lower_order_nums < 2 or final_second_order:
            prev_sample = dpm_solver_2m(x, x0, self.model_outputs[-2], s[i - 1], s[i], s[i + 1],
                                        c.solver_type)
        else:
            prev_sample = dpm_solver_3m(x, tuple(self.model_outputs[-3:]),
                                        (s[i - 2], s[i - 1], s[i]), s[i + 1])
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self.step_index += 1
        prev_sample = prev_sample.to(prediction.dtype)
        if not return_dict:
            return prev_sample, x0
        return SchedulerOutput(prev_sample, x0)

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """α_t x_0 + σ_t ε at timesteps of this chain (from ``sigmas``, as diffusers)."""
        indices = [self._index_of(t) for t in timesteps]
        sigma = self.sigmas.to(original_samples.device, original_samples.dtype)[indices]
        alpha_t, sigma_t, _ = vp_alpha_sigma_lambda(sigma)
        shape = (-1, *([1] * (original_samples.ndim - 1)))
        return alpha_t.reshape(shape) * original_samples + sigma_t.reshape(shape) * noise
