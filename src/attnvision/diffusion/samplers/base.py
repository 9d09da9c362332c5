"""What the samplers share: a diffusers-style config, the training schedule, noise, loading.

Each scheduler class lists diffusers' ``__init__`` keys with diffusers' defaults (``DEFAULTS``)
and the values it supports (``CHOICES``). A config dict is read as diffusers reads it: unknown
keys and private ones (``_class_name``, ``_diffusers_version``) are ignored, and keys named in
``_use_default_values`` (those the original scheduler left at its own default) take this class's
default. That is what makes ``DPMSolverMultistepScheduler.from_config(ddim.config)`` keep the
trained schedule but use DPM-Solver's own timestep spacing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnvision.diffusion.schedules import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    add_noise,
    alphas_cumprod,
    make_betas,
    rescale_zero_terminal_snr,
    sigmas_at,
    spaced_timesteps,
    velocity,
)
from attnvision.errors import UserError

CONFIG_NAME = "scheduler_config.json"

# diffusers' keys shared by the four classes, with the defaults all four use.
COMMON_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "trained_betas": None, "prediction_type": "epsilon",
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}
COMMON_CHOICES: dict[str, tuple[Any, ...]] = {
    "beta_schedule": BETA_SCHEDULES, "prediction_type": PREDICTION_TYPES,
    "timestep_spacing": TIMESTEP_SPACINGS, "rescale_betas_zero_snr": (False, True),
}
THRESHOLDING_DEFAULTS: dict[str, Any] = {
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
}


class SchedulerConfig(dict):
    """The config as a dict that also reads as attributes: ``config.num_train_timesteps``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class SchedulerOutput:
    """One step's result: x_{t-1} and the x̂_0 it came from. ``out[0]`` is x_{t-1}, as in
    diffusers, where ``step(..., return_dict=False)`` returns a tuple."""

    prev_sample: Tensor
    pred_original_sample: Tensor | None = None

    def __getitem__(self, index: int) -> Tensor | None:
        return (self.prev_sample, self.pred_original_sample)[index]


def read_config(owner: str, defaults: Mapping[str, Any], choices: Mapping[str, tuple[Any, ...]],
                given: Mapping[str, Any]) -> SchedulerConfig:
    """``defaults`` updated by the keys of ``given`` that the class knows, values checked."""
    defaulted = set(given.get("_use_default_values") or ())
    explicit = {k: v for k, v in given.items() if k in defaults and k not in defaulted}
    config = SchedulerConfig({**defaults, **explicit})
    for key, allowed in choices.items():
        value = config[key]
        # a bool is no stand-in for a number here (True == 1), nor the reverse
        if not any(value == a and isinstance(value, bool) == isinstance(a, bool)
                   for a in allowed):
            raise UserError(f"{owner} does not support {key}={value!r}: choose one of "
                            f"{', '.join(repr(a) for a in allowed)}")
    for key in ("num_train_timesteps", "steps_offset"):
        if key in config and (not isinstance(config[key], int) or config[key] < 0):
            raise UserError(f"{owner}: {key} must be a whole number >= 0, got {config[key]!r}")
    if config["num_train_timesteps"] < 1:
        raise UserError(f"{owner}: num_train_timesteps must be at least 1")
    unset = sorted(set(defaults) - set(explicit))
    if unset:  # as diffusers records them, so that from_config on another class works alike
        config["_use_default_values"] = unset
    return config


def load_scheduler_config(folder: str | os.PathLike[str],
                          subfolder: str | None = "scheduler") -> dict[str, Any]:
    """The dict in ``folder/subfolder/scheduler_config.json`` (or ``folder/...json``, or the
    file itself), read as JSON: no code in the folder is run."""
    path = Path(folder)
    candidates = [path] if path.is_file() else []
    if subfolder:
        candidates.append(path / subfolder / CONFIG_NAME)
    candidates.append(path / CONFIG_NAME)
    for file in candidates:
        if file.is_file():
            try:
                config = json.loads(file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{file} is not valid JSON ({exc})") from None
            if not isinstance(config, dict):
                raise UserError(f"{file} does not hold a JSON object")
            return config
    raise UserError(f"no {CONFIG_NAME} found in {path}: looked at "
                    f"{', '.join(str(c) for c in candidates)}")


def draw_noise(shape: tuple[int, ...], generator: torch.Generator | list | None,
               device: torch.device, dtype: torch.dtype) -> Tensor:
    """N(0, I) drawn as diffusers' ``randn_tensor`` draws it, so seeded runs repeat theirs: on
    the generator's device (then moved), and one draw per sample given a list of generators."""
    if isinstance(generator, (list, tuple)):
        if len(generator) > 1:
            draws = [draw_noise((1, *shape[1:]), generator[i], device, dtype)
                     for i in range(shape[0])]
            return torch.cat(draws).to(device)
        generator = generator[0]
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)


