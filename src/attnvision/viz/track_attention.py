"""A picture of CoTracker3's attention: what one tracked point reads, in time and from the
virtual tracks.

CoTracker3 refines a grid of tracks together. Its update transformer alternates two kinds of
attention (:mod:`attnvision.cotracker.update_transformer`): each track's frames attend to each
other (time), and tracks exchange information through a few learnt *virtual tracks*, which
first read from every track and are then read by every track (space). The figure tracks a
grid over a short clip with :class:`~attnvision.cotracker.CoTrackerPredictor`, records the
weights of the last refinement iteration (the one whose answer is the result), picks one
point, and shows

(a) the point's track on a few frames, and its time attention in each time block: a T x T
    matrix whose row t is how frame t of the track spreads its attention over the track's
    frames (mean over heads);
(b) in the last space block, how much the point reads each virtual track in each frame (mean
    over heads), and, for the virtual tracks it reads most, where they read: on the middle
    frame a circle on every track, as large as that virtual track's attention to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from attnvision.cotracker.model import CoTracker3
from attnvision.cotracker.predictor import ITERS, CoTrackerPredictor, video_tensor
from attnvision.cotracker.update_transformer import recording
from attnvision.errors import UserError
from attnvision.viz.plots import save_figure

Point = tuple[float, float]  # (x, y) in the video's pixels
GRID_SIZE = 10  # the official demo's grid: 100 tracks
FRAMES_SHOWN = 4
TOP_VIRTUAL = 4  # virtual tracks drawn with where they read
TIME_PANELS = 3  # at most this many time blocks drawn (first to last, evenly)
POINT_COLOUR = "cyan"


@dataclass
class TrackAttention:
    """A grid tracked through a clip, and the last iteration's attention of one of its points.

    Weights are means over heads; ``space_block`` and the others index the model's blocks.
    """

    tracks: np.ndarray  # (T, N, 2) (x, y) in the video's pixels
    visible: np.ndarray  # (T, N) bool
    point: int  # the chosen track
    time: np.ndarray  # (time blocks, T, T): the point's frame (row) over its frames
    to_virtual: np.ndarray  # (T, V): the point over the virtual tracks, per frame
    virtual_reads: np.ndarray  # (T, V, N): each virtual track over the tracks, per frame
    space_block: int  # which space block to_virtual and virtual_reads come from (0-based)
    space_blocks: int
    heads: int


def nearest_track(tracks: np.ndarray, point: Point) -> int:
    """The track whose frame-0 position is closest to ``point``."""
    return int(np.argmin(np.square(tracks[0] - np.asarray(point)).sum(-1)))


@torch.no_grad()
def track_and_attend(model: CoTracker3, frames: np.ndarray, point: Point | None = None,
                     grid_size: int = GRID_SIZE, space_block: int = -1) -> TrackAttention:
    """Track a ``grid_size`` x ``grid_size`` grid of frame 0 through ``frames`` (T, H, W, 3)
    uint8, as ``attnvision track --grid`` does, and keep the attention of the track nearest
    ``point`` (default: the frame's centre) in the last refinement iteration."""
    if len(frames) < 2:
        raise UserError("the track-attention picture needs a clip of at least 2 frames")
    if not model.config.offline:
        # The windowed model's last pass sees only the last window: not the whole clip.
        raise UserError("the track-attention picture needs the offline CoTracker3 "
                        "(scaled_offline.pth)")
    device = next(model.parameters()).device
    predictor = CoTrackerPredictor(model)
    with recording(model.updateformer) as rec:
        tracks, visible = predictor(video_tensor(frames, device), grid_size=grid_size)
    tracks, visible = tracks[0].float().cpu().numpy(), visible[0].cpu().numpy()
    h, w = frames.shape[1:3]
    i = nearest_track(tracks, (w / 2, h / 2) if point is None else point)
    n = tracks.shape[1]
    heads = rec.time[0].shape[1]
    # (B N, heads, T, T) with B = 1: the point's row block, mean over heads.
    time = torch.stack([a.unflatten(0, (-1, n))[0, i].mean(0) for a in rec.time])
    block = range(len(rec.track_to_virtual))[space_block]
    to_virtual = rec.track_to_virtual[block][:, :, i].mean(1)  # (T, V)
    reads = rec.virtual_to_track[block].mean(1)  # (T, V, N)
    return TrackAttention(tracks, visible, i, time.cpu().numpy(), to_virtual.cpu().numpy(),
                          reads.cpu().numpy(), block, len(rec.track_to_virtual), heads)


def _evenly(count: int, most: int) -> list[int]:
    return sorted({round(k) for k in np.linspace(0, count - 1, min(count, most))})


def _whole_ticks(ax: Axes, y: bool = True) -> None:
    # Frames and virtual tracks are counted: no tick between two of them.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)


def _show_frame(ax: Axes, frame: np.ndarray) -> None:
    ax.imshow(frame)
    # Points tracked off the frame are not drawn: the frame keeps its size in every panel.
    h, w = frame.shape[:2]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def _frame_panel(ax: Axes, frame: np.ndarray, att: TrackAttention, t: int) -> None:
    """The frame, every tracked point faint, the chosen point's path so far and where it is
    (hollow when the tracker calls it hidden)."""
    _show_frame(ax, frame)
    xy = att.tracks[t]
    ax.scatter(xy[:, 0], xy[:, 1], s=6, c="white", alpha=0.5, linewidths=0)
    path = att.tracks[:t + 1, att.point]
    ax.plot(path[:, 0], path[:, 1], color=POINT_COLOUR, lw=1.5)
    seen = bool(att.visible[t, att.point])
    ax.plot(*xy[att.point], marker="o", markersize=8, mew=2, color=POINT_COLOUR,
            mfc=POINT_COLOUR if seen else "none")
    state = "the query" if t == 0 else "visible" if seen else "hidden"
    ax.set_title(f"frame {t} ({state})", fontsize=10)


def track_attention_figure(model: CoTracker3, frames: np.ndarray, path: str | os.PathLike[str],
                           point: Point | None = None, grid_size: int = GRID_SIZE,
                           clip_name: str | None = None) -> Path:
    """Track, then draw what the point nearest ``point`` reads (see the module docstring)."""
    att = track_and_attend(model, frames, point, grid_size)
    num_frames, num_virtual = att.to_virtual.shape
    fh, fw = frames.shape[1:3]
    mid = num_frames // 2
    cols = 4
    aspect = fh / fw
    fig = Figure(figsize=(3.3 * cols, 3.0 * aspect * 2 + 3.0 * 2 + 2.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.0 * aspect + 3.2, 3.0 * aspect + 3.2])
    cmap = colormaps["inferno"]

    # (a) time: the track on a few frames, then each time block's T x T matrix.
    axes = top.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, t in zip(axes[0], _evenly(num_frames, FRAMES_SHOWN), strict=False):
        _frame_panel(ax, frames[t], att, t)
    blocks = _evenly(len(att.time), TIME_PANELS)
    # One scale for every block, so a block that looks far along the track stands out.
    norm = Normalize(0.0, float(att.time.max()))
    for ax, k in zip(axes[1], blocks, strict=False):
        ax.axis("on")
        ax.imshow(att.time[k], cmap=cmap, norm=norm, interpolation="nearest")
        ax.set_title(f"time block {k + 1} of {len(att.time)}", fontsize=10)
        ax.set_xlabel("frame it reads", fontsize=9)
        ax.set_ylabel("frame that asks", fontsize=9)
        _whole_ticks(ax)
    # Below the matrices, not beside them: a colour bar beside some panels of a row would
    # narrow their columns and misalign the frames above.
    top.colorbar(ScalarMappable(norm, cmap), ax=list(axes[1, :len(blocks)]), shrink=0.6,
                 location="bottom", aspect=40, label="attention weight")
    ax = axes[1, cols - 1]
    ax.axis("on")
    shades = colormaps["viridis"](np.linspace(0.0, 0.85, len(att.time)))
    for k, shade in enumerate(shades):
        ax.plot(att.time[k, mid], marker="o", markersize=3, color=shade,
                label=f"time block {k + 1}")
    ax.axvline(mid, color="0.5", lw=0.8, ls=":")
    ax.set_xlabel("frame it reads", fontsize=9)
    ax.set_ylabel("attention weight", fontsize=9)
    ax.set_title(f"row {mid}: what frame {mid} reads", fontsize=10)
    ax.set_ylim(0.0, None)
    ax.legend(fontsize=8)
    _whole_ticks(ax, y=False)
    top.suptitle("(a) time attention: every frame of the point's track (cyan) attends to all "
                 "the track's frames; row t of a matrix sums to 1", fontsize=11)

    # (b) space: the point's reading of each virtual track, then where the most read look.
    grid = bottom.add_gridspec(2, cols)
    mean = att.to_virtual.mean(0)  # (V,)
    top_k = [int(v) for v in np.argsort(-mean)[:min(TOP_VIRTUAL, num_virtual)]]
    colours = [colormaps["tab10"](k) for k in range(len(top_k))]

    ax = bottom.add_subplot(grid[0, :2])
    ax.imshow(att.to_virtual, cmap=cmap, aspect="auto", interpolation="nearest",
              vmin=0.0)
    ax.set_xlabel("virtual track", fontsize=9)
    ax.set_ylabel("frame", fontsize=9)
    ax.set_title(f"the point's attention to each of the {num_virtual} virtual tracks, per "
                 f"frame", fontsize=10)
    _whole_ticks(ax)
    bottom.colorbar(ax.images[0], ax=ax, shrink=0.6, location="bottom", aspect=40,
                    label="attention weight")
    for v, colour in zip(top_k, colours, strict=True):
        ax.axvline(v, color=colour, lw=1.0, ls=":")

    ax = bottom.add_subplot(grid[0, 2:])
    bar_colours = ["0.6"] * num_virtual
    for v, colour in zip(top_k, colours, strict=True):
        bar_colours[v] = colour
    ax.bar(np.arange(num_virtual), mean, color=bar_colours, width=0.8)
    ax.axhline(1.0 / num_virtual, color="k", lw=0.8, ls="--", label="uniform (1/V)")
    ax.set_xlim(-0.5, num_virtual - 0.5)
    ax.set_xlabel("virtual track", fontsize=9)
    ax.set_ylabel("mean weight over frames", fontsize=9)
    ax.set_title(f"the same, mean over frames; the {len(top_k)} most read in colour",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    _whole_ticks(ax, y=False)

    reads = att.virtual_reads[mid]  # (V, N)
    xy = att.tracks[mid]
    for col, (v, colour) in enumerate(zip(top_k, colours, strict=True)):
        ax = bottom.add_subplot(grid[1, col])
        ax.axis("off")
        _show_frame(ax, frames[mid])
        weights = reads[v]
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c="white", alpha=0.6, linewidths=0)
        # Circle area in proportion to the weight, the largest of each panel the same size:
        # the panels compare where each virtual track looks, not how peaked it is.
        ax.scatter(xy[:, 0], xy[:, 1], s=200 * weights / max(float(weights.max()), 1e-12),
                   facecolors=[(*colour[:3], 0.35)], edgecolors=[colour], linewidths=1.2)
        ax.plot(*xy[att.point], marker="+", color=POINT_COLOUR, markersize=12, mew=2)
        ax.set_title(f"virtual track {v}: {mean[v]:.1%} of the point's reading;\nit puts "
                     f"{weights[att.point]:.1%} on the point, at most {weights.max():.1%}",
                     fontsize=9)
    bottom.suptitle(f"(b) attention through the virtual tracks (space block {att.space_block + 1} "
                    f"of {att.space_blocks}): the point (cyan +) reads the virtual tracks; each "
                    f"reads every track\n(bottom: frame {mid}, a circle on every track as large "
                    f"as that virtual track's attention to it)", fontsize=11)

    source = f" ({clip_name} clip)" if clip_name else ""
    fig.suptitle(f"CoTracker3 attention{source}: what one point of a {grid_size} x {grid_size} "
                 f"grid reads, in the last of {ITERS} refinement iterations, mean over "
                 f"{att.heads} head{'s' if att.heads > 1 else ''}", fontsize=12)
    return save_figure(fig, path)
