"""Samplers: turn a denoiser into images by stepping from noise x_T down to x_0.

One file per sampler, each with its update as a pure function of tensors beside its equation
and a thin scheduler class with diffusers' interface and names, so that a pipeline takes either
ours or a diffusers scheduler object:

    scheduler.set_timesteps(n);  x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=g).prev_sample

- :mod:`.ddpm`        DDPM, ancestral: x_{t-1} ~ q(x_{t-1} | x_t, x̂_0), learned variance too
- :mod:`.ddim`        DDIM: deterministic with η = 0, any number of steps
- :mod:`.dpm_solver`  DPM-Solver++ 2M: a 2nd-order multistep ODE solver, good in 10-25 steps
- :mod:`.euler`       Euler's method on the ODE in σ (Karras et al.)

:func:`make_scheduler` switches sampler while keeping the trained schedule, as diffusers users
do with ``XScheduler.from_config(pipe.scheduler.config)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from attnvision.diffusion.samplers.base import (
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    load_scheduler_config,
)
from attnvision.diffusion.samplers.ddim import DDIMScheduler, ddim_sigma, ddim_step
from attnvision.diffusion.samplers.ddpm import (
    DDPMScheduler,
    ddpm_posterior_mean,
    ddpm_sigma,
    ddpm_step,
)
from attnvision.diffusion.samplers.dpm_solver import (
    DPMSolverMultistepScheduler,
    dpm_solver_2m,
    dpm_solver_3m,
    dpm_solver_first_order,
)
from attnvision.diffusion.samplers.euler import EulerDiscreteScheduler, euler_step, euler_x0
from attnvision.errors import UserError

SCHEDULERS: dict[str, type[Scheduler]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++": DPMSolverMultistepScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "dpm-solver++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    # the class names a diffusers scheduler_config.json gives in "_class_name"
    "DDPMScheduler": DDPMScheduler,
    "DDIMScheduler": DDIMScheduler,
    "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler,
    "EulerDiscreteScheduler": EulerDiscreteScheduler,
}


def make_scheduler(name_or_object: Any, config: Mapping[str, Any] | None = None) -> Any:
    """A scheduler from a name (``SCHEDULERS``, any case) built on ``config``, a scheduler
    config dict (ours or diffusers'); a class is built the same way; an object with ``step``
    and ``set_timesteps`` (ours or diffusers') is returned as it is. ``None`` takes the class
    that the config's ``_class_name`` names."""
    target = name_or_object
    if target is None:
        target = (config or {}).get("_class_name", "ddpm")
    if isinstance(target, type):
        return target.from_config(dict(config or {}))
    if hasattr(target, "step") and hasattr(target, "set_timesteps"):
        return target
    if not isinstance(target, str):
        raise UserError(f"a sampler is a name or a scheduler object, got {type(target).__name__}")
    by_lower = {key.lower(): cls for key, cls in SCHEDULERS.items()}
    cls = SCHEDULERS.get(target.strip()) or by_lower.get(target.strip().lower())
    if cls is None:
        raise UserError(f"unknown sampler {target!r}: choose one of {', '.join(SCHEDULERS)}")
    return cls.from_config(dict(config or {}))


__all__ = [
    "SCHEDULERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "ddim_sigma",
    "ddim_step",
    "ddpm_posterior_mean",
    "ddpm_sigma",
    "ddpm_step",
    "dpm_solver_2m",
    "dpm_solver_3m",
    "dpm_solver_first_order",
    "euler_step",
    "euler_x0",
    "load_scheduler_config",
    "make_scheduler",
]
