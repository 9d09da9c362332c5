"""CoTracker3 (point tracking): many points tracked jointly through a video.

The official names work here: ``build_cotracker("scaled_offline.pth")`` (or
``offline=False`` with ``scaled_online.pth``) builds the model from the official weights,
strictly, with every width read from the file; the model is called as the official one,
``coords, vis, conf = model(video=video, queries=queries, iters=6)``, and the online model
with ``init_video_online_processing()`` then ``is_online=True`` on successive chunks.
``CoTrackerPredictor`` / ``CoTrackerOnlinePredictor`` (the official names and arguments)
track points in videos of any size, given as queries, a grid or a mask.

Modules: :mod:`~attnvision.cotracker.encoder` (the CNN, ``fnet``),
:mod:`~attnvision.cotracker.correlation` (the 4-level correlation of 7x7 neighbourhoods),
:mod:`~attnvision.cotracker.update_transformer` (``updateformer``: time attention and
attention through virtual tracks), :mod:`~attnvision.cotracker.model` (the iterations, the
offline and online ways to run them), :mod:`~attnvision.cotracker.runtime` (tracking with
an exported graph in ONNX Runtime, without torch).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ below
    from attnvision.cotracker.build import build_cotracker, cotracker_from_config
    from attnvision.cotracker.checkpoints import config_from_weights
    from attnvision.cotracker.configs import COTRACKER_CONFIGS, CoTrackerConfig
    from attnvision.cotracker.model import CoTracker3, OnlineState, TrackerOutput
    from attnvision.cotracker.predictor import CoTrackerOnlinePredictor, CoTrackerPredictor

# Names load on first use (PEP 562), so that attnvision.cotracker.runtime, the ONNX Runtime
# tracker, imports no torch through this package.
_NAMES = {
    "build_cotracker": "build", "cotracker_from_config": "build",
    "config_from_weights": "checkpoints",
    "COTRACKER_CONFIGS": "configs", "CoTrackerConfig": "configs",
    "CoTracker3": "model", "OnlineState": "model", "TrackerOutput": "model",
    "CoTrackerOnlinePredictor": "predictor", "CoTrackerPredictor": "predictor",
}
__all__ = ["COTRACKER_CONFIGS", "CoTracker3", "CoTrackerConfig", "CoTrackerOnlinePredictor",
           "CoTrackerPredictor", "OnlineState", "TrackerOutput", "build_cotracker",
           "config_from_weights", "cotracker_from_config"]  # the keys of _NAMES


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
