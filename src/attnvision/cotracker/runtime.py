"""CoTracker3's online tracking without PyTorch: NumPy and ONNX Runtime only.

:class:`OnnxOnlineTracker` runs the graph that ``attnvision export-onnx cotracker`` writes
(:mod:`attnvision.cotracker.onnx`: its inputs, outputs and choices) over a video the way
:func:`~attnvision.cotracker.predictor.track_online` runs the PyTorch model: chunks of
2 step frames, step apart (:func:`online_chunks`, which the PyTorch loop uses too); frames
resized to the model resolution bilinearly with corners aligned; given queries or the
official grid, and the optional support grid; the state arrays kept between calls.

This module imports no torch (nor does ``attnvision.cotracker`` until a torch-based name is
used), so an application that only tracks needs ``numpy`` and ``onnxruntime``::

    from attnvision.cotracker.runtime import OnnxOnlineTracker
    tracks, visible = OnnxOnlineTracker("cotracker_online_step.onnx").track(frames, grid_size=10)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

GRAPH = "cotracker3_online_step"  # the graph's "graph" metadata: what the runner accepts
SUPPORT_GRID_SIZE = 6  # the official support grid: 6 x 6 points of frame 0


def input_names(levels: int) -> list[str]:
    return (["video", "queries", "ind", "prev_coords", "prev_vis", "prev_conf"]
            + [f"support_{i}" for i in range(levels)])


def output_names(levels: int) -> list[str]:
    return (["coords", "vis", "conf", "next_coords", "next_vis", "next_conf"]
            + [f"next_support_{i}" for i in range(levels)])


def online_chunks(first: np.ndarray, rest: Iterator[np.ndarray], step: int
                  ) -> Iterator[tuple[list[np.ndarray], int]]:
    """The chunks of the official online loop, each as soon as its frames have arrived, with
    how many of its frames are new: 2 x step frames, each chunk after the first starting with
    the previous one's last step frames; at the end, what is left when it holds new frames (or
    when nothing went yet: a video of 2 x step frames or fewer is one chunk)."""
    buffer, sent = [first], False
    for frame in rest:
        buffer.append(frame)
        if len(buffer) == 2 * step:
            yield buffer, len(buffer) - (step if sent else 0)
            sent, buffer = True, buffer[step:]
    if not sent or len(buffer) > step:
        yield buffer, len(buffer) - (step if sent else 0)


def grid_points(size: int, extent: tuple[int, int]) -> np.ndarray:
    """The official grid of ``size`` x ``size`` (x, y) points over an (H, W) ``extent``
    (:func:`~attnvision.cotracker.predictor.get_points_on_a_grid`, to float32 rounding):
    (size^2, 2) float32, row-major, a margin of W / 64 from the border."""
    h, w = extent
    if size == 1:
        return np.array([[w / 2, h / 2]], np.float32)
    margin = w / 64
    ys = np.linspace(margin, h - margin, size)
    xs = np.linspace(margin, w - margin, size)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x, grid_y], axis=-1).reshape(-1, 2).astype(np.float32)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) frames -> (T, 3, h, w) float32, bilinear with the corner pixels' centres
    aligned (the predictors' ``F.interpolate(..., align_corners=True)``, in float32)."""
    x = np.asarray(frames).astype(np.float32).transpose(0, 3, 1, 2)  # (T, 3, H, W)
    if x.shape[-2:] == tuple(size):
        return np.ascontiguousarray(x)

    def axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scale = np.float32(src - 1) / np.float32(dst - 1) if dst > 1 else np.float32(0)
        pos = scale * np.arange(dst, dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), src - 1)
        return i0, np.minimum(i0 + 1, src - 1), (pos - i0).astype(np.float32)

    y0, y1, wy = axis(x.shape[2], size[0])
    x0, x1, wx = axis(x.shape[3], size[1])

    def columns(rows: np.ndarray) -> np.ndarray:  # (T, 3, h, W) -> (T, 3, h, w)
        return rows[..., x0] * (1 - wx) + rows[..., x1] * wx

    wy = wy[:, None]
    return (columns(x[:, :, y0]) * (1 - wy) + columns(x[:, :, y1]) * wy).astype(np.float32)


