"""Class-conditional latent diffusion: noise -> DiT denoising steps -> VAE decode -> images.

    z_T ~ N(0, I)                                      (B, C, h, w), h = H / 8 for the SD VAE
    for t in the sampler's timesteps:
        ε_c, ε_u = DiT(z_t, t, y), DiT(z_t, t, ∅)      one batch of 2B: labels, then null labels
        ε = ε_u + s (ε_c − ε_u)                        classifier-free guidance, s = guidance_scale
        z_{t-1} = sampler.step(ε, t, z_t)
    image = VAE.decode(z_0 / scaling_factor)           in -1..1, shown as (image + 1) / 2

``DiTPipeline`` keeps diffusers' names and call (``from_pretrained``, ``pipe(class_labels,
guidance_scale=4.0, num_inference_steps=50, generator=..., output_type=...)``), so a user of
diffusers switches by changing one import; it adds ``latents=`` (start from given noise),
``height``/``width`` (any size the two models take) and ``on_step`` (watch x̂₀ form, as
``attnvision figures`` does).

Two choices follow diffusers so that a seeded run gives its images: the guided batch is stepped
whole (a stochastic sampler draws its noise for 2B samples, and the first half is kept for
both), and the initial noise is drawn as ``torch.randn((B, C, h, w), generator=generator)``.
Four differ on purpose:

- a stochastic sampler draws its noise from ``generator`` (diffusers', from the global one);
- the initial noise is scaled by the sampler's ``init_noise_sigma`` and the sampler steps the
  unscaled sample (diffusers' DiTPipeline does neither, so it cannot run Euler);
- the null label is the model's own (diffusers hard-codes ImageNet's 1000);
- a sampler with a learned variance (DDPM ``learned_range``) is given the DiT's variance
  channels instead of having them cut off.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnvision.diffusion.autoencoder_kl import AutoencoderKL, VAEConfig
from attnvision.diffusion.dit import DiT, DiTConfig, guided_output
from attnvision.diffusion.dit_checkpoints import load_dit
from attnvision.diffusion.samplers import make_scheduler
from attnvision.diffusion.vae_checkpoints import load_vae
from attnvision.errors import UserError
from attnvision.weights import existing_file, key_problems, read_weights, save_weights

PIPELINE_FORMAT = "attnvision-dit-pipeline"
# DiT's own sampler (Meta's sample.py): DDPM on the linear schedule it was trained with.
META_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
                 "beta_schedule": "linear", "prediction_type": "epsilon"}
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# diffusers' DiTPipeline default and DiT's paper's samples: the scale of a model that stores none.
DEFAULT_GUIDANCE = 4.0

StepCallback = Callable[[int, Tensor, Tensor, Tensor], None]


@dataclass
class ImagePipelineOutput:
    """diffusers' result: ``images`` (PIL list, (B, H, W, 3) array in 0..1, tensor or latents)."""

    images: Any


