"""CoTracker3's training step: every refinement iteration supervised, the CoTracker3 recipe.

The step (:class:`CoTrackerTrain`) runs the model as its offline forward does (the CNN on
every frame, the query patches, tracks started at their query points, invisible and unsure),
one refinement iteration at a time (``_refine(..., iters=1)``), and keeps each iteration's
tracks, visibility and confidence logits: the loss weighs all of them, the later ones more.
Each iteration starts from the previous tracks detached (as the model's ``_refine`` does, and
the official training), so it learns its own step rather than a path through the others.

The loss (:func:`tracking_loss`), as the official ``train_on_kubric.py`` of CoTracker3 sums it
(``cotracker/models/core/cotracker/losses.py``):

- visible points: Huber (δ = :data:`HUBER_DELTA` = 6 px, the official value) of each
  coordinate, averaged over x and y and over the visible (frame, point) pairs, weighted
  γ^(I-1-i) over the I iterations (γ = 0.8), summed and divided by I; times 0.05;
- occluded points: the same with L1 (no Huber) over the occluded pairs; times 0.01 (their
  positions are a guess, worth learning but not at the visible points' expense);
- visibility: binary cross-entropy of the logits against the truth, averaged over iterations;
- confidence: binary cross-entropy against "within :data:`CONFIDENCE_RADIUS` = 12 px of the
  truth" at the model's resolution (from the detached tracks: confidence learns to judge the
  tracks, not to move them), on visible pairs only (an occluded point's position has no
  check), averaged over all pairs and over iterations, as the official
  ``sequence_prob_loss``.

The official code applies ``binary_cross_entropy`` to sigmoids; here the logits go to
``binary_cross_entropy_with_logits`` (the same loss, stable where a sigmoid saturates).
Frames before a query's frame are supervised too: the offline model tracks backwards.

Why a subclass: :class:`CoTrackerTrain` *is* a :class:`~attnvision.cotracker.model.CoTracker3`
whose ``forward`` is the training step, so its state dict has exactly the official keys and
every ``model.safetensors`` / ``best.safetensors`` the training loop writes is a CoTracker3
file that :func:`~attnvision.cotracker.build.build_cotracker` and ``attnvision track
--checkpoint`` read, with no renaming. The evaluation copies the weights into a plain
CoTracker3 (:func:`evaluate_tracking`), since the predictors call ``forward`` the usual way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.cotracker.configs import CoTrackerConfig
from attnvision.cotracker.correlation import feature_pyramid
from attnvision.cotracker.model import CoTracker3

if TYPE_CHECKING:
    from attnvision.cotracker.training_data import ValidationClips
    from attnvision.data.moving_scenes import Clip

TRAIN_ITERS = 4  # refinement iterations per training step (official: 4; inference runs 6)
GAMMA = 0.8  # weight of an iteration: GAMMA ** (iterations after it)
HUBER_DELTA = 6.0  # px, the official sequence_loss's Huber delta
CONFIDENCE_RADIUS = 12.0  # px: a track within this distance of the truth is "confident"
VISIBLE_WEIGHT, OCCLUDED_WEIGHT = 0.05, 0.01  # the official weights of the two track losses
EPS = 1e-6  # the official reduce_masked_mean's


class TrackPredictions(NamedTuple):
    """Every iteration's predictions; I = iterations."""

    coords: Tensor  # (I, B, T, N, 2) pixels (x, y) at the model's resolution
    vis: Tensor  # (I, B, T, N) visibility logits
    conf: Tensor  # (I, B, T, N) confidence logits