def _pixel_scale(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(x, y) factors from an (H, W) image to another, corner pixel centres fixed."""
    return np.array([(dst[1] - 1) / (src[1] - 1), (dst[0] - 1) / (src[0] - 1)], np.float32)


class OnnxOnlineTracker:
    """Tracks points through a video with the online step graph in ONNX Runtime.

    ``track`` is :func:`~attnvision.cotracker.predictor.track_online` (the same chunks,
    resizing, grids and visibility rule) on NumPy arrays. ``reset`` then ``step`` run the
    graph one window at a time, for frames that are already at the model resolution.
    ``threads``: ONNX Runtime's intra-op threads (None: its default, every core).
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=providers or ["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("graph") != GRAPH:
            raise ValueError(f"{path} is not a CoTracker3 online step graph (export it with "
                             "attnvision export-onnx cotracker)")
        self.window_len = int(meta["window_len"])
        self.step_frames = int(meta["step"])
        h, w = (int(v) for v in meta["model_resolution"].split(","))
        self.model_resolution = (h, w)
        self.levels = int(meta["corr_levels"])
        self.patch = (int(meta["patch_cells"]), int(meta["latent_dim"]))
        self.iters = int(meta["iters"])
        self.threshold = float(meta["visible_threshold"])
        self.ind = 0
        self.queries: np.ndarray | None = None
        self._state: dict[str, np.ndarray] = {}

    def reset(self, queries: np.ndarray) -> None:
        """Start a new video: ``queries`` (N, 3) (t, x, y) at the model resolution."""
        q = np.asarray(queries, np.float32).reshape(-1, 3)
        if len(q) == 0:
            raise ValueError("give at least one query")
        n, shared = len(q), self.window_len - self.step_frames
        self.queries, self.ind = q[None], 0
        self._state = {"prev_coords": np.zeros((1, shared, n, 2), np.float32),
                       "prev_vis": np.zeros((1, shared, n), np.float32),
                       "prev_conf": np.zeros((1, shared, n), np.float32),
                       **{f"support_{i}": np.zeros((1, n, *self.patch), np.float32)
                          for i in range(self.levels)}}

    def step(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next window: ``chunk`` (t, 3, H, W) float 0..255 at the model resolution, the
        frames ind .. ind + t - 1 (t <= S; a short chunk is padded with its last frame).
        Returns their coords (t, N, 2) pixels, vis and conf (t, N) probabilities; ind then
        moves on by step."""
        if self.queries is None:
            raise ValueError("call reset(queries) first")
        t = len(chunk)
        if not 0 < t <= self.window_len:
            raise ValueError(f"a chunk holds 1 to {self.window_len} frames, not {t}")
        video = np.asarray(chunk, np.float32)
        if t < self.window_len:
            video = np.concatenate([video, np.repeat(video[-1:], self.window_len - t, 0)])
        feed = {"video": video[None], "queries": self.queries,
                "ind": np.array(self.ind, np.int64), **self._state}
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(None, feed), strict=True))
        # Each state output becomes the input of the same meaning in the next call.
        self._state = {name: out[output] for name, output in zip(
            input_names(self.levels)[3:], output_names(self.levels)[3:], strict=True)}
        self.ind += self.step_frames
        return out["coords"][0, :t], out["vis"][0, :t], out["conf"][0, :t]

    def track(self, frames: Iterable[np.ndarray], *, queries: np.ndarray | None = None,
              grid_size: int = 0, grid_query_frame: int = 0, add_support_grid: bool = False,
              on_frames: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tracks of ``queries`` (N, 3) (t, x, y) in the frames' pixels, or of a
        ``grid_size`` x ``grid_size`` grid of frame ``grid_query_frame``, through (H, W, 3)
        uint8 ``frames`` read one at a time, holding 2 step frames. Returns tracks (T, N, 2)
        float32 in the frames' pixels and visibility (T, N) bool. ``add_support_grid``
        tracks the official 6 x 6 grid of frame 0 beside given queries (dropped from the
        result); ``on_frames(k)``: k more frames tracked."""
        stream = iter(frames)
        first = next(stream, None)
        if first is None:
            raise ValueError("the video gave no frames")
        size = first.shape[:2]
        shape = self.model_resolution
        if queries is not None:
            q = np.asarray(queries, np.float32).reshape(-1, 3).copy()
            q[:, 1:] *= _pixel_scale(size, shape)
            n = len(q)
            if add_support_grid:
                grid = grid_points(SUPPORT_GRID_SIZE, shape)
                q = np.concatenate([q, np.concatenate([np.zeros((len(grid), 1), np.float32),
                                                       grid], axis=1)])
        elif grid_size > 0:
            grid = grid_points(grid_size, shape)
            n = len(grid)
            q = np.concatenate([np.full((n, 1), grid_query_frame, np.float32), grid], axis=1)
        else:
            raise ValueError("give queries or a grid_size > 0")
        self.reset(q)
        step = self.step_frames
        back = _pixel_scale(shape, size)
        final: list[tuple[np.ndarray, np.ndarray]] = []  # frames no later chunk will change
        pending: tuple[np.ndarray, np.ndarray] | None = None  # the last chunk's answer
        total = 0
        for chunk, new in online_chunks(first, stream, step):
            coords, vis, conf = self.step(resize_frames(np.stack(chunk), shape))
            if pending is not None:  # the previous chunk's first step frames are final now
                final.append((pending[0][:step], pending[1][:step]))
            pending = (coords[:, :n] * back, (vis * conf > self.threshold)[:, :n])
            total += new
            if on_frames is not None:
                on_frames(new)
        assert pending is not None
        final.append(pending)
        tracks = np.concatenate([f[0] for f in final])
        visible = np.concatenate([f[1] for f in final])
        if len(tracks) != total:
            raise RuntimeError(f"the graph gave {len(tracks)} frames of {total}")
        return tracks, visible
