"""CoTracker3's online step as ONNX: the graph in ONNX Runtime against PyTorch, and
``attnvision export-onnx cotracker``.

The small random-weight model (tests/cotracker_helpers.py: an 8-frame window, 64 x 96; its
heads drawn so that points move, :func:`tracking_weights`) is exported once. ONNX Runtime
then tracks a 20-frame synthetic clip of another size (so the frames are resized) through
four windows, the last one short, carrying the state between calls, with queries on several
frames (the later ones join in later windows) plus the support grid, and a grid on a later
frame: the tracks must be PyTorch's (:func:`~attnvision.cotracker.predictor.track_online`)
within 1e-3 px with the same visibility booleans, and the per-window probabilities within
1e-4.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cotracker_helpers import RESOLUTION, RESOLUTION_ARGS, SMALL, small_cotracker_weights
from safetensors.torch import load_file, save_file

from attnvision.cli import main
from attnvision.cotracker import CoTracker3, CoTrackerOnlinePredictor, build_cotracker, pretrained
from attnvision.cotracker import onnx as cotracker_onnx
from attnvision.cotracker.correlation import patch_offsets, query_patches, track_patches
from attnvision.cotracker.onnx import (
    OnlineStep,
    OnnxOnlineTracker,
    compare_online_step,
    example_inputs,
    export_online_step,
)
from attnvision.cotracker.predictor import ITERS, track_online
from attnvision.data.moving_scenes import make_clip

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE_PX = 1e-3
PROB_TOL = 1e-4
FRAME = (80, 120)  # the clip's frames, not the model's 64 x 96


def tracking_weights(path: Path) -> Path:
    """The small model of the other tracking tests, its output heads drawn again so that its
    tracks move (about 1 px a frame, 18 px over the clip) and about a third of the points are
    visible: the official initialisation leaves the heads near zero (under 1 px of motion,
    nothing visible), where a graph of other weights would still pass. Larger weights
    throughout make the model chaotic: float32 rounding alone then moves tracks by pixels
    (PyTorch float32 against float64), and nothing can be compared to 1e-3 px."""
    model = CoTracker3(SMALL)
    model.load_state_dict(load_file(str(small_cotracker_weights(path))))
    heads = model.updateformer
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        heads.flow_head.weight.copy_(torch.randn(heads.flow_head.weight.shape, generator=gen)
                                     * 0.01)
        heads.flow_head.bias.copy_(torch.randn(2, generator=gen) * 0.1)
        heads.vis_conf_head.weight.copy_(
            torch.randn(heads.vis_conf_head.weight.shape, generator=gen) * 0.03)
        heads.vis_conf_head.bias.fill_(0.15)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tracking_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


@pytest.fixture(scope="module")
def model(weights) -> CoTracker3:
    return build_cotracker(weights, offline=False, model_resolution=RESOLUTION)


@pytest.fixture(scope="module")
def graph(model, tmp_path_factory) -> Path:
    return export_online_step(model, tmp_path_factory.mktemp("onnx") / "step.onnx")


@pytest.fixture(scope="module")
def tracker(graph) -> OnnxOnlineTracker:
    return OnnxOnlineTracker(graph, threads=1)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return make_clip(3, "test", FRAME, frames=20).frames  # (20, 80, 120, 3) uint8


# -- the sampler that replaced the 5-D grid_sample ------------------------------------------

def _official_query_patches(fmaps, frames, coords, radius):
    """The official way: (t, x, y) through a 5-D grid_sample on (B, C, T, H, W)."""
    b, n = frames.shape
    t, h, w = fmaps.shape[1], *fmaps.shape[-2:]
    points = coords[:, :, None, :] + patch_offsets(radius).to(coords)[None, None].flatten(2, 3)
    # Frames outside [0, T) read the nearest frame by the sampler's border padding.
    txy = torch.cat([frames.to(coords)[:, :, None, None].expand(b, n, points.shape[2], 1),
                     points], dim=-1)
    scale = torch.tensor([2 / (w - 1), 2 / (h - 1), 2 / (t - 1)], dtype=coords.dtype)
    grid = (txy[..., [1, 2, 0]] * scale - 1)[:, :, :, None, :]  # (B, N, P, 1, 3)
    samples = F.grid_sample(fmaps.transpose(1, 2), grid, align_corners=True,
                            padding_mode="border")
    return samples[..., 0].permute(0, 2, 3, 1)


def test_query_patches_gather_what_the_5d_sampler_read():
    torch.manual_seed(0)
    fmaps = torch.randn(2, 6, 5, 9, 13, dtype=torch.float64)
    frames = torch.randint(-2, 9, (2, 40))  # some before the first frame, some after the last
    coords = torch.rand(2, 40, 2, dtype=torch.float64) * torch.tensor([19.0, 15.0]) - 3
    expected = _official_query_patches(fmaps, frames, coords, 3)
    assert torch.allclose(query_patches(fmaps, frames, coords, 3), expected, atol=1e-12)


def test_track_patches_in_a_graph_sample_what_grid_sample_does(monkeypatch):
    torch.manual_seed(0)
    fmaps = torch.randn(1, 4, 8, 9, 13)
    coords = torch.rand(1, 4, 30, 2) * torch.tensor([19.0, 15.0]) - 3
    eager = track_patches(fmaps, coords, 3)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert torch.allclose(track_patches(fmaps, coords, 3), eager, atol=1e-5)


# -- the pure window ---------------------------------------------------------------------------

def test_online_step_with_its_state_is_the_online_model(model):
    """OnlineStep, its state outputs fed back by hand, gives exactly what is_online calls
    give: the graph's function is the model's."""
    torch.manual_seed(1)
    s, step = model.window_len, model.window_len // 2
    video = torch.rand(1, 3 * step + 2, 3, *RESOLUTION) * 255
    queries = torch.tensor([[[0.0, 10, 12], [5, 40, 30], [9, 90, 60], [13, 3, 50]]])
    step_module = OnlineStep(model).eval()
    state = list(example_inputs(model, num_points=4)[3:])
    state = [torch.zeros_like(x) for x in state]
    model.init_video_online_processing(keep_history=False)
    with torch.no_grad():
        for ind in range(0, video.shape[1] - step, step):
            chunk = video[:, ind:ind + s]
            expected = model(chunk, queries, iters=ITERS, is_online=True)
            padded = torch.cat([chunk, chunk[:, -1:].expand(1, s - chunk.shape[1], -1, -1, -1)],
                               dim=1)
            out = step_module(padded, queries, torch.tensor(ind), *state)
            t = chunk.shape[1]
            for got, want in zip(out[:3], expected, strict=True):
                # (The sigmoid of a whole window and of its first t frames may round apart.)
                assert torch.allclose(got[:, :t], want, atol=1e-6, rtol=0)
            state = list(out[3:])
    model.online_state = None


# -- the graph ---------------------------------------------------------------------------------

def test_graph_has_dynamic_points_and_no_grid_sample(graph, tracker):
    proto = onnx.load(str(graph))
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    # No GridSample at all: the query patches (the official 5-D sampler) and the track patches
    # are gathers.
    assert "GridSample" not in ops and {"Gather", "Floor"} <= ops
    shapes = {i.name: i.shape for i in tracker.session.get_inputs()}
    s, step = SMALL.window_len, SMALL.window_len // 2
    assert shapes["video"] == [1, s, 3, *RESOLUTION]
    assert shapes["queries"] == [1, "num_points", 3]
    assert shapes["ind"] == []
    assert shapes["prev_coords"] == [1, s - step, "num_points", 2]
    assert shapes["support_3"] == [1, "num_points", 49, SMALL.latent_dim]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["window_len"] == str(s) and meta["model_resolution"] == "64,96"
    assert tracker.iters == ITERS


def test_onnx_runtime_tracks_as_track_online(model, tracker, clip):
    """Given queries on several frames (two join only in the third and fourth windows), with
    the support grid; then a grid on a later frame: other numbers of points than the
    export's example, so the points axis is dynamic."""
    queries = np.array([[0, 30.0, 20.0], [2, 100.0, 60.0], [7, 55.5, 41.2], [11, 8.0, 70.0],
                        [19, 60.0, 40.0]], np.float32)
    for kwargs in ({"queries": queries, "add_support_grid": True},
                   {"grid_size": 5, "grid_query_frame": 6}):
        want_tracks, want_visible = track_online(CoTrackerOnlinePredictor(model), iter(clip),
                                                 **kwargs)
        frames_seen: list[int] = []
        tracks, visible = tracker.track(iter(clip), on_frames=frames_seen.append, **kwargs)
        assert tracks.shape == want_tracks.shape and tracks.dtype == np.float32
        assert np.abs(tracks - want_tracks).max() < TOLERANCE_PX
        assert np.array_equal(visible, want_visible)
        assert sum(frames_seen) == len(clip)


