"""Point tracks drawn over video frames with Pillow: what a person checks a tracker with.

Two pictures: every frame with each track's point and a fading trail of its last few
positions (the overlay video), and one frame, dimmed, with every track's whole path (the
trajectories picture). A track is drawn only from its ``start`` frame on (its query frame:
before it an offline tracker run forwards only guesses), visible stretches solid and
occluded ones faint, so a point lost behind an object reads differently from one in view.

Colours: a few tracks take the distinct colours of :data:`attnvision.viz.overlays.PALETTE`;
many take a rainbow by their query's height in the frame (as the official CoTracker
visualiser colours a grid), so neighbouring points share a hue and a patch moving together
reads as one band of colour.
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw

from attnvision.viz.overlays import PALETTE

TRAIL = 10  # frames of trail behind each point in the overlay video
OCCLUDED_ALPHA = 0.35  # how strongly occluded stretches and points are drawn


def track_colours(queries: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB, one colour per track of the (N, 3) ``(t, x, y)`` queries."""
    queries = np.asarray(queries, np.float64).reshape(-1, 3)
    n = len(queries)
    if n <= len(PALETTE):
        return np.array(PALETTE[:n], np.uint8).reshape(n, 3)
    y = queries[:, 2]
    span = float(y.max() - y.min())
    # Ties (points of one row) are split by x, so a row is not one colour.
    rank = (y - y.min()) / span if span > 0 else np.zeros(n)
    x = queries[:, 1]
    rank = rank + 0.02 * (x - x.min()) / max(float(x.max() - x.min()), 1e-9)
    hues = 0.8 * rank / max(float(rank.max()), 1e-9)  # red .. violet, no wrap back to red
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.9, 1.0)] for h in hues],
                    np.uint8)


def _sizes(height: int, width: int) -> tuple[int, int]:
    """The point radius and the line width for a frame of this size."""
    radius = max(2, round(max(height, width) / 160))
    return radius, max(1, radius // 2)


def _starts(starts: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if starts is None else np.asarray(starts, np.int64).reshape(n)


def _rgba(colour: np.ndarray, alpha: float) -> tuple[int, int, int, int]:
    r, g, b = (int(c) for c in colour)
    return r, g, b, max(0, min(255, round(255 * alpha)))


def draw_tracks(frame: np.ndarray, tracks: np.ndarray, visible: np.ndarray, t: int,
                colours: np.ndarray, starts: np.ndarray | None = None,
                trail: int = TRAIL) -> Image.Image:
    """Frame ``t`` (H, W, 3 uint8) with each track's point at ``t`` and its trail over the
    ``trail`` frames before, fading with age. tracks: (T, N, 2) (x, y) pixels; visible:
    (T, N) bool; starts: (N,) the first frame to draw each track from (default 0)."""
    tracks = np.asarray(tracks, np.float64)
    visible = np.asarray(visible, bool)
    n = tracks.shape[1]
    starts = _starts(starts, n)
    picture = Image.fromarray(frame).convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    radius, width = _sizes(*frame.shape[:2])
    for i in range(n):
        first = max(int(starts[i]), t - trail)
        for s in range(first, t):  # oldest first, so newer segments lie on top
            age = (t - s) / (trail + 1)
            alpha = (1 - age) * (1.0 if visible[s + 1, i] else OCCLUDED_ALPHA)
            (x0, y0), (x1, y1) = tracks[s, i], tracks[s + 1, i]
            draw.line((x0, y0, x1, y1), fill=_rgba(colours[i], alpha), width=width)
    for i in range(n):
        if t < starts[i]:
            continue
        x, y = tracks[t, i]
        box = (x - radius, y - radius, x + radius, y + radius)
        if visible[t, i]:
            draw.ellipse(box, fill=_rgba(colours[i], 1.0), outline=(255, 255, 255, 255))
        else:  # occluded: a faint ring where the tracker thinks the point is
            draw.ellipse(box, outline=_rgba(colours[i], 0.8), width=max(1, width))
    return Image.alpha_composite(picture, layer).convert("RGB")


def overlay_frames(frames: Iterable[np.ndarray], tracks: np.ndarray, visible: np.ndarray,
                   colours: np.ndarray, starts: np.ndarray | None = None,
                   trail: int = TRAIL) -> Iterator[np.ndarray]:
    """:func:`draw_tracks` on each frame in turn, as (H, W, 3) uint8 arrays (for
    :func:`attnvision.data.video.write_video`); stops at the last tracked frame."""
    for t, frame in enumerate(frames):
        if t >= len(tracks):
            break
        yield np.asarray(draw_tracks(frame, tracks, visible, t, colours, starts, trail))


def trajectories_picture(frame: np.ndarray, tracks: np.ndarray, visible: np.ndarray,
                         colours: np.ndarray, starts: np.ndarray | None = None,
                         dim: float = 0.45, outline: np.ndarray | None = None) -> Image.Image:
    """``frame`` dimmed to ``dim`` of its brightness, with every track's path from its start
    frame to the end (visible stretches solid, occluded ones faint), a ring where it starts
    and a dot where it ends; ``outline``, an (H, W) bool mask (the region the points were
    placed in), has its edge drawn in white beneath the tracks."""
    tracks = np.asarray(tracks, np.float64)
    visible = np.asarray(visible, bool)
    t_count, n = tracks.shape[:2]
    starts = _starts(starts, n)
    dimmed = (frame.astype(np.float32) * dim).round().astype(np.uint8)
    if outline is not None:
        mask = np.asarray(outline, bool)
        m = np.pad(mask, 1)  # the frame's border ends a mask too
        inner = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        dimmed[mask & ~inner] = 255
    picture = Image.fromarray(dimmed).convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    radius, width = _sizes(*frame.shape[:2])
    for i in range(n):
        start = int(starts[i])
        for s in range(start, t_count - 1):
            alpha = 0.9 if visible[s + 1, i] and visible[s, i] else OCCLUDED_ALPHA
            (x0, y0), (x1, y1) = tracks[s, i], tracks[s + 1, i]
            draw.line((x0, y0, x1, y1), fill=_rgba(colours[i], alpha), width=width)
    for i in range(n):
        start = min(int(starts[i]), t_count - 1)
        x, y = tracks[start, i]
        draw.ellipse((x - radius, y - radius, x + radius, y + radius),
                     outline=_rgba(colours[i], 1.0), width=max(1, width))
        x, y = tracks[-1, i]
        r = max(1, radius - 1)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_rgba(colours[i], 1.0))
    return Image.alpha_composite(picture, layer).convert("RGB")