class DiTPipeline:
    """A DiT denoiser, a KL autoencoder and a sampler, run as diffusers' ``DiTPipeline``."""

    def __init__(self, transformer: DiT, vae: AutoencoderKL, scheduler: Any,
                 id2label: dict[int, str] | None = None,
                 guidance_scale: float = DEFAULT_GUIDANCE) -> None:
        self.transformer = transformer.eval()
        # The model's own default scale (our one-file pipelines may store one; diffusers'
        # folders and Meta's files cannot, and get diffusers' 4).
        self.guidance_scale = float(guidance_scale)
        self.vae = vae.eval()
        self.scheduler = make_scheduler(scheduler)
        self.stored_scheduler_config: dict[str, Any] | None = None  # as read from a file
        # ImageNet-style "label, synonym" strings -> class id, as diffusers' ``labels``.
        self.id2label = {int(k): v for k, v in (id2label or {}).items()}
        self.labels = dict(sorted((name.strip(), int(k)) for k, v in self.id2label.items()
                                  for name in v.split(",")))

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], scheduler: Any = None,
                        vae: str | os.PathLike[str] | AutoencoderKL | None = None,
                        torch_dtype: torch.dtype | None = None) -> DiTPipeline:
        """A diffusers pipeline folder (``model_index.json``, ``transformer/``, ``vae/``,
        ``scheduler/``), our one-file pipeline (:func:`save_pipeline`), or a lone DiT (a diffusers
        ``transformer`` folder or Meta's ``.pt``) with ``vae=`` naming the autoencoder.

        ``scheduler`` switches the sampler (a name such as ``"dpm++"`` or a scheduler object)
        and keeps the trained noise schedule read from the files.
        """
        path = local_or_hub(path)
        if path.is_file() and is_pipeline_file(path):
            pipe = _read_pipeline_file(path)
        elif (path / "model_index.json").is_file():
            pipe = _read_pipeline_folder(path)
        else:
            transformer = load_dit(path)  # says so in one line if the file is no DiT
            if vae is None:
                raise UserError(f"{path} holds a DiT alone: give the autoencoder too (--vae "
                                "DIR|FILE, e.g. stabilityai/sd-vae-ft-mse as downloaded)")
            vae_model = vae if isinstance(vae, AutoencoderKL) else load_vae(vae)
            pipe = cls(transformer, vae_model, make_scheduler("ddpm", META_SCHEDULE))
        if scheduler is not None:
            pipe.scheduler = pipe.sampler_like(scheduler)
        if torch_dtype is not None:
            pipe.to(torch_dtype)
        return pipe

    def sampler_like(self, sampler: Any) -> Any:
        """Another sampler (a name such as ``"ddim"`` or a scheduler object) on this model's
        trained noise schedule. Built from the file's own sampler config, not the built
        sampler's: keys that sampler does not take (DPM-Solver++ has no clip_sample) still
        matter to the new one."""
        return make_scheduler(sampler, self.stored_scheduler_config or dict(self.scheduler.config))

    def to(self, dtype: torch.dtype) -> DiTPipeline:
        self.transformer.to(dtype)
        self.vae.to(dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of label strings (diffusers' name), one line naming an unknown one."""
        names = [label] if isinstance(label, str) else list(label)
        unknown = [n for n in names if n not in self.labels]
        if unknown:
            raise UserError(f"unknown label {unknown[0]!r}: choose one of "
                            f"{', '.join(list(self.labels)[:20])}"
                            + (" ..." if len(self.labels) > 20 else ""))
        return [self.labels[n] for n in names]

    # -- sizes -----------------------------------------------------------------------------

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell: 2 for each of the VAE's stride-2 levels."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def default_size(self) -> int:
        return self.transformer.config.input_size * self.vae_scale_factor

    def check_size(self, height: int, width: int) -> tuple[int, int]:
        """The latent (h, w) of an image size, or one line naming the sizes that work."""
        step = self.vae_scale_factor * self.transformer.config.patch_size
        if height < step or width < step or height % step or width % step:
            raise UserError(f"image size {width}x{height} cannot be generated: this model "
                            f"takes sides that are multiples of {step} (the VAE's "
                            f"{self.vae_scale_factor}x times the DiT's patch "
                            f"{self.transformer.config.patch_size}); it was trained at "
                            f"{self.default_size}")
        return height // self.vae_scale_factor, width // self.vae_scale_factor

    def check_labels(self, class_labels: Sequence[int]) -> Tensor:
        n = self.transformer.config.num_classes
        bad = [c for c in class_labels if not 0 <= int(c) < n]
        if bad:
            raise UserError(f"class {bad[0]} does not exist: this model knows classes 0 to "
                            f"{n - 1}")
        if len(class_labels) == 0:
            raise UserError("no class labels given: ask for at least one image")
        return torch.tensor([int(c) for c in class_labels], dtype=torch.long)

    # -- generation ------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, class_labels: Sequence[int], guidance_scale: float | None = None,
                 generator: torch.Generator | None = None, num_inference_steps: int = 50,
                 output_type: str = "pil", return_dict: bool = True,
                 latents: Tensor | None = None, height: int | None = None,
                 width: int | None = None, on_step: StepCallback | None = None,
                 progress: bool = False) -> ImagePipelineOutput | tuple[Any]:
        """Images of ``class_labels``; ``on_step(i, t, z_t, x̂₀)`` sees every step.
        ``guidance_scale`` None: the model's own (:attr:`guidance_scale`, 4 as in diffusers
        unless its file says otherwise)."""
        if guidance_scale is None:
            guidance_scale = self.guidance_scale
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"output_type {output_type!r}: choose one of {OUTPUT_TYPES}")
        if num_inference_steps < 1:
            raise UserError(f"num_inference_steps must be at least 1, got {num_inference_steps}")
        labels = self.check_labels(class_labels)
        cfg = self.transformer.config
        h, w = self.check_size(height or self.default_size, width or self.default_size)
        shape = (len(labels), cfg.in_channels, h, w)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=self.dtype)
        elif tuple(latents.shape) != shape:
            raise UserError(f"latents of shape {tuple(latents.shape)} do not fit: expected "
                            f"{shape} for {len(labels)} images of {w * self.vae_scale_factor}x"
                            f"{h * self.vae_scale_factor}")
        latents = latents.to(self.dtype) * self.scheduler.init_noise_sigma

        guided = guidance_scale > 1
        null = torch.full_like(labels, cfg.num_classes)
        y = torch.cat([labels, null]) if guided else labels
        z = torch.cat([latents, latents]) if guided else latents
        keep_variance = getattr(self.scheduler, "config", {}).get("variance_type") in (
            "learned", "learned_range")

        self.scheduler.set_timesteps(num_inference_steps)
        steps = self.scheduler.timesteps
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="denoising", unit="step")
        for i, t in enumerate(steps):
            model_in = self.scheduler.scale_model_input(z, t)
            t_batch = torch.as_tensor(t).reshape(1).expand(len(z))
            out = self.transformer(model_in, t_batch, y)  # (2B or B, C_out, h, w)
            if guided:
                half = guided_output(out, guidance_scale, cfg.guided_channels)
                out = torch.cat([half, half])
            if cfg.learn_sigma and not keep_variance:
                out = out[:, :cfg.in_channels]  # the sampler uses a fixed variance
            result = self.scheduler.step(out, t, z, generator=generator)
            n = len(labels)
            z = result.prev_sample
            if guided:  # a stochastic sampler gave the halves different noise: keep the first
                z = torch.cat([z[:n], z[:n]])
            if on_step is not None:
                x0 = result.pred_original_sample
                on_step(i, t, z[:n], x0[:n] if x0 is not None else z[:n])
        latents = z[:len(labels)]
        if output_type == "latent":
            images: Any = latents
        else:
            images = self.decode(latents)
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).float().numpy()
                if output_type == "pil":
                    images = to_pil(images)
        return ImagePipelineOutput(images) if return_dict else (images,)

    @torch.no_grad()
    def decode(self, latents: Tensor, tiled: bool = False) -> Tensor:
        """Latents -> images in 0..1, (B, 3, H, W)."""
        cfg = self.vae.config
        z = latents.to(next(self.vae.parameters()).dtype) / cfg.scaling_factor
        if cfg.shift_factor:
            z = z + cfg.shift_factor
        image = self.vae.tiled_decode(z) if tiled else self.vae.decode(z)
        return (image / 2 + 0.5).clamp(0, 1)


