"""Pictures of latent diffusion: image grids, the forward process, the reverse trajectory and
where a DiT block's patches look.

Each function takes images as (N, H, W, 3) or (N, H, W) arrays in 0..1 and writes a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnvision.viz.overlays import save_png


def show_image(ax: Any, image: np.ndarray, **kwargs: Any) -> None:
    """An (H, W, 3) or (H, W, 1) image in 0..1 on ``ax``, grayscale ones in grey."""
    image = np.clip(image, 0, 1)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest", **kwargs)
    else:
        ax.imshow(image, interpolation="nearest", **kwargs)


def image_grid(images: np.ndarray, rows: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, H, W[, 3]) in 0..1 -> one uint8 picture of ``rows`` rows (default: near-square),
    tiles separated by ``pad`` white pixels."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None].repeat(3, axis=-1)
    n, h, w, _ = images.shape
    rows = rows or max(1, int(np.floor(np.sqrt(n))))
    cols = -(-n // rows)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    return (grid.clip(0, 1) * 255).round().astype(np.uint8)


def save_grid(images: np.ndarray, path: str | os.PathLike[str], rows: int | None = None,
              scale: int = 1) -> Path:
    """:func:`image_grid` as a PNG, each pixel ``scale`` x ``scale`` (small digits stay
    visible)."""
    grid = image_grid(images, rows)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return save_png(grid, path)


def forward_process_figure(noised: np.ndarray, steps: Sequence[int], alpha_bar: np.ndarray,
                           path: str | os.PathLike[str]) -> Path:
    """x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε at the given ``steps`` (one image each, (N, H, W, 3)), above
    the schedule's ᾱ_t (signal kept) and 1 − ᾱ_t (noise) over every t."""
    import matplotlib.pyplot as plt

    from attnvision.viz.plots import save_figure

    n = len(noised)
    fig = plt.figure(figsize=(1.6 * n, 4.2))
    for i, (image, t) in enumerate(zip(noised, steps, strict=True)):
        ax = fig.add_subplot(2, n, i + 1)
        show_image(ax, image)
        ax.set_title(f"t = {t}\nᾱ = {alpha_bar[min(t, len(alpha_bar) - 1)]:.3f}"
                     if t > 0 else "x₀", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(2, 1, 2)
    ts = np.arange(len(alpha_bar))
    ax.plot(ts, alpha_bar, label="ᾱ_t (signal: √ᾱ_t x₀)")
    ax.plot(ts, 1 - alpha_bar, label="1 − ᾱ_t (noise variance)")
    for t in steps:
        ax.axvline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("t")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.suptitle("forward process q(x_t | x₀)", fontsize=10)
    return save_figure(fig, path)


def trajectory_figure(latents: np.ndarray, predictions: np.ndarray, steps: Sequence[int],
                      path: str | os.PathLike[str]) -> Path:
    """The reverse process: the noisy sample z_t decoded (top) and the model's estimate of the
    clean image x̂₀ (bottom) at several steps, left to right from noise to image."""
    import matplotlib.pyplot as plt

    from attnvision.viz.plots import save_figure

    n = len(steps)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i, t in enumerate(steps):
        for row, (images, name) in enumerate(((latents, "x_t"), (predictions, "x̂₀"))):
            ax = axes[row, i]
            show_image(ax, images[i])
            ax.set_title(f"{name}, t = {int(t)}", fontsize=8)
            ax.axis("off")
    fig.suptitle("reverse process: the sample and the model's x̂₀ at each step", fontsize=10)
    return save_figure(fig, path)


def patch_attention_figure(image: np.ndarray, attention: np.ndarray, grid: tuple[int, int],
                           queries: Sequence[int], path: str | os.PathLike[str],
                           title: str) -> Path:
    """Where chosen latent patches (``queries``, token indices) attend: one heat map over the
    image per query, averaged over heads. ``attention``: (heads, N, N)."""
    import matplotlib.pyplot as plt

    from attnvision.viz.plots import save_figure

    gh, gw = grid
    mean = attention.mean(0)  # (N, N)
    fig, axes = plt.subplots(1, len(queries) + 1, figsize=(2.2 * (len(queries) + 1), 2.6))
    h, w = image.shape[:2]
    extent = (0, w, h, 0)  # image and heat map on the same pixel-edge coordinates
    show_image(axes[0], image, extent=extent)
    for q in queries:
        r, c = divmod(q, gw)
        axes[0].add_patch(plt.Rectangle((c * w / gw, r * h / gh), w / gw, h / gh, fill=False,
                                        ec="red", lw=1))
    axes[0].set_title("image, query patches", fontsize=8)
    axes[0].axis("off")
    for ax, q in zip(axes[1:], queries, strict=True):
        show_image(ax, image, extent=extent)
        ax.imshow(mean[q].reshape(gh, gw), cmap="inferno", alpha=0.6, extent=extent,
                  interpolation="nearest")
        r, c = divmod(q, gw)
        ax.add_patch(plt.Rectangle((c * w / gw, r * h / gh), w / gw, h / gh, fill=False,
                                   ec="cyan", lw=1))
        ax.set_title(f"patch {q}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
