"""The model resolution a file of ours records, and the shipped cotracker_tiny as the default
of the tracking commands."""

import torch
from cotracker_helpers import SMALL
from safetensors.torch import save_file

from attnvision.cotracker import CoTracker3, build_cotracker
from attnvision.cotracker.checkpoints import stored_resolution
from attnvision.cotracker.predictor import CoTrackerPredictor


def save_small(path, metadata=None):
    torch.manual_seed(0)
    model = CoTracker3(SMALL)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata=metadata)
    return path


def test_the_recorded_resolution_is_the_default(tmp_path):
    path = save_small(tmp_path / "small.safetensors", {"model_resolution": "64,96"})
    assert stored_resolution(path) == (64, 96)
    assert build_cotracker(path).model_resolution == (64, 96)
    assert CoTrackerPredictor(str(path)).interp_shape == (64, 96)
    # an explicit resolution wins
    assert build_cotracker(path, model_resolution=(32, 48)).model_resolution == (32, 48)


def test_files_without_one_run_at_the_released_resolution(tmp_path):
    bare = save_small(tmp_path / "bare.safetensors")
    odd = save_small(tmp_path / "odd.safetensors", {"model_resolution": "wide"})
    pth = tmp_path / "small.pth"
    torch.save(CoTracker3(SMALL).state_dict(), pth)
    for path in (bare, odd, pth):
        assert stored_resolution(path) is None
        assert build_cotracker(path).model_resolution == (384, 512)


def moving_square_clip(frames: int = 16, size=(192, 256), speed=(3.0, 1.5)):
    """A textured square gliding over a noisy background: exact positions of its points."""
    import numpy as np

    rng = np.random.default_rng(1)
    h, w = size
    background = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    texture = rng.integers(120, 256, (48, 48, 3), dtype=np.uint8)
    video = []
    for t in range(frames):
        frame = background.copy()
        x0, y0 = round(40 + speed[0] * t), round(60 + speed[1] * t)
        frame[y0:y0 + 48, x0:x0 + 48] = texture
        video.append(frame)
    points = np.array([[52.0, 72.0], [64.0, 84.0], [76.0, 96.0], [58.0, 96.0]])  # on it, t=0
    truth = points[None] + np.array(speed)[None, None] * np.arange(frames)[:, None, None]
    return np.stack(video), points, truth


def test_the_shipped_model_follows_a_moving_square_offline_and_online():
    import numpy as np

    from attnvision.cotracker.predictor import CoTrackerOnlinePredictor, track_online, video_tensor
    from attnvision.cotracker.pretrained import has_shipped, load_shipped, shipped_checkpoint

    assert has_shipped() and shipped_checkpoint().stat().st_size < 25e6
    frames, points, truth = moving_square_clip()
    queries = np.concatenate([np.zeros((len(points), 1)), points], 1).astype(np.float32)
    offline = load_shipped()
    assert offline.model_resolution == (240, 320) and offline.config.offline
    tracks, visible = CoTrackerPredictor(offline)(video_tensor(frames),
                                                  torch.from_numpy(queries)[None])
    errors = np.linalg.norm(tracks[0].numpy() - truth, axis=-1)
    assert np.median(errors) < 3 and visible.float().mean() > 0.8, np.median(errors)
    online = load_shipped(offline=False)
    tracks, visible = track_online(CoTrackerOnlinePredictor(online), frames, queries=queries,
                                   add_support_grid=True)
    errors = np.linalg.norm(tracks - truth, axis=-1)
    assert np.median(errors) < 3 and visible.mean() > 0.8, np.median(errors)


def test_track_and_eval_track_use_the_shipped_model(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from attnvision.cli import main

    frames, _, _ = moving_square_clip(frames=8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    assert main(["track", str(folder), "--grid", "3", "--out", str(tmp_path / "out"),
                 "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"].endswith("cotracker_tiny.safetensors")
    assert result["model_resolution"] == [240, 320] and result["points"] == 9
    assert np.load(tmp_path / "out" / "tracks.npz")["tracks"].shape == (8, 9, 2)
    assert main(["eval", "track", "--synthetic", "--clips", "1", "--frames", "8",
                 "--points", "8", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"].endswith("cotracker_tiny.safetensors")
    assert report["model_resolution"] == [240, 320]
