"""CoTracker3's online step as an ONNX graph, and a runner that tracks with ONNX Runtime.

``cotracker_online_step.onnx`` (:class:`OnlineStep`) runs one window of the online model as
a pure function: the window's frames, the queries and the state the previous window left
in; the window's tracks and the state for the next window out. It is
:meth:`~attnvision.cotracker.model.CoTracker3.online_window`, the code that
``model(..., is_online=True)`` runs between its bookkeeping, traced once; the caller keeps
the state, as the runner does.

S = ``window_len`` frames (16 released), step = S / 2, N points (dynamic), P = (2r+1)^2 cells
of a query patch (49), C feature channels (128), L pyramid levels (4), (H, W) the model
resolution (fixed at export; 384 x 512 released). Floats are float32.

===================  ====================  ===================================================
input                shape, type           meaning
===================  ====================  ===================================================
``video``            (1, S, 3, H, W)       the window's frames, RGB 0..255 at (H, W); a short
                                           last chunk padded with copies of its last frame
``queries``          (1, N, 3)             (t, x, y): frame and pixel of each query
``ind``              () int64              the window's first frame: 0, step, 2 step, ...
``prev_coords``      (1, S - step, N, 2)   the previous call's ``next_coords`` (zeros first)
``prev_vis``         (1, S - step, N)      the previous call's ``next_vis`` (zeros first)
``prev_conf``        (1, S - step, N)      the previous call's ``next_conf`` (zeros first)
``support_<l>``      (1, N, P, C)          the previous call's ``next_support_<l>``, l < L
                                           (zeros first): the query patches seen so far
===================  ====================  ===================================================

Outputs: ``coords`` (1, S, N, 2) (x, y) pixels at (H, W), ``vis`` and ``conf`` (1, S, N)
probabilities, of the window's frames ind .. ind + S - 1 (the first ``step`` are final: the
next window does not change them); ``next_coords``, ``next_vis``, ``next_conf`` (logits) and
``next_support_<l>``, the next call's ``prev_*`` and ``support_<l>``. A point counts as
visible where vis x conf exceeds the graph's ``visible_threshold``: the model's own, as in
the online predictor (0.6 for the released models).

Choices, and why:

- No ``GridSample`` at all. The official code reads each query's patch in its own frame with
  a 5-D ``grid_sample``, which the exporters refuse; the frame is an integer, so
  :func:`~attnvision.cotracker.correlation.query_patches` gathers it, in PyTorch too (the
  same values). The patches around the tracks are sampled by the same gathers in the graph
  (:func:`~attnvision.cotracker.correlation.track_patches`): ONNX Runtime's ``GridSample``
  works one channel at a time and took 73 % of a window's time, three times the gathers'.
- The TorchScript tracer (``dynamo=False``), as SAM's decoder: the window is tensor code
  with no branch on a value, so the trace is the whole computation, and every size is read
  from the inputs, so N is dynamic. It exports the small test model in 2 s where
  ``torch.export`` took 38 s, for the same numbers. Opset 17 by default (14 to 20).
- The refinement runs :data:`~attnvision.cotracker.predictor.ITERS` times, as the
  predictors do (``iters`` at export).

:class:`~attnvision.cotracker.runtime.OnnxOnlineTracker` (re-exported here) runs the graph
over a video with NumPy and ONNX Runtime only, the PyTorch online loop's way; its module,
:mod:`attnvision.cotracker.runtime`, imports no torch.

``onnx`` and ``onnxruntime`` are optional (``pip install attnvision[onnx]``); they are
imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import importlib
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnvision.cotracker.build import build_cotracker
from attnvision.cotracker.checkpoints import where_to_get
from attnvision.cotracker.configs import COTRACKER_CONFIGS
from attnvision.cotracker.model import CoTracker3
from attnvision.cotracker.predictor import ITERS
from attnvision.cotracker.runtime import (  # the runner, re-exported: no torch in its module
    GRAPH,
    OnnxOnlineTracker,
    grid_points,
    input_names,
    output_names,
)
from attnvision.errors import UserError
from attnvision.files import atomic_path

DEFAULT_OPSET = 17
OPSETS = range(14, 21)  # attention exports from 14; the TorchScript exporter stops at 20
_INSTALL = "pip install attnvision[onnx]"


class OnlineStep(nn.Module):
    """One window of an online :class:`CoTracker3`, state in and state out (see the module's
    docstring for the inputs and outputs)."""

    def __init__(self, model: CoTracker3, iters: int = ITERS) -> None:
        super().__init__()
        if model.config.offline:
            raise ValueError("the online step needs an online model (offline=False)")
        self.model = model
        self.iters = iters

    def forward(self, video: Tensor, queries: Tensor, ind: Tensor, prev_coords: Tensor,
                prev_vis: Tensor, prev_conf: Tensor, *support: Tensor) -> tuple[Tensor, ...]:
        # video: (1, S, 3, H, W), queries: (1, N, 3), ind: (), prev_*: (1, S - step, N, ...),
        # support: L x (1, N, P, C)
        coords, vis, conf, support_out = self.model.online_window(
            video, queries, ind, list(support), prev_coords, prev_vis, prev_conf, self.iters)
        step = self.model.window_len // 2
        # The next window starts at ind + step: it shares this window's frames from step on.
        return (coords, vis.sigmoid(), conf.sigmoid(), coords[:, step:], vis[:, step:],
                conf[:, step:], *support_out)


def _require(package: str) -> Any:
    """Import an optional package, or say in one line how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise UserError(f"ONNX export needs the {package.split('.')[0]} package: "
                        f"{_INSTALL}") from None