def to_pil(images: np.ndarray) -> list[Any]:
    """(B, H, W, 3 or 1) floats in 0..1 -> PIL images, rounded as diffusers rounds them."""
    from PIL import Image

    pixels = (images * 255).round().astype("uint8")
    if pixels.shape[-1] == 1:  # grayscale models (digits)
        return [Image.fromarray(p[..., 0], mode="L") for p in pixels]
    return [Image.fromarray(p) for p in pixels]


# -- files -----------------------------------------------------------------------------------

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def local_or_hub(name: str | os.PathLike[str]) -> Path:
    """A local file or folder, else a Hugging Face Hub id ("facebook/DiT-XL-2-256") downloaded
    (its JSON and safetensors files) when huggingface_hub is installed and the Hub is reachable.
    """
    path = Path(name)
    if path.exists() or not HUB_ID.fullmatch(str(name)):
        if not path.exists():
            raise UserError(f"checkpoint not found: {path}")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"{name} is not a local file or folder, and fetching it from the Hugging "
                        "Face Hub needs huggingface_hub (pip install huggingface_hub); or "
                        "download the folder and pass its path") from None
    try:
        return Path(snapshot_download(str(name), allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # offline, unknown repo, gated...: all the user's to fix
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{name} is not a local file or folder and could not be fetched from "
                        f"the Hugging Face Hub ({reason}): download it where there is a "
                        "network and pass the folder") from None


def is_pipeline_file(path: Path) -> bool:
    """Whether ``path`` is our one-file pipeline (:func:`save_pipeline`)."""
    if path.suffix.lower() != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == PIPELINE_FORMAT
    except Exception:  # a corrupt file: load_dit says so in its own words
        return False


def _read_pipeline_folder(path: Path) -> DiTPipeline:
    index = json.loads((path / "model_index.json").read_text())
    missing = [p for p in ("transformer", "vae", "scheduler") if not (path / p).is_dir()]
    if missing:
        raise UserError(f"{path} is a pipeline folder without {', '.join(missing)}/: download "
                        "the whole pipeline (e.g. facebook/DiT-XL-2-256)")
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    if not scheduler_file.is_file():
        raise UserError(f"{scheduler_file} is missing: download the pipeline's scheduler/ too")
    stored = json.loads(scheduler_file.read_text())
    scheduler = make_scheduler(stored.get("_class_name", "ddim"), stored)
    pipe = DiTPipeline(load_dit(path / "transformer"), load_vae(path / "vae"), scheduler,
                       index.get("id2label"))
    pipe.stored_scheduler_config = stored
    return pipe


def save_pipeline(pipe: DiTPipeline, path: str | os.PathLike[str],
                  dtype: torch.dtype | None = None, extra: dict[str, Any] | None = None) -> Path:
    """The whole pipeline in one safetensors file: both models' weights under ``transformer.``
    and ``vae.``, their configs, the sampler's config and the class names in its header."""
    from torch import nn

    both = nn.ModuleDict({"transformer": pipe.transformer, "vae": pipe.vae})
    metadata = {
        "format": PIPELINE_FORMAT,
        "transformer_config": json.dumps(asdict(pipe.transformer.config)),
        "vae_config": json.dumps(asdict(pipe.vae.config)),
        "scheduler_config": json.dumps(_plain({**(pipe.stored_scheduler_config or {}),
                                               **dict(pipe.scheduler.config)})),
        "scheduler": type(pipe.scheduler).__name__,
        "id2label": json.dumps({str(k): v for k, v in pipe.id2label.items()}),
        "guidance_scale": repr(pipe.guidance_scale),
    }
    return save_weights(both, path, metadata, extra=extra, dtype=dtype)


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, list, tuple,
                                                        type(None)))}


