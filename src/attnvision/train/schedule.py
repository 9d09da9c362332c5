"""Learning-rate schedule: linear warm-up, then a half cosine down to ``min_lr``.

The rate for optimizer step s (0-based) of T steps with W warm-up steps is

    s < W:   lr = base · (s + 1) / W                     (base/W at the first step, base at W−1)
    s ≥ W:   lr = min + (base − min) · (1 + cos(π·t)) / 2,   t = (s − a) / (T − 1 − a)

with a = W − 1 (a = 0 without warm-up), so the cosine starts at ``base`` where the warm-up ends
and lands exactly on ``min_lr`` at the last step T − 1. Warm-up starts at base/W rather than 0 so
that the first step is not wasted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                     min_lr: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based)."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got "
                         f"{warmup_steps} and {total_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    anchor = max(warmup_steps - 1, 0)
    t = min(1.0, (step - anchor) / max(total_steps - 1 - anchor, 1))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine_schedule(optimizer: Optimizer, total_steps: int, warmup_steps: int,
                           min_lr: float | Sequence[float] = 0.0) -> LambdaLR:
    """A ``LambdaLR`` giving each param group :func:`warmup_cosine_lr` of its own base rate.

    ``min_lr`` is one floor for every group, or one per group (a group trained at ten times
    the rate ends at ten times the floor).

    Step it once after every ``optimizer.step()``. Its state dict holds only numbers (the lambda
    is a plain function, which ``LambdaLR`` does not save), so it loads with ``weights_only``.
    """
    def factor_for(base_lr: float, floor: float):
        def factor(step: int) -> float:
            if base_lr == 0:
                return 0.0
            return warmup_cosine_lr(step, total_steps, warmup_steps, base_lr, floor) / base_lr
        return factor

    warmup_cosine_lr(0, total_steps, warmup_steps, 1.0)  # validate the arguments now
    # initial_lr is set once a scheduler has been attached: the base, not the current rate.
    bases = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    floors = [min_lr] * len(bases) if isinstance(min_lr, (int, float)) else list(min_lr)
    if len(floors) != len(bases):
        raise ValueError(f"min_lr: {len(floors)} floors for {len(bases)} param groups")
    return LambdaLR(optimizer, [factor_for(b, f) for b, f in zip(bases, floors, strict=True)])
