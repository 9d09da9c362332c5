"""Building CoTracker3 from the official checkpoints (or any file with their keys)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor

from attnvision.cotracker.checkpoints import (
    config_from_weights,
    load_cotracker_weights,
    read_cotracker_weights,
    stored_resolution,
    stored_thresholds,
)
from attnvision.cotracker.configs import COTRACKER_CONFIGS, CoTrackerConfig
from attnvision.cotracker.model import CoTracker3

RELEASED_RESOLUTION = (384, 512)


def cotracker_from_config(config: CoTrackerConfig) -> CoTracker3:
    """A CoTracker3 of ``config`` with freshly initialised weights."""
    return CoTracker3(config)


def build_cotracker(checkpoint: str | os.PathLike[str] | Mapping[str, Tensor] | None = None,
                    offline: bool = True, *,
                    model_resolution: tuple[int, int] | None = None,
                    device: str | torch.device = "cpu") -> CoTracker3:
    """CoTracker3 with ``checkpoint``'s weights, in eval mode (the official name and order).

    ``checkpoint``: the official ``scaled_offline.pth`` / ``scaled_online.pth``, a
    ``.safetensors`` file with the same keys, or such a state dict itself; every width and the
    window length are read from its shapes and every key is loaded strictly. ``offline``
    chooses how the model runs (the whole video at once, or sliding windows and the online
    mode); the weights do not say. ``model_resolution`` (H, W), the size the predictors
    resize videos to, is not in the weights either: by default the one a safetensors file of
    ours records in its metadata, else (384, 512), the released models'. So are the
    visibility thresholds the predictors cut at: a file of ours may record its own
    (:func:`~attnvision.cotracker.checkpoints.stored_thresholds`), else the official ones.
    Without a checkpoint: the released architecture with random weights.
    """
    if model_resolution is None:
        stored = (None if checkpoint is None or isinstance(checkpoint, Mapping)
                  else stored_resolution(checkpoint))
        model_resolution = stored or RELEASED_RESOLUTION
    if checkpoint is None:
        name = "cotracker3_offline" if offline else "cotracker3_online"
        config = COTRACKER_CONFIGS[name]
        config = replace(config, model_resolution=tuple(model_resolution))
        return cotracker_from_config(config).to(device).eval()
    if isinstance(checkpoint, Mapping):
        sd, source = dict(checkpoint), "the given state dict"
    else:
        sd, source = read_cotracker_weights(checkpoint, offline), str(checkpoint)
    config = config_from_weights(sd, source, offline, model_resolution)
    if not isinstance(checkpoint, Mapping):
        config = replace(config, **stored_thresholds(checkpoint))
    model = cotracker_from_config(config)
    load_cotracker_weights(model, sd, source)
    return model.to(device).eval()
