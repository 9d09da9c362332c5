"""CoTracker3: many points tracked jointly through a video by iterative refinement.

Every track starts where its query point is, invisible and unsure, in every frame. Each
iteration builds one token per track per frame from
- the visibility and confidence logits so far,
- the correlation of the track's current neighbourhood with its query's neighbourhood, at
  four scales, embedded by ``corr_mlp`` (:mod:`attnvision.cotracker.correlation`),
- the motion to the previous and next frame, Fourier-encoded,
plus a sin-cos embedding of the frame's time, and the update transformer
(:mod:`attnvision.cotracker.update_transformer`) answers how to move each point and how to
change its logits. The correlations are sampled again at the moved points, and so on.

The same weights run two ways, as the official ``CoTrackerThreeOffline`` and
``CoTrackerThreeOnline`` do:
- offline (``config.offline``): the whole video is one window; the time embedding, made for
  ``window_len`` frames, is linearly interpolated to the video's length;
- windows (the online model): windows of ``window_len`` frames that move by half a window; a
  window starts its tracks from the previous window's predictions in the frames they share.
  Called with ``is_online=True`` on successive chunks of a stream it runs one window per
  call and keeps what later windows need in ``online_state`` (reset by
  :meth:`CoTracker3.init_video_online_processing`, the official name). The window itself is
  :meth:`CoTracker3.online_window`, a pure function of tensors (state in, state out), which
  is what the ONNX export traces (:mod:`attnvision.cotracker.onnx`).

Coordinates are input pixels at the model's resolution, (x, y); queries are (t, x, y).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.cotracker.configs import CoTrackerConfig
from attnvision.cotracker.correlation import (
    feature_pyramid,
    query_patches,
    track_correlation,
)
from attnvision.cotracker.encoder import FeatureEncoder
from attnvision.cotracker.update_transformer import UpdateTransformer
from attnvision.nn.encoder import MLP
from attnvision.nn.positional import sinusoidal_frequencies

# Frames through the CNN at once: bounds the memory of the CNN's activations (the features do
# not depend on it). The official code takes 200, which holds the activations of a whole
# 24-frame clip. One frame is also the fastest on a CPU: at 384 x 512 a 64-channel map of
# one frame is 12 MB, of four 50 MB, above glibc's largest recycled block (32 MB), so every
# map of four frames came from fresh pages (CNN per frame, 1 thread: 0.39 s at 1, 0.40 at 2,
# 0.43 at 4, 0.44 at 8).
FMAPS_CHUNK = 1


class TrackerOutput(NamedTuple):
    """What the model predicts for every frame and track (a tuple: ``coords, vis, conf =``)."""

    coords: Tensor  # (B, T, N, 2) pixels (x, y) at the model's resolution
    vis: Tensor  # (B, T, N) probability that the point is visible
    conf: Tensor  # (B, T, N) probability that the point is within a few pixels of the truth


@dataclass
class OnlineState:
    """What the online model carries from one window to the next.

    ``support``: every level's query patches, each added in the window where its query frame
    first appears (a query cannot be sampled before its frame has been seen);
    ``coords`` (B, T, N, 2) pixels, ``vis`` and ``conf`` (B, T, N) logits: the predictions
    from frame ``first`` on, where the next window starts from.

    ``keep_history`` (the official behaviour): every call returns, and the state keeps, the
    predictions of every frame seen so far. Without it a call returns its window's frames
    only (from the ``ind`` the call started at) and the state keeps only the frames the next
    window shares, so a stream of any length runs in constant memory; a window's first
    ``step`` frames are final once the next window has run.
    """

    keep_history: bool = True
    ind: int = 0  # first frame of the next window
    first: int = 0  # the frame coords[:, 0] is
    support: list[Tensor] | None = None
    # The last window's second half and its CNN features: the next chunk starts with the
    # same frames (the official chunks overlap by half a window), so their features are
    # reused rather than computed again, after checking the frames are the same.
    shared_frames: Tensor | None = None
    shared_fmaps: Tensor | None = None
    coords: Tensor | None = None
    vis: Tensor | None = None
    conf: Tensor | None = None


def time_embedding(num_frames: int, dim: int) -> Tensor:
    """(1, T, D) [sin(w_k t) for all k, cos(w_k t) for all k], w_k = 1 / 10000^(2k/D).

    The frequencies of :func:`attnvision.nn.positional.sinusoidal_frequencies`, with the sines
    and cosines in two halves rather than interleaved, as the official buffer holds them.
    """
    t = torch.linspace(0, num_frames - 1, num_frames).double()
    angles = t[:, None] * sinusoidal_frequencies(dim)[None, :]  # (T, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None].float()


def fourier_encode(x: Tensor, octaves: int = 10) -> Tensor:
    """[x, sin(2^i x), cos(2^i x) for i < octaves]: (..., C) -> (..., C + 2 C octaves).

    The sines come first for every octave and coordinate (octave-major), then the cosines,
    computed as sin(. + pi/2) as the official ``posenc`` does.
    """
    scales = 2.0 ** torch.arange(octaves, dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)  # (..., octaves * C)
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * torch.pi], dim=-1))], dim=-1)


class CoTracker3(nn.Module):
    """The CoTracker3 network; see the module docstring for how it runs."""

    def __init__(self, config: CoTrackerConfig) -> None:
        super().__init__()
        self.config = config
        self.fnet = FeatureEncoder(config.latent_dim, config.stride)
        self.updateformer = UpdateTransformer(
            config.input_dim, config.hidden_size, config.num_heads, config.time_depth,
            config.space_depth, config.num_virtual_tracks, config.mlp_ratio)
        self.corr_mlp = MLP(config.corr_side ** 4, config.corr_mlp_hidden, config.corr_emb_dim,
                            activation="gelu")
        # A buffer in the official checkpoints, so loaded with them.
        self.register_buffer("time_emb", time_embedding(config.window_len, config.input_dim))
        self.online_state: OnlineState | None = None

    # The official attribute names, which the predictors and users read.
    @property
    def window_len(self) -> int:
        return self.config.window_len

    @property
    def model_resolution(self) -> tuple[int, int]:
        return self.config.model_resolution

    @property
    def stride(self) -> int:
        return self.config.stride

    def init_video_online_processing(self, keep_history: bool = True) -> None:
        """Forget the previous stream: the next ``is_online`` call starts a new video.

        ``keep_history=False``: each call returns only its window's frames and memory stays
        flat however long the stream (see :class:`OnlineState`)."""
        self.online_state = OnlineState(keep_history=keep_history)

    def forward(self, video: Tensor, queries: Tensor, iters: int = 4,
                is_online: bool = False) -> TrackerOutput:
        """Tracks of ``queries`` through ``video``.

        video: (B, T, 3, H, W) values in [0, 255], H and W multiples of the stride (the
        predictors resize to ``model_resolution``); queries: (B, N, 3) as (t, x, y) in its
        pixels. ``is_online`` (online model only): ``video`` is the next chunk of a stream
        (at most ``window_len`` frames, starting half a window after the previous chunk).
        """
        # video: (B, T, 3, H, W), queries: (B, N, 3)
        h, w = video.shape[-2:]
        if h % self.stride or w % self.stride:
            raise ValueError(f"frames must be a multiple of {self.stride} pixels on each side, "
                             f"not {h}x{w}")
        # uint8 frames and integer queries are welcome; float ones keep their precision.
        video = video if video.is_floating_point() else video.float()
        queries = queries if queries.is_floating_point() else queries.float()
        if self.config.offline:
            if is_online:
                raise ValueError("an offline CoTracker has no online mode: build it with "
                                 "offline=False")
            return self._forward_offline(video, queries, iters)
        return self._forward_windows(video, queries, iters, is_online)

    # -- pieces shared by both ways --------------------------------------------------------

    def _features(self, video: Tensor) -> Tensor:
        """Unit-length CNN features of every frame: (B, T, 3, H, W) -> (B, T, C, H/s, W/s),
        channels-last in memory (C innermost), as the CNN makes them and as the sampler of
        :func:`~attnvision.cotracker.correlation.track_patches` reads them fastest.

        The CNN runs on :data:`FMAPS_CHUNK` frames at a time, written into one preallocated
        tensor, so its activations (many times the size of its output) are held for a few
        frames only, however long the video.
        """
        b, t = video.shape[:2]
        frames = video.flatten(0, 1)
        out = None
        for i in range(0, len(frames), FMAPS_CHUNK):
            fmaps = self.fnet(2 * (frames[i:i + FMAPS_CHUNK] / 255.0) - 1.0)
            # Unit length, so a correlation is a cosine similarity (clamped: zero features).
            fmaps = fmaps / fmaps.square().sum(dim=1, keepdim=True).clamp_min(1e-12).sqrt()
            if out is None:
                out = torch.empty(len(frames), *fmaps.shape[1:], dtype=fmaps.dtype,
                                  device=fmaps.device, memory_format=torch.channels_last)
            out[i:i + FMAPS_CHUNK] = fmaps
            del fmaps  # not held while the CNN runs on the next frames
        assert out is not None
        return out.reshape(b, t, *out.shape[1:])

    def _query_patches(self, pyramid: list[Tensor], frames: Tensor, coords: Tensor
                       ) -> list[Tensor]:
        """Every level's patch around each query: [(B, N, P, C)]; coords in level-0 cells."""
        return [query_patches(fmaps, frames, coords / 2 ** i, self.config.corr_radius)
                for i, fmaps in enumerate(pyramid)]

    def _time_embedding(self, num_frames: int) -> Tensor:
        """(1, T, D): the stored embedding, linearly resampled when T is not its length."""
        if num_frames == self.time_emb.shape[1]:
            return self.time_emb
        resized = F.interpolate(self.time_emb.float().transpose(1, 2), size=num_frames,
                                mode="linear")
        return resized.transpose(1, 2).to(self.time_emb.dtype)

    def _refine(self, pyramid: list[Tensor], support: list[Tensor], coords: Tensor,
                vis: Tensor, conf: Tensor, iters: int) -> tuple[Tensor, Tensor, Tensor]:
        """``iters`` updates of one window's tracks.

        pyramid: [(B, T, C, h_i, w_i)], support: [(B, N, P, C)], coords: (B, T, N, 2) in
        level-0 cells, vis and conf: (B, T, N) logits. Returns the updated three.
        """
        t = coords.shape[1]
        res_h, res_w = self.config.model_resolution
        # Motion is measured in units of the model's whole frame, so its encoding's octaves
        # cover displacements from the frame size down to a few thousandths of it.
        frame_size = torch.tensor([res_w, res_h], device=coords.device) / self.stride
        time_emb = self._time_embedding(t)  # (1, T, D)
        radius = self.config.corr_radius
        for _ in range(iters):
            coords = coords.detach()  # each iteration learns its own step (training)
            # The tokens are track-major (B, N, T, D), as the update transformer takes them,
            # and so are the patches and their correlations, the largest tensors here.
            corr = torch.cat([
                self.corr_mlp(track_correlation(fmaps, coords / 2 ** i, support[i], radius))
                for i, fmaps in enumerate(pyramid)], dim=-1)  # (B, N, T, levels * E)
            forward = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1))
            backward = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0))
            motion = fourier_encode(torch.cat([forward, backward], dim=-1) / frame_size.repeat(2))
            x = torch.cat([vis.transpose(1, 2)[..., None], conf.transpose(1, 2)[..., None], corr,
                           motion.transpose(1, 2)], dim=-1).add_(time_emb)  # (B, N, T, D)
            delta = self.updateformer(x).transpose(1, 2)  # (B, T, N, 4)
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]
        return coords, vis, conf

    # -- offline: the whole video at once --------------------------------------------------

    def _forward_offline(self, video: Tensor, queries: Tensor, iters: int) -> TrackerOutput:
        b, t = video.shape[:2]
        n = queries.shape[1]
        frames = queries[:, :, 0].long()
        start = queries[..., 1:3] / self.stride  # (B, N, 2) cells
        pyramid = feature_pyramid(self._features(video), self.config.corr_levels)
        support = self._query_patches(pyramid, frames, start)
        coords = start[:, None].expand(b, t, n, 2).float()
        vis = video.new_zeros(b, t, n)
        coords, vis, conf = self._refine(pyramid, support, coords, vis, vis.clone(), iters)
        return TrackerOutput(coords * self.stride, vis.sigmoid(), conf.sigmoid())

    # -- windows: the online model ---------------------------------------------------------

    def _forward_windows(self, video: Tensor, queries: Tensor, iters: int,
                         is_online: bool) -> TrackerOutput:
        if is_online:
            return self._forward_online(video, queries, iters)
        b, t = video.shape[:2]
        n = queries.shape[1]
        s = self.window_len
        step = s // 2
        # Pad with copies of the last frame to a whole number of windows.
        pad = (-t) % s
        if pad:
            video = torch.cat([video, video[:, -1:].expand(b, pad, *video.shape[2:])], dim=1)
        frames = queries[:, :, 0].long()
        start = queries[..., 1:3] / self.stride  # (B, N, 2) cells
        pyramid = feature_pyramid(self._features(video), self.config.corr_levels)
        support = self._query_patches(pyramid, frames, start)

        coords_pred = video.new_zeros(b, t, n, 2)
        vis_pred = video.new_zeros(b, t, n)
        conf_pred = video.new_zeros(b, t, n)
        coords = start[:, None].expand(b, s, n, 2).float()
        vis = video.new_zeros(b, s, n)
        conf = video.new_zeros(b, s, n)
        # The official count gives no window at all for t <= step; one window covers those.
        num_windows = max(1, (t - s + step - 1) // step + 1)
        for ind in range(0, step * num_windows, step):
            if ind > 0:
                carry = (frames < ind + s - step)[:, None, :]  # (B, 1, N) already queried
                coords = torch.where(carry[..., None], _from_previous(
                    coords_pred[:, ind:ind + s - step], step) / self.stride, coords)
                vis = torch.where(carry, _from_previous(vis_pred[:, ind:ind + s - step], step),
                                  vis)
                conf = torch.where(carry, _from_previous(conf_pred[:, ind:ind + s - step],
                                                         step), conf)
            # Tracks whose query lies after this window have no query patch yet.
            seen = (frames < ind + s)[:, :, None, None]  # (B, N, 1, 1)
            new_coords, new_vis, new_conf = self._refine(
                [f[:, ind:ind + s] for f in pyramid], [p * seen for p in support], coords,
                vis, conf, iters)
            keep = min(t - ind, s)
            coords_pred[:, ind:ind + s] = new_coords[:, :keep] * self.stride
            vis_pred[:, ind:ind + s] = new_vis[:, :keep]
            conf_pred[:, ind:ind + s] = new_conf[:, :keep]
        return TrackerOutput(coords_pred, vis_pred.sigmoid(), conf_pred.sigmoid())

    def online_window(self, video: Tensor, queries: Tensor, ind: Tensor | int,
                      support: list[Tensor], prev_coords: Tensor, prev_vis: Tensor,
                      prev_conf: Tensor, iters: int, fmaps: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """One window of the online model as a pure function of tensors.

        What :meth:`_forward_online` runs between its bookkeeping, and what the ONNX graph of
        :mod:`attnvision.cotracker.onnx` holds: no state, and no Python branch on a value
        (the window's position ``ind`` may be an int64 scalar tensor, an input of the graph).

        video: (B, S, 3, H, W) floats 0..255, a whole window (S = ``window_len``; a short
        last chunk padded with its last frame); queries: (B, N, 3) (t, x, y) pixels;
        ``ind``: the window's first frame, a multiple of ``step`` = S / 2; ``support``:
        [(B, N, P, C)] per level, the query patches gathered by the earlier windows (zeros
        before the first); prev_coords (B, S - step, N, 2) pixels, prev_vis and prev_conf
        (B, S - step, N) logits: the previous window's predictions in the frames this one
        shares (read only when ind > 0); ``fmaps``: the window's CNN features if already
        known (B, S, C, H/s, W/s), else computed here.

        Returns the window's coords (B, S, N, 2) pixels, vis and conf (B, S, N) logits, and
        the support with the patches of the queries whose frame this window is first to see.
        """
        b, s = video.shape[:2]
        n = queries.shape[1]
        step = s // 2
        frames = queries[:, :, 0].long()
        start = queries[..., 1:3] / self.stride  # (B, N, 2) cells
        fmaps = self._features(video) if fmaps is None else fmaps
        pyramid = feature_pyramid(fmaps, self.config.corr_levels)
        patches = self._query_patches(pyramid, frames - ind, start)
        # Queries whose frame is new in this window (the first window's frames, then the
        # second half of each later one) add their patches, sampled in this window's frames.
        # (ind == 0 and ind > 0 are bools, or bool tensors in a traced graph.)
        new = ((frames >= ind + step) | (ind == 0)) & (frames < ind + s)  # (B, N)
        support = [acc + p * new[:, :, None, None]
                   for acc, p in zip(support, patches, strict=True)]

        coords = start[:, None].expand(b, s, n, 2).float()
        vis = video.new_zeros(b, s, n)
        conf = video.new_zeros(b, s, n)
        # Tracks already queried start from the previous window's predictions in the shared
        # frames (selected, not blended: the first window's zeros leave no trace).
        carry = ((frames < ind + s - step) & (ind > 0))[:, None, :]  # (B, 1, N)
        coords = torch.where(carry[..., None], _from_previous(prev_coords, step) / self.stride,
                             coords)
        vis = torch.where(carry, _from_previous(prev_vis, step), vis)
        conf = torch.where(carry, _from_previous(prev_conf, step), conf)
        # Tracks whose query lies after this window have no query patch yet.
        seen = (frames < ind + s)[:, :, None, None]  # (B, N, 1, 1)
        coords, vis, conf = self._refine(pyramid, [p * seen for p in support], coords, vis,
                                         conf, iters)
        return coords * self.stride, vis, conf, support

    def _forward_online(self, video: Tensor, queries: Tensor, iters: int) -> TrackerOutput:
        """One window, at ``online_state.ind``, of a stream; see :class:`OnlineState`."""
        state = self.online_state
        if state is None:
            raise ValueError("call init_video_online_processing() before the first online "
                             "chunk")
        b, t = video.shape[:2]
        s = self.window_len
        step = s // 2
        if t > s:
            raise ValueError(f"an online chunk holds at most {s} frames, not {t}")
        if t < s:  # pad with copies of the last frame to one whole window
            video = torch.cat([video, video[:, -1:].expand(b, s - t, *video.shape[2:])], dim=1)
        n = queries.shape[1]
        ind = state.ind
        if state.support is None:
            patch = (b, n, self.config.corr_side ** 2, self.config.latent_dim)
            state.support = [video.new_zeros(patch) for _ in range(self.config.corr_levels)]
        if state.coords is None:  # the first window: nothing to start from (zeros unread)
            prev_coords = video.new_zeros(b, s - step, n, 2)
            prev_vis = prev_conf = video.new_zeros(b, s - step, n)
        else:
            lo = ind - state.first
            prev_coords, prev_vis, prev_conf = (x[:, lo:lo + s - step] for x in (
                state.coords, state.vis, state.conf))
        shared = state.shared_frames
        if shared is not None and shared.shape == video[:, :step].shape and torch.equal(
                shared, video[:, :step]):
            fmaps = _cat_frames(state.shared_fmaps, self._features(video[:, step:]))
        else:
            fmaps = self._features(video)
        state.shared_frames, state.shared_fmaps = video[:, step:], fmaps[:, step:]
        coords, vis, conf, state.support = self.online_window(
            video, queries, ind, state.support, prev_coords, prev_vis, prev_conf, iters, fmaps)
        coords, vis, conf = coords[:, :t], vis[:, :t], conf[:, :t]
        if state.keep_history:
            if state.coords is not None:  # frames before this window, then this window's
                coords = torch.cat([state.coords[:, :ind], coords], dim=1)
                vis = torch.cat([state.vis[:, :ind], vis], dim=1)
                conf = torch.cat([state.conf[:, :ind], conf], dim=1)
            state.coords, state.vis, state.conf = coords, vis, conf
        else:
            # Only the frames the next window shares; this call returns this window's frames.
            state.first = ind + step
            state.coords, state.vis, state.conf = (x[:, step:] for x in (coords, vis, conf))
        state.ind += step
        return TrackerOutput(coords, vis.sigmoid(), conf.sigmoid())


def _cat_frames(first: Tensor, second: Tensor) -> Tensor:
    """Two runs of features (B, T_i, C, H, W) as one, channels-last as both are (a plain
    ``torch.cat`` of these 5-D tensors returns them C-outermost)."""
    joined = torch.cat([first.permute(0, 1, 3, 4, 2), second.permute(0, 1, 3, 4, 2)], dim=1)
    return joined.permute(0, 1, 4, 2, 3)


def _from_previous(shared: Tensor, step: int) -> Tensor:
    """A window's start from the previous window's predictions: its frames shared with the
    previous window (B, S - step, ...), then the last of them repeated over ``step`` frames."""
    return torch.cat([shared, shared[:, -1:].expand(-1, step, *shared.shape[2:])], dim=1)
