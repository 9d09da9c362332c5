"""The course's latent diffusion pictures, drawn by running the library's own pipeline.

For ``attnvision figures``:

- ``forward_process.png``: an image noised by q(x_t | x₀) at t = 0 … T, with the schedule's ᾱ_t
  (the model's schedule when there is a model, else DDPM's linear one);
- ``denoising_trajectory.png``: one generation watched step by step, the sample x_t and the
  model's estimate x̂₀ decoded at several steps;
- ``dit_attention.png``: where a few latent patches look in a DiT block's self-attention (the
  heads' mean), at the middle of the trajectory, over the image the run ends on.

For ``attnvision demo`` (any class-conditional pipeline; the shipped digits by default): a grid
with one row per class, one noise denoised under every class, the effect of the guidance
scale, and a real digit's forward process beside a generation's reverse one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnvision.diffusion.schedules import alphas_cumprod, make_betas
from attnvision.viz.diffusion import (
    forward_process_figure,
    patch_attention_figure,
    show_image,
    trajectory_figure,
)

FORWARD_STEPS = (0, 50, 100, 200, 400, 600, 800, 999)
TRAJECTORY_STEPS = 6  # pictures along the reverse process


def forward_process_picture(image: np.ndarray, path: str | os.PathLike[str],
                            pipe: Any = None, seed: int = 0) -> Path:
    """``image`` (H, W, 3) uint8 or 0..1 noised in pixel space, x_t = √ᾱ_t x + √(1 − ᾱ_t) ε on
    the -1..1 scale the models see."""
    if pipe is not None:
        ab = pipe.scheduler.alphas_cumprod.double()
    else:
        ab = alphas_cumprod(make_betas("linear", 1000, 0.0001, 0.02)).double()
    x0 = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if x0.max() > 1.5:
        x0 = x0 / 255.0
    x0 = x0 * 2 - 1
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=g)
    steps = [t for t in FORWARD_STEPS if t < len(ab)]
    noised = []
    for t in steps:
        a = float(ab[t]) if t > 0 else 1.0
        xt = a ** 0.5 * x0 + (1 - a) ** 0.5 * eps
        noised.append(((xt + 1) / 2).clamp(0, 1).numpy())
    return forward_process_figure(np.stack(noised), steps, ab.numpy(), path)


@torch.no_grad()
def reverse_process_pictures(pipe: Any, out: str | os.PathLike[str], class_label: int,
                             steps: int = 25, seed: int = 0, guidance: float | None = None,
                             queries: int = 3) -> dict[str, Path]:
    """The denoising trajectory and the DiT attention pictures of one generation."""
    out = Path(out)
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []

    def keep(i: int, t: torch.Tensor, z: torch.Tensor, x0: torch.Tensor) -> None:
        seen.append((int(t), z[:1].clone(), x0[:1].clone()))

    g = torch.Generator().manual_seed(seed)
    result = pipe([class_label], guidance_scale=guidance, num_inference_steps=steps,
                  generator=g, output_type="latent", on_step=keep)
    picks = np.unique(np.linspace(0, len(seen) - 1, TRAJECTORY_STEPS).round().astype(int))
    z_t = torch.cat([seen[i][1] for i in picks])
    x0 = torch.cat([seen[i][2] for i in picks])
    decoded = [pipe.decode(v).permute(0, 2, 3, 1).float().numpy() for v in (z_t, x0)]
    files = {"denoising_trajectory": trajectory_figure(
        decoded[0], decoded[1], [seen[i][0] for i in picks], out / "denoising_trajectory.png")}

    # The attention of the middle block at the middle step, on that step's sample: early
    # steps look everywhere, late ones mostly at their neighbours.
    t_mid, z_mid, _ = seen[len(seen) // 2]
    dit = pipe.transformer
    label = torch.tensor([class_label])
    model_in = pipe.scheduler.scale_model_input(z_mid, torch.tensor(t_mid))
    _, maps = dit(model_in.to(pipe.dtype), torch.tensor([t_mid]), label, return_attention=True)
    block = len(maps) // 2
    cfg = dit.config
    gh, gw = z_mid.shape[-2] // cfg.patch_size, z_mid.shape[-1] // cfg.patch_size
    final = pipe.decode(result.images).permute(0, 2, 3, 1).float().numpy()[0]
    n = gh * gw
    chosen = [int(q) for q in np.linspace(0, n - 1, queries + 2)[1:-1].round()]
    files["dit_attention"] = patch_attention_figure(
        final, maps[block][0].float().numpy(), (gh, gw), chosen, out / "dit_attention.png",
        f"DiT block {block} of {len(maps)}, t = {t_mid}: where each latent patch attends")
    return files


# -- the demo's generation pictures (any class-conditional pipeline) -------------------------

def _images(pipe: Any, labels: list[int], noise: torch.Tensor, guidance: float | None,
            steps: int) -> np.ndarray:
    """(N, H, W, C) in 0..1: ``labels`` generated from the given initial ``noise``."""
    out = pipe(labels, guidance_scale=guidance, num_inference_steps=steps, latents=noise,
               output_type="pt")
    return out.images.permute(0, 2, 3, 1).float().numpy()


def _noise(pipe: Any, n: int, seed: int) -> torch.Tensor:
    cfg = pipe.transformer.config
    side = cfg.input_size
    return torch.randn((n, cfg.in_channels, side, side), generator=torch.Generator().manual_seed(
        seed))


def class_grid_picture(pipe: Any, path: str | os.PathLike[str], per_class: int = 10,
                       steps: int = 25, guidance: float | None = None, seed: int = 0) -> Path:
    """One row per class, ``per_class`` samples each (the default sampler and guidance)."""
    from attnvision.viz.diffusion import save_grid

    classes = pipe.transformer.config.num_classes
    labels = [c for c in range(classes) for _ in range(per_class)]
    images = _images(pipe, labels, _noise(pipe, len(labels), seed), guidance, steps)
    return save_grid(images, path, rows=classes, scale=max(1, 64 // images.shape[1]))


def same_noise_picture(pipe: Any, path: str | os.PathLike[str], samples: int = 4,
                       steps: int = 25, guidance: float | None = None, seed: int = 1) -> Path:
    """Column j: one initial noise; row c: denoised as class c. Only the label differs along a
    column: it reaches the DiT through the adaLN shifts, scales and gates of every block."""
    from attnvision.viz.diffusion import save_grid

    classes = pipe.transformer.config.num_classes
    noise = _noise(pipe, samples, seed).repeat(classes, 1, 1, 1)
    labels = [c for c in range(classes) for _ in range(samples)]
    images = _images(pipe, labels, noise, guidance, steps)
    return save_grid(images, path, rows=classes, scale=max(1, 64 // images.shape[1]))


def guidance_picture(pipe: Any, path: str | os.PathLike[str],
                     scales: tuple[float, ...] = (1.0, 1.5, 4.0, 8.0), samples: int = 8,
                     steps: int = 25, seed: int = 2) -> Path:
    """Row i: the same noises and classes under guidance scale ``scales[i]``; 1 is no
    guidance (the conditional model alone), larger ones push each sample towards its class."""
    import matplotlib.pyplot as plt

    from attnvision.viz.diffusion import image_grid
    from attnvision.viz.plots import save_figure

    classes = pipe.transformer.config.num_classes
    labels = [i % classes for i in range(samples)]
    noise = _noise(pipe, samples, seed)
    rows = [image_grid(_images(pipe, labels, noise, s, steps), rows=1) for s in scales]
    fig, axes = plt.subplots(len(scales), 1, figsize=(1.1 * samples, 1.3 * len(scales)))
    for ax, row, s in zip(np.atleast_1d(axes), rows, scales, strict=True):
        ax.imshow(row, interpolation="nearest")
        ax.set_ylabel(f"s = {s:g}", rotation=0, ha="right", va="center")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"classifier-free guidance ε = ε_u + s (ε_c − ε_u); classes {labels}",
                 fontsize=9)
    return save_figure(fig, path)


@torch.no_grad()
def forward_reverse_picture(pipe: Any, digit: torch.Tensor, label: int,
                            path: str | os.PathLike[str], steps: int = 25,
                            guidance: float | None = None, seed: int = 3) -> Path:
    """Top: a real digit's latent z₀ noised to z_t = √ᾱ_t z₀ + √(1 − ᾱ_t) ε (decoded); bottom:
    a generation of its class, the model's x̂₀ decoded at the same t, from noise to digit."""
    import matplotlib.pyplot as plt

    from attnvision.viz.plots import save_figure

    seen: list[tuple[int, torch.Tensor]] = []
    g = torch.Generator().manual_seed(seed)
    pipe([label], guidance_scale=guidance, num_inference_steps=steps, generator=g,
         output_type="latent", on_step=lambda i, t, z, x0: seen.append((int(t), x0.clone())))
    picks = np.unique(np.linspace(0, len(seen) - 1, TRAJECTORY_STEPS).round().astype(int))
    ts = [seen[i][0] for i in picks]
    vae, ab = pipe.vae, pipe.scheduler.alphas_cumprod
    x = digit[None].to(next(vae.parameters()).dtype) * 2 - 1  # (1, C, H, W) in -1..1
    z0 = vae.encode(x).mode() * vae.config.scaling_factor
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    forward = [pipe.decode(ab[t].sqrt() * z0 + (1 - ab[t]).sqrt() * eps) for t in ts[::-1]]
    reverse = [pipe.decode(seen[i][1]) for i in picks]
    fig, axes = plt.subplots(2, len(ts) + 1, figsize=(1.3 * (len(ts) + 1), 3.0))
    show_image(axes[0, 0], digit.permute(1, 2, 0).numpy())
    axes[0, 0].set_title("x₀ (real)", fontsize=8)
    axes[1, 0].axis("off")
    for j, (image, t) in enumerate(zip(forward, ts[::-1], strict=True)):
        show_image(axes[0, j + 1], image[0].permute(1, 2, 0).float().numpy())
        axes[0, j + 1].set_title(f"z_t, t = {t}", fontsize=8)
    for j, (image, t) in enumerate(zip(reverse, ts, strict=True)):
        show_image(axes[1, j + 1], image[0].permute(1, 2, 0).float().numpy())
        axes[1, j + 1].set_title(f"x̂₀, t = {t}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"forward (top: a real {label} noised in latent space) and reverse (bottom: "
                 f"the model's x̂₀ while it draws a {label})", fontsize=9)
    return save_figure(fig, path)
