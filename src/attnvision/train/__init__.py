"""One training loop shared by every model: loop, schedule, losses, data-parallel helpers."""

from attnvision.train.loop import (
    TrainConfig,
    accuracy,
    evaluate_classifier,
    fit,
    parameter_groups,
)
from attnvision.train.losses import LabelSmoothingCrossEntropy, label_smoothing_cross_entropy
from attnvision.train.schedule import warmup_cosine_lr, warmup_cosine_schedule

__all__ = [
    "LabelSmoothingCrossEntropy",
    "TrainConfig",
    "accuracy",
    "evaluate_classifier",
    "fit",
    "label_smoothing_cross_entropy",
    "parameter_groups",
    "warmup_cosine_lr",
    "warmup_cosine_schedule",
]