def test_the_check_compares_probabilities_window_by_window(model, graph):
    check = compare_online_step(model, graph, threads=1)
    assert check["windows"] == 4 and check["judged_by"] == "pytorch"
    assert check["within_tolerance"] and check["max_position_diff_px"] < TOLERANCE_PX
    assert check["max_vis_diff"] < PROB_TOL and check["max_conf_diff"] < PROB_TOL
    assert check["visibility_agreement"] == 1.0


def test_beyond_the_tolerance_the_check_asks_float64(model, graph):
    # Within float32 rounding of the exact answer, as PyTorch is: passes on the float64 test
    # (a graph of other weights fails it: test_cli_fails_and_writes_nothing_...).
    check = compare_online_step(model, graph, tolerance_px=0.0, threads=1)
    assert check["judged_by"] == "float64" and check["within_tolerance"]
    assert check["float64"]["onnxruntime_error_px"] < TOLERANCE_PX


def test_the_runner_refuses_misuse(graph, tmp_path):
    tracker = OnnxOnlineTracker(graph)
    with pytest.raises(ValueError, match="reset"):
        tracker.step(np.zeros((4, 3, *RESOLUTION), np.float32))
    with pytest.raises(ValueError, match="queries or a grid_size"):
        tracker.track(iter([np.zeros((*FRAME, 3), np.uint8)]))
    with pytest.raises(ValueError, match="online model"):
        OnlineStep(CoTracker3(SMALL))


