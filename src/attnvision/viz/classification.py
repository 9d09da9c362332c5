"""Pictures of a classifier at work: confusion matrix, attention explanations, a gallery."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from attnvision.viz.plots import save_figure


def _show_input(ax, x: torch.Tensor) -> tuple[int, int]:
    """Draw a (C, h, w) model input, min-max scaled; return its (h, w)."""
    img = x.float()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.permute(1, 2, 0).numpy())
    return img.shape[1], img.shape[2]


def _overlay(ax, x: torch.Tensor, heat: torch.Tensor) -> None:
    h, w = _show_input(ax, x)
    ax.imshow(heat.float().numpy(), cmap="jet", alpha=0.5, interpolation="bilinear",
              extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.axis("off")


def confusion_matrix_figure(cm: Sequence[Sequence[int]], class_names: Sequence[str],
                            path: str | os.PathLike[str], title: str) -> Path:
    m = np.asarray(cm)
    n = len(class_names)
    fig = Figure(figsize=(1.2 + 0.55 * n, 0.8 + 0.5 * n))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(n), class_names)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)


def explanation_figure(image: np.ndarray, x: torch.Tensor, probabilities: torch.Tensor,
                       rollout: torch.Tensor, cls_attention: torch.Tensor,
                       class_names: Sequence[str], path: str | os.PathLike[str],
                       top_k: int = 5) -> Path:
    """Input, what the model sees, attention rollout, last-block class attention, top-k bars.

    x: (C, h, w) model input; probabilities: (K,); rollout: (gh, gw); cls_attention:
    (heads, gh, gw).
    """
    fig = Figure(figsize=(15, 3.4))
    axes = fig.subplots(1, 5)
    axes[0].imshow(image)
    axes[0].set_title("input image")
    axes[0].axis("off")
    _show_input(axes[1], x)
    axes[1].set_title("what the model sees")
    axes[1].axis("off")
    _overlay(axes[2], x, rollout)
    axes[2].set_title("attention rollout")
    _overlay(axes[3], x, cls_attention.mean(0))
    axes[3].set_title("class token, last block")
    k = min(top_k, probabilities.numel())
    top = probabilities.topk(k)
    names = [class_names[i] if i < len(class_names) else str(i) for i in top.indices.tolist()]
    axes[4].barh(range(k)[::-1], top.values.numpy(), color="tab:blue")
    axes[4].set_yticks(range(k)[::-1], names)
    axes[4].set_xlim(0, 1)
    axes[4].set_title(f"prediction: {names[0]} ({top.values[0]:.0%})")
    return save_figure(fig, path)


def gallery_figure(inputs: torch.Tensor, labels: Sequence[int], predictions: Sequence[int],
                   confidences: Sequence[float], rollouts: torch.Tensor,
                   class_names: Sequence[str], path: str | os.PathLike[str],
                   title: str) -> Path:
    """Two rows per example set: the inputs with their predictions, then attention rollout."""
    n = len(labels)
    fig = Figure(figsize=(1.6 * n, 3.8))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _show_input(axes[0, i], inputs[i])
        ok = predictions[i] == labels[i]
        axes[0, i].set_title(f"{class_names[predictions[i]]} ({confidences[i]:.0%})",
                             color="green" if ok else "red", fontsize=10)
        axes[0, i].axis("off")
        _overlay(axes[1, i], inputs[i], rollouts[i])
    fig.suptitle(title)
    return save_figure(fig, path)
