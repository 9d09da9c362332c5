"""Correlation features: how well the neighbourhood of a track's current guess matches the
neighbourhood of its query point, at four scales.

The CNN features of every frame are averaged 2x2 three times (a pyramid of strides 4, 8, 16
and 32 input pixels). At each level a track's query point contributes a 7x7 patch of features
(sampled once, in the query's frame), and every frame's current guess another 7x7 patch. The
dot products of every feature of one patch with every feature of the other, 49 x 49 = 2401
numbers per level, are what the correlation MLP embeds: comparing whole patches rather than
one vector with a patch lets the model see how the neighbourhood moved, not only where the
best match is. The coarse levels see far (a 7x7 patch at stride 32 spans 224 pixels); the fine
ones see precisely.

Coordinates are in feature cells of level 0 (input pixels / stride), (x, y), and are halved
per level. Samples between cells are bilinear; samples outside the grid take the border value
(the official ``bilinear_sampler``'s conventions: 0 is the centre of the first cell).
A patch's first axis steps in x and its second in y, as the official grid is laid out (the
checkpoints' correlation MLP was trained on that order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bilinear_sample(input: Tensor, coords: Tensor) -> Tensor:
    """``grid_sample`` with coordinates in cells rather than in [-1, 1].

    input (B, C, H, W), coords (B, ..., 2) as (x, y). 0 is the centre of the first cell,
    size - 1 the centre of the last; outside the grid the border value is repeated.
    Returns (B, C, ...).
    """
    h, w = input.shape[2:]
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=coords.device,
                         dtype=coords.dtype)
    grid = coords * scale - 1
    return F.grid_sample(input, grid, align_corners=True, padding_mode="border")


def feature_pyramid(fmaps: Tensor, levels: int) -> list[Tensor]:
    """``levels`` feature maps, each the previous one averaged over 2x2 cells.

    fmaps: (B, T, C, H, W) -> [(B, T, C, H / 2^i, W / 2^i) for i < levels], each in the
    memory layout of ``fmaps`` (channels-last stays channels-last).
    """
    b, t, c = fmaps.shape[:3]
    pyramid = [fmaps]
    for _ in range(levels - 1):
        pooled = F.avg_pool2d(pyramid[-1].flatten(0, 1), 2, stride=2)
        pyramid.append(pooled.reshape(b, t, c, *pooled.shape[-2:]))
    return pyramid


def patch_offsets(radius: int, device: torch.device | None = None) -> Tensor:
    """(2r+1, 2r+1, 2) offsets (dx, dy) of a patch's cells: dx along the first axis."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    side = len(d)
    return torch.stack([d[:, None].expand(side, side), d[None, :].expand(side, side)], dim=-1)