# -- the command -------------------------------------------------------------------------------

def _export(weights, out, *extra) -> int:
    return main(["export-onnx", "cotracker", "--checkpoint", str(weights), *RESOLUTION_ARGS,
                 "--out", str(out), *extra])


def test_cli_writes_the_graph_and_its_description(weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert _export(weights, out, "--json", "--quiet") == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in out.iterdir()) == ["cotracker_online_step.onnx",
                                                     "cotracker_onnx.json"]
    assert result["files"]["online_step"] == str(out / "cotracker_online_step.onnx")
    assert result["bytes"]["online_step"] == (out / "cotracker_online_step.onnx").stat().st_size
    check = result["check"]
    assert check["within_tolerance"] and check["max_position_diff_px"] < TOLERANCE_PX
    meta = json.loads((out / "cotracker_onnx.json").read_text())
    spec = meta["online_step"]
    assert [i["name"] for i in spec["inputs"]] == [
        "video", "queries", "ind", "prev_coords", "prev_vis", "prev_conf",
        "support_0", "support_1", "support_2", "support_3"]
    assert spec["outputs"][0]["shape"] == [1, SMALL.window_len, "num_points", 2]
    assert meta["window_len"] == SMALL.window_len and meta["model_resolution"] == [64, 96]
    # The graph written is one the runner takes.
    tracks, _ = OnnxOnlineTracker(out / "cotracker_online_step.onnx").track(
        iter(np.zeros((6, *FRAME, 3), np.uint8)), grid_size=2)
    assert tracks.shape == (6, 4, 2)


