"""Noise schedules: how much signal is left at each training step t = 0 .. T-1.

The forward process adds Gaussian noise in T small steps of variance β_t, so that in one jump

    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I),     ᾱ_t = ∏_{s<=t} (1 − β_s)
    x_t = α_t x_0 + σ_t ε,  ε ~ N(0, I),           α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t), α_t² + σ_t² = 1

A denoiser predicts one of three things, each enough to find the other two given x_t:

    epsilon        ε                      x_0 = (x_t − σ_t ε) / α_t
    sample         x_0                    ε = (x_t − α_t x_0) / σ_t
    v_prediction   v = α_t ε − σ_t x_0    x_0 = α_t x_t − σ_t v,  ε = α_t v + σ_t x_t

(v: Salimans & Ho 2022, "Progressive distillation", section 4). The samplers written as ODE
solvers use the noise-to-signal ratio σ = σ_t / α_t = √((1 − ᾱ_t) / ᾱ_t) instead: x_t / α_t =
x_0 + σ ε. Schedules and timestep spacings follow diffusers' arithmetic (float32 β, the same
rounding) so that our samplers visit the same timesteps and give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from attnvision.errors import UserError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def linear_betas(num_train_timesteps: int, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> Tensor:
    """β_t evenly spaced from beta_start to beta_end: the schedule of DDPM (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)


def scaled_linear_betas(num_train_timesteps: int, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> Tensor:
    """√β_t evenly spaced, then squared: Stable Diffusion's schedule, gentler at the start."""
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps,
                          dtype=torch.float32) ** 2


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine schedule (improved DDPM, eq. 17), "squaredcos_cap_v2".

        ᾱ(t) = f(t) / f(0),  f(t) = cos²((t/T + s) / (1 + s) · π/2),  β_t = 1 − ᾱ(t+1) / ᾱ(t)

    β is capped at ``max_beta`` because ᾱ(T) = 0 would make the last β exactly 1; the small
    offset s keeps β_0 from being tiny. Computed in float64, returned in float32.
    """
    t = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta).float()


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float,
               beta_end: float, trained_betas: Sequence[float] | None = None) -> Tensor:
    """The (T,) float32 β of a named schedule, or ``trained_betas`` as given."""
    if trained_betas is not None:
        betas = torch.tensor(list(trained_betas), dtype=torch.float32)
        if len(betas) != num_train_timesteps:
            raise UserError(f"trained_betas has {len(betas)} values but num_train_timesteps is "
                            f"{num_train_timesteps}: give one β per training step")
        return betas
    if beta_schedule == "linear":
        return linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "scaled_linear":
        return scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
    if beta_schedule == "squaredcos_cap_v2":
        return cosine_betas(num_train_timesteps)
    raise UserError(f"unknown beta_schedule {beta_schedule!r}: choose one of "
                    f"{', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: Tensor) -> Tensor:
    """Lin et al. 2024 ("Common diffusion noise schedules are flawed", Algorithm 1).

    Shift √ᾱ so that the last one is 0 (pure noise at t = T-1, SNR 0), and scale it so the
    first one is unchanged; then read the β back from the ratios ᾱ_t / ᾱ_{t-1}.
    """
    sqrt_ab = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    alpha_bar = sqrt_ab ** 2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def alphas_cumprod(betas: Tensor) -> Tensor:
    """ᾱ_t = ∏_{s<=t} (1 − β_s), the fraction of signal variance left at step t."""
    return torch.cumprod(1.0 - betas, dim=0)


def per_sample(a: Tensor | float, x: Tensor) -> Tensor | float:
    """A (B,) coefficient reshaped to (B, 1, 1, ...) to scale each sample of x; scalars pass."""
    if isinstance(a, Tensor) and a.ndim == 1 and x.ndim > 1:
        return a.to(x.device).reshape(-1, *([1] * (x.ndim - 1)))
    return a


def alpha_sigma(alpha_bar: Tensor | float) -> tuple[Tensor | float, Tensor | float]:
    """(α_t, σ_t) = (√ᾱ_t, √(1 − ᾱ_t)): the weights of x_0 and ε in x_t."""
    return alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5


def add_noise(x0: Tensor, noise: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The forward process in one jump: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

    x0, noise: (B, ...); alpha_bar: a scalar or (B,), one ᾱ per sample.
    """
    alpha, sigma = alpha_sigma(per_sample(alpha_bar, x0))
    return alpha * x0 + sigma * noise


