"""Pictures of tensors: heatmaps, patch grids and attention overlays, written as PNG files.

Figures are built with matplotlib's object API (no pyplot, no global state, never a window)
and saved atomically.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attnvision.files import atomic_path
from attnvision.nn.tokens import patchify, unpatchify


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def heatmap(matrix: torch.Tensor | np.ndarray, path: str | os.PathLike[str], title: str,
            xlabel: str, ylabel: str, cmap: str = "RdBu_r", symmetric: bool = True) -> Path:
    """One matrix as a colour image with a colour bar; row 0 at the top."""
    m = np.asarray(matrix, dtype=np.float64)
    fig = Figure(figsize=(7, 4.8))
    ax = fig.add_subplot()
    lim = float(np.abs(m).max()) if symmetric else None
    im = ax.imshow(m, cmap=cmap, aspect="auto", interpolation="nearest",
                   vmin=-lim if symmetric else None, vmax=lim)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def patch_grid(image: np.ndarray, patch_size: int, path: str | os.PathLike[str]) -> Path:
    """The image with its P x P grid and token numbers, beside its patches pulled apart.

    The right panel is rebuilt from the tokens by :func:`patchify`, so it shows the order in
    which the transformer receives them (row-major).
    """
    h, w, c = image.shape
    p = patch_size
    gh, gw = h // p, w // p
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    tokens = patchify(x, p)  # (1, N, P*P*C)
    patches = unpatchify(tokens.reshape(gh * gw, 1, c * p * p), p, (p, p), c)  # (N, C, P, P)
    gap = max(2, p // 6)
    canvas = np.full((gh * (p + gap) - gap, gw * (p + gap) - gap, c), 255, dtype=np.uint8)
    for n, patch in enumerate(patches.permute(0, 2, 3, 1).numpy().astype(np.uint8)):
        r, col = divmod(n, gw)
        canvas[r * (p + gap): r * (p + gap) + p, col * (p + gap): col * (p + gap) + p] = patch

    fig = Figure(figsize=(11, 5.6))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(image)
    for i in range(1, gw):
        ax1.axvline(i * p - 0.5, color="white", lw=0.8)
    for i in range(1, gh):
        ax1.axhline(i * p - 0.5, color="white", lw=0.8)
    if gh * gw <= 400:
        for n in range(gh * gw):
            r, col = divmod(n, gw)
            ax1.text(col * p + 2, r * p + 2, str(n), color="yellow", fontsize=5, va="top")
    ax1.set_title(f"{h}x{w} image, {p}x{p} patches: N = {gh * gw} tokens", fontsize=10)
    ax1.axis("off")
    ax2.imshow(canvas)
    ax2.set_title(f"tokens x_i in R^(P²C), P²C = {p * p * c}, row-major order", fontsize=10)
    ax2.axis("off")
    return save_figure(fig, path)


def attention_overlays(image: np.ndarray, attention: torch.Tensor, grid: tuple[int, int],
                       queries: Sequence[int], path: str | os.PathLike[str],
                       title: str, head_names: Sequence[str] | None = None) -> Path:
    """Rows: query tokens; columns: heads. Each panel is one row of A over the image.

    attention: (H, N, N) maps of one block for one image, N = grid[0] * grid[1].
    """
    heads = attention.shape[0]
    gh, gw = grid
    ih, iw = image.shape[:2]
    ph, pw = ih / gh, iw / gw
    names = [f"head {h}" if head_names is None else f"head {h}: {head_names[h]}"
             for h in range(heads)]
    # A panel is 2.4 inches wide: a head's name is wrapped to fit above its own panel, so the
    # titles of neighbouring heads never run into each other.
    names = [textwrap.fill(n, width=26) for n in names]
    lines = max(n.count("\n") for n in names) + 2  # the name, then the max weight
    fig = Figure(figsize=(2.4 * (heads + 1), (2.2 + 0.16 * lines) * len(queries) + 0.6),
                 layout="constrained")
    axes = fig.subplots(len(queries), heads + 1, squeeze=False)
    for row, q in zip(axes, queries, strict=True):
        qr, qc = divmod(q, gw)
        row[0].imshow(image)
        row[0].add_patch(Rectangle((qc * pw - 0.5, qr * ph - 0.5), pw, ph, fill=False,
                                   edgecolor="red", lw=2))
        row[0].set_title(f"query token {q}", fontsize=10)
        for h in range(heads):
            a = attention[h, q].reshape(gh, gw).float().numpy()
            row[h + 1].imshow(image)
            row[h + 1].imshow(a, cmap="inferno", alpha=0.65, interpolation="nearest",
                              extent=(-0.5, iw - 0.5, ih - 0.5, -0.5))
            row[h + 1].add_patch(Rectangle((qc * pw - 0.5, qr * ph - 0.5), pw, ph, fill=False,
                                           edgecolor="cyan", lw=1))
            row[h + 1].set_title(f"{names[h]}\nmax weight {a.max():.2f}", fontsize=9)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