def sample_cells(fmaps: Tensor, frames: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of feature maps, each point in its own frame.

    fmaps: (B, T, C, H, W); frames: (B, ...) integer indices in [0, T), broadcast against
    ``points``' middle axes; points: (B, ..., 2) (x, y) in cells -> (B, ..., C). The
    conventions of :func:`bilinear_sample` (border values outside the grid), written out as
    four gathers of each point's neighbouring cells, so that the frame is an index rather
    than a third sampling axis.
    """
    b, t, c, h, w = fmaps.shape
    # Border padding: a point outside the grid reads the nearest cell centre.
    x = points[..., 0].clamp(0, w - 1)  # (B, ...)
    y = points[..., 1].clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    # The weights as grid_sample computes them (the far corner minus the point).
    wx1, wy1 = x - x0, y - y0
    wx0, wy0 = x0 + 1 - x, y0 + 1 - y
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)  # weight 0 at the edge
    # Each point's row of (B T): its batch's first frame plus its own.
    batch = torch.arange(b, device=fmaps.device).reshape(b, *[1] * (frames.dim() - 1))
    row = batch * t + frames  # (B, ...), broadcasts against x0
    table = fmaps.reshape(b * t, c, h * w).transpose(1, 2)  # (B T, H W, C), a view
    return (table[row, y0 * w + x0] * (wx0 * wy0)[..., None]
            + table[row, y0 * w + x1] * (wx1 * wy0)[..., None]
            + table[row, y1 * w + x0] * (wx0 * wy1)[..., None]
            + table[row, y1 * w + x1] * (wx1 * wy1)[..., None])


def query_patches(fmaps: Tensor, frames: Tensor, coords: Tensor, radius: int) -> Tensor:
    """Each query's (2r+1)^2 patch of features, in its own frame.

    fmaps: (B, T, C, H, W), frames: (B, N) integer frame indices, coords: (B, N, 2) in cells
    of ``fmaps`` -> (B, N, (2r+1)^2, C). Frames outside [0, T) read the nearest frame.

    The official code samples (t, x, y) with a 5-D ``grid_sample``, which ONNX exporters do
    not take. The frame is an integer, so :func:`sample_cells` gathers it instead (the same
    values): gathering each query's whole frame for a 4-D ``grid_sample`` would hold
    N x C x H x W numbers (gigabytes for a dense grid at full resolution), the four
    neighbouring cells of each point only 4 x N x P x C.
    """
    t = fmaps.shape[1]
    offsets = patch_offsets(radius, coords.device).reshape(1, 1, -1, 2)
    points = coords[:, :, None, :] + offsets  # (B, N, P, 2)
    return sample_cells(fmaps, frames.long().clamp(0, t - 1)[:, :, None], points)


def track_patches(fmaps: Tensor, coords: Tensor, radius: int) -> Tensor:
    """Every frame's (2r+1)^2 patch of features around each track's position in that frame.

    fmaps: (B, T, C, H, W), coords: (B, T, N, 2) in cells of ``fmaps`` ->
    (B, N, T, (2r+1)^2, C), track-major: a track's frames side by side, as
    :func:`correlation` and the update transformer take them.

    ``grid_sample`` in PyTorch, the gathers of :func:`sample_cells` in an ONNX graph (the
    same samples, to float rounding): PyTorch's sampler is about 7 times faster than its
    gathers, ONNX Runtime's ``GridSample`` 3 times slower than its gathers (one channel at a
    time). (A single ``embedding_bag`` over the channels-last features, four weighted rows a
    sample, took half of ``grid_sample``'s time and rounded positions better, but the small
    random models of the parity fixtures amplify any change of rounding a thousandfold, and
    with it the small online case moved 0.06 px from the official at two threads.)
    """
    b, t, c, h, w = fmaps.shape
    n = coords.shape[2]
    offsets = patch_offsets(radius, coords.device).reshape(1, 1, 1, -1, 2)
    if torch.onnx.is_in_onnx_export():
        points = coords.transpose(1, 2)[:, :, :, None, :] + offsets  # (B, N, T, P, 2)
        frames = torch.arange(t, device=coords.device)[None, None, :, None]  # (1, 1, T, 1)
        return sample_cells(fmaps, frames, points)
    points = coords.reshape(b * t, n, 1, 2) + offsets[0, 0]  # (B T, N, P, 2)
    samples = bilinear_sample(fmaps.reshape(b * t, c, h, w), points)  # (B T, C, N, P)
    return samples.reshape(b, t, c, n, -1).permute(0, 3, 1, 4, 2)


def correlation(track: Tensor, query: Tensor) -> Tensor:
    """Dot products of every feature of a track's patch with every feature of its query's.

    track: (B, N, T, P, C), query: (B, N, P, C) -> (B, N, T, P * P), the track's cell first.

    One product per track and batch element, over all its frames at once: (T P, C) @ (C, P).
    Per frame, (P, C) @ (C, P) products of 49 x 128 by 128 x 49 ran at a quarter of this
    core's pace; a track's T frames make the left matrix T times taller. The sums are the
    same.
    """
    b, n, t, p, c = track.shape
    if torch.onnx.is_in_onnx_export():  # one node for the exported graph
        return (track @ query[:, :, None].transpose(-1, -2)).flatten(-2)
    query_t = query.transpose(-1, -2)  # (B, N, C, P)
    volume = torch.stack([torch.bmm(track[i].reshape(n, t * p, c), query_t[i])
                          for i in range(b)])  # (B, N, T P, P)
    return volume.view(b, n, t, p * p)


# Values of track patches sampled at once at inference (2 MB in float32, the L2 of an Intel
# Xeon core; the AMD EPYC's cores have 1 MB): a whole level's patches are 60 MB for 100 tracks
# over 24 frames, from fresh pages each time. The four levels' sampling and products for 100
# tracks, one thread on that Xeon: 24 frames 177 ms in pieces of 2 MB (3 tracks), 244 in
# pieces of 8 MB; 16 frames 119 / 157.
PATCH_VALUES = 1 << 19


def track_correlation(fmaps: Tensor, coords: Tensor, query: Tensor, radius: int) -> Tensor:
    """:func:`correlation` of :func:`track_patches` with the query patches.

    fmaps: (B, T, C, H, W), coords: (B, T, N, 2) in cells of ``fmaps``, query: (B, N, P, C)
    -> (B, N, T, P * P). At inference a few tracks at a time (:data:`PATCH_VALUES`), each
    track's products read from ``grid_sample``'s output as it lies, (T, C, P) with the
    chunk's other tracks between its patches: one product per track over its T frames,
    (P, C) @ (C, P) each, which saves the (B, N, T, P, C) copy :func:`track_patches` makes.
    Those per-frame products run slower than :func:`correlation`'s one per track, but the
    copy took as long as the sampling and cost more than they lose. The same products, so
    the same values.
    """
    if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
        return correlation(track_patches(fmaps, coords, radius), query)
    b, t, c, h, w = fmaps.shape
    n, p = query.shape[1:3]
    step = max(1, PATCH_VALUES // (b * t * p * c))
    offsets = patch_offsets(radius, coords.device).reshape(-1, 2)
    query_t = query.transpose(-1, -2)  # (B, N, C, P)
    frames = fmaps.reshape(b * t, c, h, w)  # a view
    volume = query.new_empty(b, n, t, p * p)
    for i in range(0, n, step):
        k = min(step, n - i)
        points = coords[:, :, i:i + k].reshape(b * t, k, 1, 2) + offsets  # (B T, k, P, 2)
        samples = bilinear_sample(frames, points).view(b, t, c, k, p)
        for bi in range(b):
            for track in range(k):
                torch.bmm(samples[bi, :, :, track].transpose(1, 2),  # (T, P, C)
                          query_t[bi, i + track].expand(t, c, p),
                          out=volume[bi, i + track].view(t, p, p))
    return volume