def velocity(x0: Tensor, noise: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The v-prediction target v = α_t ε − σ_t x_0 (x0, noise: (B, ...); alpha_bar: () or (B,))."""
    alpha, sigma = alpha_sigma(per_sample(alpha_bar, x0))
    return alpha * noise - sigma * x0


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """x_0 = (x_t − σ_t ε) / α_t."""
    alpha, sigma = per_sample(alpha, x_t), per_sample(sigma, x_t)
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """ε = (x_t − α_t x_0) / σ_t."""
    alpha, sigma = per_sample(alpha, x_t), per_sample(sigma, x_t)
    return (x_t - alpha * x0) / sigma


def x0_from_v(x_t: Tensor, v: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """x_0 = α_t x_t − σ_t v (put v = α ε − σ x_0 and x_t = α x_0 + σ ε in; α² + σ² = 1)."""
    alpha, sigma = per_sample(alpha, x_t), per_sample(sigma, x_t)
    return alpha * x_t - sigma * v


def eps_from_v(x_t: Tensor, v: Tensor, alpha: Tensor | float, sigma: Tensor | float) -> Tensor:
    """ε = α_t v + σ_t x_t."""
    alpha, sigma = per_sample(alpha, x_t), per_sample(sigma, x_t)
    return alpha * v + sigma * x_t


def predict_x0(model_output: Tensor, x_t: Tensor, alpha: Tensor | float,
               sigma: Tensor | float, prediction_type: str = "epsilon") -> Tensor:
    """The denoiser's estimate of x_0, whichever of ε, x_0 or v it predicts."""
    if prediction_type == "epsilon":
        return x0_from_eps(x_t, model_output, alpha, sigma)
    if prediction_type == "v_prediction":
        return x0_from_v(x_t, model_output, alpha, sigma)
    if prediction_type == "sample":
        return model_output
    raise UserError(f"unknown prediction_type {prediction_type!r}: choose one of "
                    f"{', '.join(PREDICTION_TYPES)}")


def predict_eps(model_output: Tensor, x_t: Tensor, alpha: Tensor | float,
                sigma: Tensor | float, prediction_type: str = "epsilon") -> Tensor:
    """The denoiser's estimate of ε, whichever of ε, x_0 or v it predicts."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return eps_from_v(x_t, model_output, alpha, sigma)
    if prediction_type == "sample":
        return eps_from_x0(x_t, model_output, alpha, sigma)
    raise UserError(f"unknown prediction_type {prediction_type!r}: choose one of "
                    f"{', '.join(PREDICTION_TYPES)}")


def noise_to_signal(alpha_bar: Tensor) -> Tensor:
    """σ = √((1 − ᾱ_t) / ᾱ_t): the noise level of x_t / α_t = x_0 + σ ε (Karras et al.'s σ)."""
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def spaced_timesteps(num_train_timesteps: int, num_inference_steps: int,
                     spacing: str = "leading", steps_offset: int = 0) -> Tensor:
    """The n of the T training steps that a sampler visits, descending, as float64.

        leading   t_i = i · (T // n) + offset     i = n-1 .. 0   (DDIM's paper; never T-1)
        trailing  t_i = round(T − i · T/n) − 1    i = 0 .. n-1   (starts from T-1, pure noise)
        linspace  t_i = i · (T − 1) / (n − 1)     i = n-1 .. 0   (fractional; samplers that
                                                                  index ᾱ round them)

    See Table 2 of Lin et al. 2024 for why "trailing" is better with few steps. numpy's
    ``linspace``/``arange`` make the same float rounding as diffusers, so ties round alike.
    """
    t_max, n = num_train_timesteps, num_inference_steps
    if n < 1:
        raise UserError(f"num_inference_steps must be at least 1, got {n}")
    if spacing == "leading":
        steps = (np.arange(n) * (t_max // n)).round()[::-1] + steps_offset
    elif spacing == "trailing":
        steps = np.arange(t_max, 0, -t_max / n).round() - 1
    elif spacing == "linspace":
        steps = np.linspace(0, t_max - 1, n)[::-1]
    else:
        raise UserError(f"unknown timestep_spacing {spacing!r}: choose one of "
                        f"{', '.join(TIMESTEP_SPACINGS)}")
    return torch.from_numpy(steps.astype(np.float64))


def sigmas_at(timesteps: Tensor, alpha_bar: Tensor) -> Tensor:
    """σ at (possibly fractional) timesteps, linearly interpolated between training steps.

    timesteps: (n,); alpha_bar: (T,). Returns (n,) float64; float32 timesteps are read as they
    are, since that is what the sampler later passes to the model.
    """
    sigmas = noise_to_signal(alpha_bar).numpy()
    grid = np.arange(len(sigmas))
    return torch.from_numpy(np.interp(timesteps.numpy(), grid, sigmas))
