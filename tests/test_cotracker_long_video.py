"""Long videos in bounded memory: the online loop over 1,000 frames holds one window of state
and its memory stays flat; offline, the CNN runs on a few frames at a time and gives the same
features as on all of them at once."""

import os
from dataclasses import replace

import numpy as np
import torch
from cotracker_helpers import SMALL

from attnvision.cotracker import CoTracker3, CoTrackerOnlinePredictor
from attnvision.cotracker import model as cotracker_model
from attnvision.cotracker.predictor import track_online

H, W = SMALL.model_resolution
FRAME = (240, 320)  # the video's frames: large enough that keeping them would show


def rss_mb() -> float:
    """The process's resident memory now (not its peak), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def moving_square(count: int):
    """``count`` frames of a bright square drifting over noise, made one at a time."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 80, (*FRAME, 3), dtype=np.uint8)
    for t in range(count):
        frame = background.copy()
        x = 40 + 2 * (t % 100)
        frame[80:140, x:x + 60] = 230
        yield frame


def test_a_thousand_frames_online_hold_one_window_and_flat_memory():
    torch.manual_seed(0)
    predictor = CoTrackerOnlinePredictor(CoTracker3(replace(SMALL, offline=False)).eval())
    window = predictor.model.window_len
    held, rss = [], {}
    frames_done = 0

    def after_chunk(k: int) -> None:
        nonlocal frames_done
        frames_done += k
        state = predictor.model.online_state
        held.append(max(state.coords.shape[1], state.vis.shape[1], state.conf.shape[1]))
        rss[frames_done] = rss_mb()

    tracks, visible = track_online(predictor, moving_square(1000), grid_size=4,
                                   on_frames=after_chunk)
    assert tracks.shape == (1000, 16, 2) and visible.shape == (1000, 16)
    assert np.isfinite(tracks).all()
    assert max(held) <= window  # never more than one window of predictions
    # From frame 200 on, memory grows by no more than the answer itself (a few kilobytes a
    # frame); frames kept, or the heap left untrimmed, would add 40 KB to 1 MB a frame.
    start = rss[min(k for k in rss if k >= 200)]
    assert max(rss.values()) - start < 10, rss


def test_features_in_chunks_equal_features_all_at_once(monkeypatch):
    torch.manual_seed(0)
    model = CoTracker3(SMALL).eval()
    video = torch.rand(1, 7, 3, H, W) * 255
    with torch.no_grad():
        monkeypatch.setattr(cotracker_model, "FMAPS_CHUNK", 100)
        whole = model._features(video)
        monkeypatch.setattr(cotracker_model, "FMAPS_CHUNK", 3)
        chunked = model._features(video)
    assert chunked.shape == (1, 7, SMALL.latent_dim, H // 4, W // 4)
    # The same up to float32 rounding: conv2 (104 -> 64 channels here) goes by Winograd
    # for the 7 frames at once, whose cells are enough to pay, and directly for 3.
    torch.testing.assert_close(chunked, whole, atol=2e-5, rtol=1e-4)
    assert torch.allclose(chunked.norm(dim=2), torch.ones(1, 7, H // 4, W // 4), atol=1e-5)


def test_online_windows_reuse_the_shared_frames_features(monkeypatch):
    """Each chunk after the first starts with the previous one's last half window: those
    frames go through the CNN once, with the same tracks as computing them again."""
    torch.manual_seed(0)
    model = CoTracker3(replace(SMALL, offline=False)).eval()
    step = model.window_len // 2
    frames = np.stack(list(moving_square(5 * step)))
    cnn_frames = []
    features = model._features

    def counted(video):
        cnn_frames.append(video.shape[1])
        return features(video)

    monkeypatch.setattr(model, "_features", counted)
    tracks, visible = track_online(CoTrackerOnlinePredictor(model), frames, grid_size=3)
    # 4 chunks of a whole window: the first through the CNN whole, then only new frames
    assert cnn_frames == [2 * step] + [step] * 3

    cnn_frames.clear()
    original = model._forward_online

    def forgetful(*args, **kwargs):  # no features to reuse: every chunk computed whole
        model.online_state.shared_frames = None
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "_forward_online", forgetful)
    again, visible_again = track_online(CoTrackerOnlinePredictor(model), frames, grid_size=3)
    assert cnn_frames == [2 * step] * 4
    np.testing.assert_allclose(tracks, again, atol=1e-4)
    assert np.array_equal(visible, visible_again)
