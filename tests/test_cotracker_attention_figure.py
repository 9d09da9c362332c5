"""The track-attention picture: CoTracker3's update transformer records its attention weights
(without changing its answer), and ``attnvision figures --cotracker-checkpoint`` draws what one
tracked point reads. The small random-weight model of cotracker_helpers, at (64, 96)."""

import json

import numpy as np
import pytest
import torch
from cotracker_helpers import RESOLUTION, SMALL, small_cotracker_weights
from PIL import Image

from attnvision.cli import main
from attnvision.cotracker import CoTracker3, build_cotracker
from attnvision.cotracker.update_transformer import UpdateTransformer, recording

FIGURES = {"positional_encoding", "position_similarity", "patch_grid", "attention_maps",
           "forward_process"}
CLIP = (6, 48, 64, 3)  # T, H, W, 3


@pytest.fixture(autouse=True)
def no_sam2(monkeypatch):
    # The SAM 2 and diffusion pictures are tested elsewhere; skipping them keeps these short.
    import attnvision.diffusion.pretrained as digits
    import attnvision.sam2.pretrained as pretrained

    monkeypatch.setattr(pretrained, "SHIPPED", "missing.safetensors")
    monkeypatch.setattr(digits, "SHIPPED", "missing.safetensors")


@pytest.fixture(scope="module")
def model() -> CoTracker3:
    torch.manual_seed(0)
    return CoTracker3(SMALL).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_cotracker_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


def _clip(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, CLIP, dtype=np.uint8)


def test_recorder_holds_each_blocks_weights_without_changing_the_output():
    torch.manual_seed(0)
    transformer = UpdateTransformer(input_dim=20, hidden_size=32, num_heads=2, time_depth=4,
                                    space_depth=2, num_virtual_tracks=3).eval()
    b, n, t = 2, 5, 7
    x = torch.randn(b, n, t, 20)
    with torch.no_grad():
        plain = transformer(x)
        with recording(transformer) as rec:
            transformer(x)  # a first pass, which the second replaces
            recorded = transformer(x)
    assert transformer.recorder is None
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-5)
    assert len(rec.time) == 4 and len(rec.track_to_virtual) == len(rec.virtual_to_track) == 2
    for w in rec.time:
        assert w.shape == (b * n, 2, t, t)
    for w in rec.track_to_virtual:
        assert w.shape == (b * t, 2, n, 3)
    for w in rec.virtual_to_track:
        assert w.shape == (b * t, 2, 3, n)
    for w in rec.time + rec.track_to_virtual + rec.virtual_to_track:
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def test_recording_does_not_change_the_tracks(model):
    video = torch.rand(1, 5, 3, *RESOLUTION) * 255
    queries = torch.tensor([[[0.0, 10.0, 12.0], [2.0, 50.0, 30.0], [0.0, 80.0, 40.0]]])
    with torch.no_grad():
        plain = model(video, queries, iters=2)
        with recording(model.updateformer) as rec:
            recorded = model(video, queries, iters=2)
    for a, b in zip(plain, recorded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # The last pass of the last iteration: all 3 tracks, all 5 frames.
    assert rec.time[0].shape == (3, 1, 5, 5)
    assert rec.track_to_virtual[0].shape == (5, 1, 3, SMALL.num_virtual_tracks)


def test_the_point_nearest_the_given_one_is_chosen(model):
    from attnvision.viz.track_attention import track_and_attend

    att = track_and_attend(model, _clip(), point=(63.0, 0.0), grid_size=3)
    t, v, n = CLIP[0], SMALL.num_virtual_tracks, 9
    assert att.point == 2  # the grid's top-right point
    assert att.tracks.shape == (t, n, 2) and att.visible.shape == (t, n)
    assert att.time.shape == (SMALL.time_depth, t, t)
    assert att.to_virtual.shape == (t, v) and att.virtual_reads.shape == (t, v, n)
    np.testing.assert_allclose(att.time.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(att.to_virtual.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(att.virtual_reads.sum(-1), 1.0, rtol=1e-5)


def test_figure_is_written(tmp_path, model):
    from attnvision.viz.track_attention import track_attention_figure

    path = track_attention_figure(model, _clip(), tmp_path / "ta.png", clip_name="noise")
    assert path == tmp_path / "ta.png"
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] > 1000 and img.size[1] > 1000
        assert np.asarray(img.convert("L")).std() > 5


def test_the_online_model_is_refused(checkpoint):
    from attnvision.errors import UserError
    from attnvision.viz.track_attention import track_and_attend

    online = build_cotracker(checkpoint, offline=False, model_resolution=RESOLUTION)
    with pytest.raises(UserError, match="offline"):
        track_and_attend(online, _clip())


def test_figures_draws_track_attention_with_a_checkpoint(tmp_path, capsys, checkpoint,
                                                          monkeypatch):
    import attnvision.commands.course as course

    monkeypatch.setattr(course, "TRACK_CLIP_FRAMES", 4)
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), "--cotracker-checkpoint", str(checkpoint),
                 "--cotracker-resolution", f"{RESOLUTION[0]},{RESOLUTION[1]}", "--json",
                 "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    files = json.loads(stdout)["files"]
    assert set(files) == FIGURES | {"track_attention"}
    assert files["track_attention"] == str(out / "track_attention.png")
    with Image.open(files["track_attention"]) as img:
        assert img.format == "PNG" and img.size[0] > 1000
    assert "--cotracker-checkpoint" not in err


def test_figures_without_a_cotracker_says_so_and_draws_the_rest(tmp_path, capsys,
                                                                 monkeypatch):
    import attnvision.commands.course as course

    monkeypatch.setattr(course, "_shipped_cotracker", lambda: None)  # an install without one
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--json", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert set(json.loads(stdout)["files"]) == FIGURES
    notes = [line for line in err.splitlines() if "--cotracker-checkpoint" in line]
    assert len(notes) == 1 and "skipped" in notes[0]
    assert not (out / "track_attention.png").exists()


def test_figures_default_to_the_shipped_cotracker(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--json", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert set(json.loads(stdout)["files"]) == FIGURES | {"track_attention"}
    notes = [line for line in err.splitlines() if "--cotracker-checkpoint" in line]
    assert len(notes) == 1 and "shipped cotracker_tiny" in notes[0]


@pytest.mark.parametrize("kind", ["missing", "not weights", "not CoTracker3", "resolution"])
def test_a_bad_checkpoint_is_one_line_and_exit_2_before_writing(tmp_path, capsys, kind,
                                                               checkpoint):
    from safetensors.torch import save_file

    bad = tmp_path / ("bad.safetensors" if kind == "not CoTracker3" else "bad.pth")
    if kind == "not weights":
        bad.write_text("not a checkpoint")
    elif kind == "not CoTracker3":
        save_file({"head.weight": torch.zeros(2, 2)}, str(bad))
    args = ["--cotracker-checkpoint", str(bad)]
    if kind == "resolution":
        args = ["--cotracker-checkpoint", str(checkpoint), "--cotracker-resolution", "64x96"]
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    assert ("--cotracker-resolution" if kind == "resolution" else bad.name) in err[0]
    assert not out.exists()