def test_cli_refuses_bad_input_in_one_line(weights, tmp_path, capsys, monkeypatch):
    offline = replace(SMALL, window_len=60)  # the released offline model's window
    offline_file = tmp_path / "offline.safetensors"
    save_file({k: v.contiguous() for k, v in CoTracker3(offline).state_dict().items()},
              str(offline_file))
    not_weights = tmp_path / "notes.safetensors"
    not_weights.write_text("not weights")
    out = tmp_path / "out"
    monkeypatch.setattr(pretrained, "has_shipped", lambda: False)  # no --checkpoint: refused
    cases = [
        (["--checkpoint", str(tmp_path / "missing.pth")], "checkpoint not found"),
        (["--checkpoint", str(not_weights)], "notes.safetensors"),
        (["--checkpoint", str(offline_file)], "needs the online model: scaled_online.pth"),
        ([], "ships no CoTracker3: export-onnx cotracker needs --checkpoint FILE"),
        (["--checkpoint", str(weights), "--quantize"], "--quantize is SAM's"),
        (["--checkpoint", str(weights), "--opset", "12"], "--opset 12 is not supported"),
    ]
    for args, message in cases:
        code = main(["export-onnx", "cotracker", *args, *RESOLUTION_ARGS, "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 2 and captured.out == "", args
        last = captured.err.strip().splitlines()[-1]
        assert last.startswith("attnvision export-onnx: error: ") and message in last, last
        assert not out.exists()
    code = main(["export-onnx", "--model-resolution", "64,96", "--out", str(out)])
    assert code == 2 and "--model-resolution is CoTracker's" in capsys.readouterr().err
    # Without --checkpoint, the shipped model where there is one (said on stderr).
    monkeypatch.setattr(pretrained, "has_shipped", lambda: True)
    monkeypatch.setattr(pretrained, "shipped_checkpoint", lambda: weights)
    code = main(["export-onnx", "cotracker", *RESOLUTION_ARGS, "--opset", "12", "--out",
                 str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"no --checkpoint: exporting the shipped cotracker_tiny ({weights})" in err
    assert not out.exists()


def test_cli_fails_and_writes_nothing_when_the_graph_does_not_reproduce_pytorch(
        weights, tmp_path, monkeypatch):
    export = cotracker_onnx.export_online_step

    def other_weights(model, path, **kwargs):
        torch.manual_seed(5)
        return export(CoTracker3(model.config).eval(), path, **kwargs)

    monkeypatch.setattr(cotracker_onnx, "export_online_step", other_weights)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="does not reproduce PyTorch"):  # exit 1
        _export(weights, out, "--quiet")
    assert list(out.iterdir()) == []


def test_the_runner_needs_no_torch(graph, tracker, clip, tmp_path):
    # An application that only tracks: torch cannot be imported at all, and the runner gives
    # the tracks it gives beside torch.
    np.save(tmp_path / "clip.npy", clip)
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from attnvision.cotracker.runtime import OnnxOnlineTracker\n"
            f"runner = OnnxOnlineTracker({str(graph)!r}, threads=1)\n"
            "tracks, visible = runner.track(iter(np.load('clip.npy')), grid_size=3)\n"
            "np.save('tracks.npy', tracks)\n"
            "np.save('visible.npy', visible)\n"
            "assert not any(name == 'torch' or name.startswith('torch.')\n"
            "               for name, m in sys.modules.items() if m is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    tracks, visible = tracker.track(iter(clip), grid_size=3)
    np.testing.assert_array_equal(np.load(tmp_path / "tracks.npy"), tracks)
    np.testing.assert_array_equal(np.load(tmp_path / "visible.npy"), visible)


def test_export_without_onnx_says_how_to_install(tmp_path):
    code = ("import sys\n"
            "sys.modules['onnx'] = None\n"
            "from dataclasses import replace\n"
            "from attnvision.cotracker import CoTracker3, CoTrackerConfig\n"
            "from attnvision.cotracker.onnx import export_online_step\n"
            "from attnvision.errors import UserError\n"
            "config = CoTrackerConfig(window_len=4, model_resolution=(32, 32), latent_dim=8,\n"
            "    corr_mlp_hidden=8, hidden_size=48, num_heads=1, time_depth=1, space_depth=1,\n"
            "    num_virtual_tracks=2, offline=False)\n"
            "try:\n"
            "    export_online_step(CoTracker3(config), 'never.onnx')\n"
            "except UserError as e:\n"
            "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install attnvision[onnx]" in done.stdout
    assert not list(tmp_path.iterdir())
