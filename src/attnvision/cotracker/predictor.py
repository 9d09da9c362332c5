"""Tracking points in videos of any size: the official ``CoTrackerPredictor`` and
``CoTrackerOnlinePredictor``, with their names and arguments.

The model sees videos at ``model_resolution`` (384 x 512 released), so the predictors resize
the frames there (bilinear, corners aligned) and the query points with them, and scale the
tracks back to the video's pixels. Corners aligned means pixel centres 0 and size - 1 map to
each other, so a point is scaled by (size_model - 1) / (size_video - 1).

Queries are (t, x, y) in the video's pixels, or a grid of ``grid_size`` x ``grid_size``
points in one frame (only inside ``segm_mask`` if given). Offline, a 6 x 6 grid of extra
*support* points in frame 0 joins queries that are few or clustered (given queries, or a
masked grid): tracks are estimated jointly, and points spread over the frame give the
transformer's attention between tracks the camera's motion to lean on. Their tracks are
dropped from the result.

:func:`track_online` runs the online predictor's official chunk loop over frames that arrive
one at a time (a video decoded frame by frame), holding only two chunks of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.cotracker.build import build_cotracker
from attnvision.cotracker.model import CoTracker3
from attnvision.cotracker.runtime import SUPPORT_GRID_SIZE, online_chunks
from attnvision.errors import UserError
from attnvision.memory import release_freed_memory

ITERS = 6  # refinement iterations, as the official predictors run


def get_points_on_a_grid(size: int, extent: tuple[int, int],
                         center: tuple[float, float] | None = None,
                         device: str | torch.device = "cpu") -> Tensor:
    """A ``size`` x ``size`` grid of (x, y) points covering an (H, W) ``extent``, row-major,
    a margin of W / 64 from the border (the official helper): (1, size^2, 2). One point is
    the centre."""
    h, w = extent
    if size == 1:
        return torch.tensor([w / 2, h / 2], device=device)[None, None]
    cy, cx = (h / 2, w / 2) if center is None else center
    margin = w / 64
    ys = torch.linspace(margin - h / 2 + cy, h / 2 + cy - margin, size, device=device)
    xs = torch.linspace(margin - w / 2 + cx, w / 2 + cx - margin, size, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)


def _model(checkpoint: str | os.PathLike[str] | Mapping[str, Tensor] | CoTracker3 | None,
           offline: bool, model_resolution: tuple[int, int] | None) -> CoTracker3:
    if isinstance(checkpoint, CoTracker3):
        return checkpoint.eval()
    return build_cotracker(checkpoint, offline=offline, model_resolution=model_resolution)


def _resize(video: Tensor, size: tuple[int, int]) -> Tensor:
    # video: (B, T, 3, H, W) -> (B, T, 3, h, w)
    b, t = video.shape[:2]
    frames = F.interpolate(video.flatten(0, 1).float(), size, mode="bilinear",
                           align_corners=True)
    return frames.reshape(b, t, *frames.shape[1:])


def _pixel_scale(src: tuple[int, int], dst: tuple[int, int], like: Tensor) -> Tensor:
    """(x, y) factors from an (H, W) image to another, pixel centres of the corners fixed."""
    return like.new_tensor([(dst[1] - 1) / (src[1] - 1), (dst[0] - 1) / (src[0] - 1)])


class CoTrackerPredictor(nn.Module):
    """Tracks through a whole video at once (the offline model, or the online one run over
    sliding windows with ``offline=False``).

    ``checkpoint``: a weights file (``scaled_offline.pth``), a state dict, or a built
    :class:`CoTracker3`; None gives random weights. A point is visible where its visibility
    probability exceeds ``visible_threshold``: by default the model's own (its config's
    ``offline_threshold``: the official 0.9, or the one its file records). With
    :attr:`return_scores` set, the predictor returns those probabilities instead of the
    booleans (to choose a threshold on clips with known visibility).
    """

    def __init__(self, checkpoint: str | os.PathLike[str] | Mapping[str, Tensor] | CoTracker3
                 | None = None, offline: bool = True, *,
                 model_resolution: tuple[int, int] | None = None,
                 visible_threshold: float | None = None) -> None:
        super().__init__()
        self.support_grid_size = SUPPORT_GRID_SIZE
        self.model = _model(checkpoint, offline, model_resolution)
        self.interp_shape = tuple(self.model.model_resolution)
        self.visible_threshold = (self.model.config.offline_threshold
                                  if visible_threshold is None else visible_threshold)
        self.return_scores = False

    @torch.no_grad()
    def forward(self, video: Tensor, queries: Tensor | None = None,
                segm_mask: Tensor | None = None, grid_size: int = 0,
                grid_query_frame: int = 0, backward_tracking: bool = False
                ) -> tuple[Tensor, Tensor]:
        """(tracks (B, T, N, 2) in the video's pixels, visibility (B, T, N) booleans, or
        the probabilities with :attr:`return_scores`; 1 at each query's own frame).

        video: (B, T, 3, H, W) values in [0, 255]. Give ``queries`` (B, N, 3) as (t, x, y),
        or ``grid_size`` (with ``grid_query_frame`` and optionally ``segm_mask`` (H, W) or
        (B, 1, H, W)), or neither for dense tracks of every pixel. ``backward_tracking``
        also tracks each point backwards from its query frame (otherwise frames before it are
        guesses).
        """
        if queries is None and grid_size == 0:
            return self._compute_dense_tracks(video, grid_query_frame,
                                              backward_tracking=backward_tracking)
        return self._compute_sparse_tracks(
            video, queries, segm_mask, grid_size,
            add_support_grid=(grid_size == 0 or segm_mask is not None),
            grid_query_frame=grid_query_frame, backward_tracking=backward_tracking)

    def _compute_dense_tracks(self, video: Tensor, grid_query_frame: int, grid_size: int = 80,
                              backward_tracking: bool = False) -> tuple[Tensor, Tensor]:
        """Every pixel of frame ``grid_query_frame``, in grid_step^2 passes of an interleaved
        grid of about ``grid_size`` points per row (all at once would not fit in memory)."""
        *_, h, w = video.shape
        step = max(1, w // grid_size)
        grid_w, grid_h = w // step, h // step
        points = video.new_zeros(video.shape[0], grid_w * grid_h, 3)
        points[:, :, 0] = grid_query_frame
        tracks, visible = [], []
        for offset in range(step * step):
            ox, oy = offset % step, offset // step
            points[:, :, 1] = torch.arange(grid_w).repeat(grid_h) * step + ox
            points[:, :, 2] = torch.arange(grid_h).repeat_interleave(grid_w) * step + oy
            t, v = self._compute_sparse_tracks(video, points,
                                               backward_tracking=backward_tracking)
            tracks.append(t)
            visible.append(v)
        return torch.cat(tracks, dim=2), torch.cat(visible, dim=2)

    def _compute_sparse_tracks(self, video: Tensor, queries: Tensor | None,
                               segm_mask: Tensor | None = None, grid_size: int = 0,
                               add_support_grid: bool = False, grid_query_frame: int = 0,
                               backward_tracking: bool = False) -> tuple[Tensor, Tensor]:
        b, _, _, h, w = video.shape
        shape = self.interp_shape
        video = _resize(video, shape)
        if queries is not None:
            queries = queries.clone().float()
            queries[:, :, 1:] *= _pixel_scale((h, w), shape, queries)
        else:
            grid = get_points_on_a_grid(grid_size, shape, device=video.device)
            if segm_mask is not None:
                mask = segm_mask.float().reshape(-1, 1, *segm_mask.shape[-2:])
                mask = F.interpolate(mask, shape, mode="nearest")[0, 0]
                inside = mask[grid[0, :, 1].round().long(), grid[0, :, 0].round().long()]
                grid = grid[:, inside.bool()]
            queries = torch.cat([torch.full_like(grid[..., :1], grid_query_frame), grid],
                                dim=2).repeat(b, 1, 1)
        n = queries.shape[1]
        if add_support_grid:
            grid = get_points_on_a_grid(self.support_grid_size, shape, device=video.device)
            grid = torch.cat([torch.zeros_like(grid[..., :1]), grid], dim=2)
            queries = torch.cat([queries, grid.repeat(b, 1, 1)], dim=1)

        tracks, vis, _ = self.model(video=video, queries=queries, iters=ITERS)
        if backward_tracking:
            tracks, vis = self._compute_backward_tracks(video, queries, tracks, vis)
        tracks, visible = tracks[:, :, :n], vis[:, :, :n]
        if not self.return_scores:
            visible = visible > self.visible_threshold

        # Each query point is where it was asked for, and visible there
        # (the official fix of co-tracker issue 28).
        frames = queries[:, :n, 0].long()
        track_ids = torch.arange(n, device=tracks.device)
        for i in range(b):
            tracks[i, frames[i], track_ids] = queries[i, :n, 1:]
            visible[i, frames[i], track_ids] = True
        tracks *= _pixel_scale(shape, (h, w), tracks)
        return tracks, visible

    def _compute_backward_tracks(self, video: Tensor, queries: Tensor, tracks: Tensor,
                                 vis: Tensor) -> tuple[Tensor, Tensor]:
        """Frames before each query frame from tracking the reversed video."""
        t = video.shape[1]
        inv_queries = queries.clone()
        inv_queries[:, :, 0] = t - inv_queries[:, :, 0] - 1
        inv_tracks, inv_vis, _ = self.model(video=video.flip(1), queries=inv_queries,
                                            iters=ITERS)
        before = (torch.arange(t, device=queries.device)[None, :, None]
                  < queries[:, None, :, 0])  # (B, T, N)
        tracks = torch.where(before[..., None], inv_tracks.flip(1), tracks)
        vis = torch.where(before, inv_vis.flip(1), vis)
        return tracks, vis


class CoTrackerOnlinePredictor(nn.Module):
    """Tracks through a stream, half a window at a time (the online model).

    First call with ``is_first_step=True`` and the queries (or a grid), then with chunks
    ``video[ind : ind + 2 * step]`` for ind = 0, step, 2 step, ...; each call returns the
    tracks of every frame seen so far. ``step`` is half the model's window.

    With ``keep_history=False`` on the first step, each call returns only its chunk's frames,
    from frame :attr:`chunk_start` on (the first ``step`` of them final, the rest refined by
    the next call), and memory stays flat however long the stream.

    A point is visible where visibility x confidence exceeds ``visible_threshold``: by
    default the model's own (its config's ``online_threshold``: the official 0.6, or the one
    its file records); :attr:`return_scores` returns those products instead.
    """

    def __init__(self, checkpoint: str | os.PathLike[str] | Mapping[str, Tensor] | CoTracker3
                 | None = None, *, model_resolution: tuple[int, int] | None = None,
                 visible_threshold: float | None = None) -> None:
        super().__init__()
        self.support_grid_size = SUPPORT_GRID_SIZE
        self.model = _model(checkpoint, False, model_resolution)
        if self.model.config.offline:
            raise ValueError("the online predictor needs an online model (offline=False)")
        self.interp_shape = tuple(self.model.model_resolution)
        self.visible_threshold = (self.model.config.online_threshold
                                  if visible_threshold is None else visible_threshold)
        self.return_scores = False
        self.step = self.model.window_len // 2
        self.queries: Tensor | None = None
        self.N = 0
        self.chunk_start = 0  # the frame the last call's tracks start at

    @torch.no_grad()
    def forward(self, video_chunk: Tensor, is_first_step: bool = False,
                queries: Tensor | None = None, grid_size: int = 5, grid_query_frame: int = 0,
                add_support_grid: bool = False, *, keep_history: bool = True
                ) -> tuple[Tensor | None, Tensor | None]:
        """First step: remember the queries, (None, None). Later: (tracks (B, T, N, 2),
        visibility (B, T, N)) of every frame so far, T growing by ``step`` per call (or of
        the chunk's frames only, with ``keep_history=False`` on the first step).

        video_chunk: (B, T, 3, H, W) values in [0, 255]; on the first step only its size is
        read (to scale the queries).
        """
        b, _, _, h, w = video_chunk.shape
        shape = self.interp_shape
        if is_first_step:
            self.model.init_video_online_processing(keep_history=keep_history)
            if queries is not None:
                self.N = queries.shape[1]
                queries = queries.clone().float()
                queries[:, :, 1:] *= _pixel_scale((h, w), shape, queries)
                if add_support_grid:
                    grid = get_points_on_a_grid(self.support_grid_size, shape,
                                                device=video_chunk.device)
                    grid = torch.cat([torch.zeros_like(grid[..., :1]), grid], dim=2)
                    queries = torch.cat([queries, grid.repeat(len(queries), 1, 1)], dim=1)
            elif grid_size > 0:
                grid = get_points_on_a_grid(grid_size, shape, device=video_chunk.device)
                self.N = grid_size ** 2
                queries = torch.cat([torch.full_like(grid[..., :1], grid_query_frame), grid],
                                    dim=2).repeat(b, 1, 1)
            else:
                raise ValueError("give queries or a grid_size > 0")
            self.queries = queries
            return None, None
        if self.queries is None:
            raise ValueError("call with is_first_step=True (and the queries) first")
        state = self.model.online_state
        assert state is not None
        self.chunk_start = 0 if state.keep_history else state.ind
        tracks, vis, conf = self.model(video=_resize(video_chunk, shape), queries=self.queries,
                                       iters=ITERS, is_online=True)
        tracks, vis, conf = tracks[:, :, :self.N], vis[:, :, :self.N], conf[:, :, :self.N]
        scores = vis * conf
        return (tracks * _pixel_scale(shape, (h, w), tracks),
                scores if self.return_scores else scores > self.visible_threshold)


def video_tensor(frames: Sequence[np.ndarray] | np.ndarray,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> the predictors' (1, T, 3, H, W) float video, 0..255."""
    array = np.ascontiguousarray(np.stack(list(frames)) if not isinstance(frames, np.ndarray)
                                 else frames)
    return torch.from_numpy(array).to(device).permute(0, 3, 1, 2)[None].float()


def track_online(predictor: CoTrackerOnlinePredictor, frames: Iterable[np.ndarray], *,
                 queries: np.ndarray | None = None, grid_size: int = 0,
                 grid_query_frame: int = 0, add_support_grid: bool = False,
                 on_frames: Callable[[int], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The official online loop over (H, W, 3) uint8 ``frames`` read one at a time:
    first the queries (or a grid) with ``is_first_step=True``, then the chunks
    ``video[ind : ind + 2 * step]`` for ind in range(0, T - step, step), each sent as soon as
    its frames have arrived; a video of ``step`` frames or fewer is sent as one chunk.

    Memory stays flat however long the video: only 2 x step frames are held, the model keeps
    one window of state (``keep_history=False``), each chunk's first ``step`` frames, final
    once the next chunk has run, join the result as NumPy arrays, and the heap is trimmed
    after each chunk (:mod:`attnvision.memory`). Returns tracks
    (T, N, 2) float32 in the frames' pixels and visibility (T, N) bool (float32 scores when
    the predictor's :attr:`~CoTrackerOnlinePredictor.return_scores` is set).
    ``on_frames(k)``: k more frames tracked (a progress bar)."""
    device = next(predictor.model.parameters()).device
    stream = iter(frames)
    first = next(stream, None)
    if first is None:
        raise UserError("the video gave no frames")
    q = None if queries is None else torch.as_tensor(
        np.asarray(queries, np.float32), device=device)[None]
    predictor(video_tensor([first], device), is_first_step=True, queries=q,
              grid_size=grid_size, grid_query_frame=grid_query_frame,
              add_support_grid=add_support_grid, keep_history=False)
    step = predictor.step
    final_tracks: list[np.ndarray] = []  # frames no later chunk will change
    final_visible: list[np.ndarray] = []
    pending: tuple[int, np.ndarray, np.ndarray] | None = None  # the last chunk's answer
    total = 0
    for chunk, new in online_chunks(first, stream, step):
        tracks, visible = predictor(video_tensor(chunk, device))
        release_freed_memory()
        start = predictor.chunk_start
        if pending is not None:  # the previous chunk's frames before this one's start
            first_frame, old_tracks, old_visible = pending
            final_tracks.append(old_tracks[:start - first_frame])
            final_visible.append(old_visible[:start - first_frame])
        visible = visible[0].cpu()
        pending = (start, tracks[0].float().cpu().numpy(),
                   (visible.float() if visible.is_floating_point() else visible).numpy())
        total += new
        if on_frames is not None:
            on_frames(new)
    assert pending is not None
    final_tracks.append(pending[1])
    final_visible.append(pending[2])
    tracks_np, visible_np = np.concatenate(final_tracks), np.concatenate(final_visible)
    if len(tracks_np) != total:
        raise RuntimeError(f"the online model gave {len(tracks_np)} frames of {total}")
    return tracks_np, visible_np