def _read_pipeline_file(path: Path) -> DiTPipeline:
    existing_file(path)
    sd, meta = read_weights(path)
    try:
        dit_cfg = DiTConfig(**_tuples(json.loads(meta["transformer_config"])))
        vae_cfg = VAEConfig(**_tuples(json.loads(meta["vae_config"])))
        scheduler_cfg = json.loads(meta["scheduler_config"])
        id2label = json.loads(meta.get("id2label", "{}"))
        guidance = float(meta.get("guidance_scale", DEFAULT_GUIDANCE))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} has a damaged pipeline header ({e}): save it again with "
                        "attnvision.diffusion.save_pipeline") from None
    transformer, vae = DiT(dit_cfg), AutoencoderKL(vae_cfg)
    for prefix, model in (("transformer.", transformer), ("vae.", vae)):
        part = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
        problems = key_problems(model.state_dict(), part)
        if problems:
            raise UserError(f"{path} does not fit its own {prefix[:-1]} config: {problems}")
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in part.items()})
    scheduler = make_scheduler(meta.get("scheduler", "ddim"), scheduler_cfg)
    pipe = DiTPipeline(transformer, vae, scheduler, id2label, guidance_scale=guidance)
    pipe.stored_scheduler_config = scheduler_cfg
    return pipe


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples a frozen config holds."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