def online_model(checkpoint: str | os.PathLike[str], model_resolution: tuple[int, int]
                 ) -> CoTracker3:
    """The online CoTracker3 of a weights file, refusing the offline one in one line.

    The weights do not say how a model was trained to run; the released offline model is
    told by its 60-frame time embedding (the online one's is 16 frames).
    """
    model = build_cotracker(checkpoint, offline=False, model_resolution=model_resolution)
    offline_window = COTRACKER_CONFIGS["cotracker3_offline"].window_len
    if model.window_len == offline_window:
        raise UserError(f"{checkpoint} has a {offline_window}-frame window: it is the offline "
                        "CoTracker3 (scaled_offline.pth), and the online step needs the online "
                        f"model: scaled_online.pth ({where_to_get(offline=False)})")
    return model


def example_inputs(model: CoTracker3, num_points: int = 5, seed: int = 0
                   ) -> tuple[Tensor, ...]:
    """Random inputs of the graph's shapes (a second window: ``ind`` = step)."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    s, step = config.window_len, config.window_len // 2
    h, w = config.model_resolution
    n = num_points
    queries = torch.cat([torch.randint(0, 2 * s, (1, n, 1), generator=gen).float(),
                         torch.rand(1, n, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])],
                        dim=-1)
    patch = (1, n, config.corr_side ** 2, config.latent_dim)
    return (torch.rand(1, s, 3, h, w, generator=gen) * 255, queries, torch.tensor(step),
            torch.rand(1, s - step, n, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0]),
            torch.randn(1, s - step, n, generator=gen), torch.randn(1, s - step, n, generator=gen),
            *(torch.randn(patch, generator=gen) for _ in range(config.corr_levels)))


def graph_properties(model: CoTracker3, iters: int = ITERS) -> dict[str, str]:
    """What the runner reads from the graph's metadata (strings, as ONNX stores them)."""
    config = model.config
    h, w = config.model_resolution
    return {"producer": "attnvision", "graph": GRAPH, "window_len": str(config.window_len),
            "step": str(config.window_len // 2), "model_resolution": f"{h},{w}",
            "corr_levels": str(config.corr_levels), "patch_cells": str(config.corr_side ** 2),
            "latent_dim": str(config.latent_dim), "iters": str(iters),
            "visible_threshold": str(config.online_threshold)}


def export_online_step(model: CoTracker3, path: str | os.PathLike[str],
                       opset: int = DEFAULT_OPSET, iters: int = ITERS) -> Path:
    """Write the online step graph (:class:`OnlineStep`) of ``model`` to ``path``; any
    number of points (the ``num_points`` axis is dynamic)."""
    if opset not in OPSETS:
        raise UserError(f"opset {opset} is not supported for CoTracker's online step: choose "
                        f"{OPSETS.start} to {OPSETS.stop - 1}")
    onnx = _require("onnx")
    step = OnlineStep(model, iters).eval()
    levels = model.config.corr_levels
    names, outputs = input_names(levels), output_names(levels)
    points = {1: "num_points"}
    dynamic = {"queries": points, "prev_coords": {2: "num_points"},
               "prev_vis": {2: "num_points"}, "prev_conf": {2: "num_points"},
               **{name: {2: "num_points"} for name in outputs[:6]},
               **{name: points for name in names[6:] + outputs[6:]}}
    path = Path(path)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings name the Python values frozen into the graph (the window, the
            # resolution: fixed by design); the deprecation notice is about this exporter,
            # chosen on purpose (see the module's docstring).
            warnings.simplefilter("ignore")
            torch.onnx.export(step, example_inputs(model), str(tmp), dynamo=False,
                              opset_version=opset, input_names=names, output_names=outputs,
                              dynamic_axes=dynamic, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        proto.doc_string = "CoTracker3 online model: one window, state in and out (attnvision)"
        onnx.helper.set_model_props(proto, graph_properties(model, iters))
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(tmp))
    return path


def io_spec(model: CoTracker3) -> dict[str, Any]:
    """The graph's inputs and outputs (name, shape, type, meaning) for ``model``'s sizes, and
    how to loop it: written beside the file by ``attnvision export-onnx cotracker``."""
    config = model.config
    s, step = config.window_len, config.window_len // 2
    h, w = config.model_resolution
    p, c, levels = config.corr_side ** 2, config.latent_dim, config.corr_levels

    def io(name: str, shape: list[int | str], meaning: str, dtype: str = "float32"
           ) -> dict[str, Any]:
        return {"name": name, "shape": shape, "dtype": dtype, "meaning": meaning}

    shared = [1, s - step, "num_points"]
    return {
        "inputs": [
            io("video", [1, s, 3, h, w], "the window's frames, RGB 0..255, resized to the "
                                         "model resolution (bilinear, corners aligned); a "
                                         "short last chunk padded with its last frame"),
            io("queries", [1, "num_points", 3], "(t, x, y): each query's frame and pixel at "
                                                "the model resolution"),
            io("ind", [], "the window's first frame: 0, step, 2 step, ...", "int64"),
            io("prev_coords", [*shared, 2], "the previous call's next_coords (zeros first)"),
            io("prev_vis", shared, "the previous call's next_vis (zeros first)"),
            io("prev_conf", shared, "the previous call's next_conf (zeros first)"),
            *(io(f"support_{i}", [1, "num_points", p, c],
                 f"the previous call's next_support_{i} (zeros first)") for i in range(levels)),
        ],
        "outputs": [
            io("coords", [1, s, "num_points", 2], "(x, y) pixels at the model resolution of "
                                                  "frames ind .. ind + S - 1"),
            io("vis", [1, s, "num_points"], "probability that the point is visible"),
            io("conf", [1, s, "num_points"], "probability that the point is within a few "
                                             "pixels of the truth"),
            io("next_coords", [*shared, 2], "state: the next call's prev_coords"),
            io("next_vis", shared, "state: the next call's prev_vis (logits)"),
            io("next_conf", shared, "state: the next call's prev_conf (logits)"),
            *(io(f"next_support_{i}", [1, "num_points", p, c],
                 f"state: the next call's support_{i}") for i in range(levels)),
        ],
        "window_len": s, "step": step, "model_resolution": [h, w],
        "loop": f"chunks video[ind : ind + {s}] for ind = 0, {step}, {2 * step}, ... while "
                f"ind < T - {step} (one chunk for a video of {step} frames or fewer); each "
                f"call's first {step} frames are final",
        "visible": f"vis * conf > {config.online_threshold}",
    }


# --- checking the graph against PyTorch -------------------------------------------------------

def check_clip(model: CoTracker3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic clip of 2.25 windows at the model resolution (four windows, the last one
    padded) and queries on it: a 4 x 4 grid of frame 0 and eight points on later frames,
    the last on the last frame. Returns frames (T, H, W, 3) uint8, queries (N, 3)."""
    from attnvision.data.moving_scenes import make_clip

    s = model.window_len
    frames = 2 * s + s // 4
    h, w = model.model_resolution
    clip = make_clip(seed, "test", (h, w), frames=frames)
    rng = np.random.default_rng(seed)
    grid = grid_points(4, (h, w))
    later = np.stack([np.linspace(1, frames - 1, 8).round(),
                      rng.uniform(0, w - 1, 8), rng.uniform(0, h - 1, 8)], axis=1)
    queries = np.concatenate([np.concatenate([np.zeros((len(grid), 1)), grid], axis=1), later])
    return clip.frames, queries.astype(np.float32)


def _torch_windows(model: CoTracker3, video: np.ndarray, queries: np.ndarray, iters: int,
                   dtype: torch.dtype) -> tuple[list[list[np.ndarray]], float]:
    """``model`` over the official chunks of ``video`` (T, 3, H, W) with ``is_online`` calls:
    per window [coords, vis, conf] of its frames (float64 arrays), and the seconds per
    window."""
    s, step = model.window_len, model.window_len // 2
    q = torch.from_numpy(queries)[None].to(dtype)
    model.init_video_online_processing(keep_history=False)
    outputs, start = [], time.perf_counter()
    with torch.no_grad():
        for ind in range(0, len(video) - step, step):
            chunk = torch.from_numpy(video[ind:ind + s])[None].to(dtype)
            outputs.append([x[0].double().numpy()
                            for x in model(chunk, q, iters=iters, is_online=True)])
    model.online_state = None
    return outputs, (time.perf_counter() - start) / len(outputs)


def compare_online_step(model: CoTracker3, path: str | os.PathLike[str], *,
                        tolerance_px: float = 1e-3, seed: int = 0, threads: int | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run a graph in ONNX Runtime and ``model`` in PyTorch over :func:`check_clip`, window
    by window (the official chunks), each carrying its own state between windows.

    Returns the largest differences of positions (pixels) and of the visibility and
    confidence probabilities over every window, the fraction of visibility decisions
    (vis x conf above the model's threshold) that agree, the seconds per window of each, and
    ``within_tolerance``: positions within ``tolerance_px`` of PyTorch's.

    Beyond it the clip runs once more, in float64 PyTorch: a model's float32 rounding can
    grow through the iterations and windows (the full-size random-weight model: PyTorch
    float32 is 3.4e-3 px from float64 with 1 thread and 7e-3 px with 2, and the official
    code differs from itself by 1.5e-2 px between 1 and 2 threads on the small online
    fixtures), so no float32 graph can then be held to ``tolerance_px``. The graph passes
    if it is no more than twice as far from the float64 answer as PyTorch float32 is
    (``float64`` in the result gives both distances; ``judged_by`` says which test ran).
    ``log`` hears when that slower test starts.
    """
    frames, queries = check_clip(model, seed)
    video = frames.transpose(0, 3, 1, 2).astype(np.float32)  # (T, 3, H, W)
    tracker = OnnxOnlineTracker(path, threads=threads)
    tracker.reset(queries)
    s, step = model.window_len, model.window_len // 2
    got, start = [], time.perf_counter()
    for ind in range(0, len(video) - step, step):
        got.append([x.astype(np.float64) for x in tracker.step(video[ind:ind + s])])
    onnx_seconds = (time.perf_counter() - start) / len(got)
    expected, torch_seconds = _torch_windows(model, video, queries, tracker.iters,
                                             torch.float32)

    def largest(a: list[list[np.ndarray]], b: list[list[np.ndarray]], i: int) -> float:
        return max(float(np.abs(x[i] - y[i]).max()) for x, y in zip(a, b, strict=True))

    def visible(out: list[np.ndarray]) -> np.ndarray:
        return out[1] * out[2] > model.config.online_threshold

    result: dict[str, Any] = {
        "max_position_diff_px": largest(got, expected, 0),
        "max_vis_diff": largest(got, expected, 1), "max_conf_diff": largest(got, expected, 2),
        "visibility_agreement": float(np.mean(np.concatenate([
            (visible(g) == visible(e)).ravel() for g, e in zip(got, expected, strict=True)]))),
        "windows": len(got), "frames": len(video), "points": len(queries),
        "seconds_per_window": {"onnxruntime": onnx_seconds, "pytorch": torch_seconds},
        "tolerance_px": tolerance_px, "judged_by": "pytorch"}
    result["within_tolerance"] = result["max_position_diff_px"] <= tolerance_px
    if not result["within_tolerance"]:
        if log is not None:
            log(f"positions differ by {result['max_position_diff_px']:.2g} px, more than "
                f"{tolerance_px:g}: measuring both against float64 PyTorch (slower)")
        exact, _ = _torch_windows(copy.deepcopy(model).double(), video, queries,
                                  tracker.iters, torch.float64)
        onnx_error, torch_error = largest(got, exact, 0), largest(expected, exact, 0)
        result["float64"] = {"onnxruntime_error_px": onnx_error,
                             "pytorch_float32_error_px": torch_error}
        result["judged_by"] = "float64"
        result["within_tolerance"] = onnx_error <= max(tolerance_px, 2 * torch_error)
    return result