def split_learned_variance(model_output: Tensor, sample: Tensor) -> tuple[Tensor, Tensor | None]:
    """A 2C-channel output (C = the sample's channels, as DiT's with learn_sigma) split into
    the prediction and the variance half; a C-channel output as it is, with None."""
    channels = sample.shape[1]
    if model_output.ndim > 1 and model_output.shape[1] == 2 * channels:
        prediction, variance = torch.split(model_output, channels, dim=1)
        return prediction, variance
    return model_output, None


class Scheduler:
    """The part of diffusers' scheduler interface that does not depend on the sampler."""

    DEFAULTS: ClassVar[dict[str, Any]] = COMMON_DEFAULTS
    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = COMMON_CHOICES
    order = 1
    init_noise_sigma: float | Tensor = 1.0

    def __init__(self, **config: Any) -> None:
        name = type(self).__name__
        self.config = read_config(name, self.DEFAULTS, self.CHOICES, config)
        c = self.config
        betas = make_betas(c.beta_schedule, c.num_train_timesteps, c.beta_start, c.beta_end,
                           c.trained_betas)
        if c.rescale_betas_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = alphas_cumprod(betas)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(c.num_train_timesteps - 1, -1, -1)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **overrides: Any) -> Scheduler:
        """A scheduler of this class from any diffusers scheduler config (a dict)."""
        return cls(**{**dict(config or {}), **overrides})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], subfolder: str | None = "scheduler",
                        **overrides: Any) -> Scheduler:
        """A scheduler from a folder's ``scheduler_config.json`` (diffusers' save_pretrained)."""
        return cls.from_config(load_scheduler_config(folder, subfolder), **overrides)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``folder/scheduler_config.json`` as diffusers writes it (every key given)."""
        config = {k: v for k, v in self.config.items() if not k.startswith("_")}
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        file = path / CONFIG_NAME
        file.write_text(json.dumps({"_class_name": type(self).__name__, **config}, indent=2,
                                   sort_keys=True) + "\n")
        return file

    def _check_steps(self, num_inference_steps: int, at_most_train: bool = True) -> None:
        n, t_max = num_inference_steps, self.config.num_train_timesteps
        if not isinstance(n, int) or n < 1:
            raise UserError(f"num_inference_steps must be a whole number >= 1, got {n!r}")
        if at_most_train and n > t_max:
            raise UserError(f"num_inference_steps={n} is more than the {t_max} steps the model "
                            "was trained with")

    def _set_integer_timesteps(self, num_inference_steps: int,
                               device: torch.device | str | None = None) -> None:
        """The chain of DDPM and DDIM: ``num_inference_steps`` spaced training steps, int64."""
        self._check_steps(num_inference_steps)
        c = self.config
        steps = spaced_timesteps(c.num_train_timesteps, num_inference_steps, c.timestep_spacing,
                                 c.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = steps.round().long().to(device)

    def _set_sigmas(self, steps: Tensor) -> None:
        """σ_t = √((1 − ᾱ_t) / ᾱ_t) of ``steps``, then the final σ: 0, or the smallest
        training σ with ``final_sigmas_type="sigma_min"`` (DPM-Solver++ and Euler)."""
        final = 0.0
        if self.config.final_sigmas_type == "sigma_min":
            final = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        sigmas = sigmas_at(steps, self.alphas_cumprod)
        self.sigmas = torch.cat([sigmas, torch.tensor([final], dtype=torch.float64)]).float()

    def _check_ready(self) -> None:
        if self.num_inference_steps is None:
            raise UserError(f"{type(self).__name__}.set_timesteps(num_inference_steps) must be "
                            "called before step()")

    def scale_model_input(self, sample: Tensor, timestep: Any = None) -> Tensor:
        """The model sees x_t itself (only the Euler sampler rescales it)."""
        return sample

    def add_noise(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε at integer training timesteps, one per sample."""
        alpha_bar = self.alphas_cumprod.to(original_samples.device, original_samples.dtype)
        return add_noise(original_samples, noise,
                         alpha_bar[timesteps.to(original_samples.device)].flatten())

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The v-prediction target α_t ε − σ_t x_0 for clean samples x_0 at ``timesteps``."""
        alpha_bar = self.alphas_cumprod.to(sample.device, sample.dtype)
        return velocity(sample, noise, alpha_bar[timesteps.to(sample.device)].flatten())

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.config.items() if not k.startswith("_")}
        return f"{type(self).__name__}({shown})"