class CoTrackerTrain(CoTracker3):
    """A CoTracker3 whose forward is the training step (module doc); ``iters`` iterations."""

    def __init__(self, config: CoTrackerConfig, iters: int = TRAIN_ITERS) -> None:
        super().__init__(config)
        self.iters = iters

    def forward(self, inputs: dict[str, Tensor]) -> TrackPredictions:  # type: ignore[override]
        video, queries = inputs["frames"], inputs["queries"]
        # video: (B, T, 3, H, W) uint8 at the model's resolution; queries: (B, N, 3) (t, x, y)
        video = video.float()
        queries = queries.float()
        b, t = video.shape[:2]
        n = queries.shape[1]
        frames = queries[:, :, 0].long()
        start = queries[..., 1:3] / self.stride  # (B, N, 2) level-0 cells
        pyramid = feature_pyramid(self._features(video), self.config.corr_levels)
        support = self._query_patches(pyramid, frames, start)
        coords = start[:, None].expand(b, t, n, 2).float()
        vis = video.new_zeros(b, t, n)
        conf = video.new_zeros(b, t, n)
        out_coords, out_vis, out_conf = [], [], []
        for _ in range(self.iters):
            coords, vis, conf = self._refine(pyramid, support, coords, vis, conf, iters=1)
            out_coords.append(coords * self.stride)
            out_vis.append(vis)
            out_conf.append(conf)
        return TrackPredictions(torch.stack(out_coords), torch.stack(out_vis),
                                torch.stack(out_conf))


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / (EPS + mask.sum())


def _huber(diff: Tensor, delta: float) -> Tensor:
    a = diff.abs()
    return torch.where(a <= delta, 0.5 * diff.square(), delta * (a - 0.5 * delta))


def loss_parts(pred: TrackPredictions, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    """The four weighted terms of the loss (module doc): "visible", "occluded", "vis",
    "conf"; their sum is :func:`tracking_loss`."""
    coords, vis_logits, conf_logits = (p.float() for p in pred)  # bf16 autocast: sum in fp32
    gt = targets["tracks"].float()  # (B, T, N, 2)
    visible = targets["visible"].float()  # (B, T, N)
    occluded = 1.0 - visible
    iters = coords.shape[0]
    weights = [GAMMA ** (iters - 1 - i) for i in range(iters)]
    zero = coords.new_zeros(())
    visible_loss, occluded_loss, vis_loss, conf_loss = zero, zero, zero, zero
    for i, w in enumerate(weights):
        diff = coords[i] - gt  # (B, T, N, 2)
        visible_loss = visible_loss + w * _masked_mean(_huber(diff, HUBER_DELTA).mean(-1),
                                                       visible)
        occluded_loss = occluded_loss + w * _masked_mean(diff.abs().mean(-1), occluded)
        vis_loss = vis_loss + F.binary_cross_entropy_with_logits(vis_logits[i], visible)
        near = (diff.detach().square().sum(-1) <= CONFIDENCE_RADIUS ** 2).float()
        conf_loss = conf_loss + (F.binary_cross_entropy_with_logits(
            conf_logits[i], near, reduction="none") * visible).mean()
    return {"visible": VISIBLE_WEIGHT * visible_loss / iters,
            "occluded": OCCLUDED_WEIGHT * occluded_loss / iters,
            "vis": vis_loss / iters, "conf": conf_loss / iters}


def tracking_loss(pred: TrackPredictions, targets: dict[str, Tensor]) -> Tensor:
    """The training loss (module doc): a scalar, fit's ``loss_fn``."""
    return sum(loss_parts(pred, targets).values())  # type: ignore[return-value]


def plain_model(module: nn.Module) -> CoTracker3:
    """A plain CoTracker3 (forward as the predictors call it) with ``module``'s weights, in
    eval mode, on its device."""
    config = module.config if isinstance(module, CoTracker3) else None
    if config is None:
        raise TypeError(f"expected a CoTracker3 or CoTrackerTrain, got {type(module).__name__}")
    device = next(module.parameters()).device
    model = CoTracker3(config).to(device)
    model.load_state_dict(module.state_dict())
    return model.eval()


def evaluate_tracking(module: nn.Module, clips: Sequence[Clip] | ValidationClips,
                      points: int = 64) -> dict:
    """The per-epoch measure: TAP-Vid metrics of the offline predictor (support grid,
    :data:`~attnvision.cotracker.predictor.ITERS` iterations) on ``clips``
    (:func:`attnvision.cotracker.synthetic_eval.evaluate_clips`, ``points`` queries of frame
    0 per clip). ``average_pts_within_thresh`` is δ_avg; the clips' own records are left
    out."""
    from attnvision.cotracker.synthetic_eval import cotracker_tracker, evaluate_clips

    chosen = clips.clips() if hasattr(clips, "clips") else list(clips)
    model = plain_model(module)
    with torch.no_grad():
        result = evaluate_clips(cotracker_tracker(model), chosen, points=points)
    return {k: v for k, v in result.items() if k != "per_clip"}
