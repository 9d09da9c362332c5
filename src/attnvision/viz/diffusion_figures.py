"""The course's latent diffusion pictures, drawn by running the library's own pipeline.

- ``forward_process.png``: an image noised by q(x_t | x₀) at t = 0 … T, with the schedule's ᾱ_t
  (the model's schedule when there is a model, else DDPM's linear one);
- ``denoising_trajectory.png``: one generation watched step by step, the sample x_t and the
  model's estimate x̂₀ decoded at several steps;
- ``dit_attention.png``: where a few latent patches look in a DiT block's self-attention (the
  heads' mean), at the middle of the trajectory, over the image the run ends on.
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
                             steps: int = 25, seed: int = 0, guidance: float = 4.0,
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
