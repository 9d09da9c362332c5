"""`attnvision train cotracker`: the synthetic training data, the loss, the training step and
the command (a small model at 64 x 96, seconds)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cotracker_helpers import RESOLUTION, SMALL
from safetensors import safe_open
from torch.utils.data import default_collate

from attnvision.cli import main
from attnvision.cotracker import COTRACKER_CONFIGS, build_cotracker
from attnvision.cotracker.training import (
    CONFIDENCE_RADIUS,
    GAMMA,
    HUBER_DELTA,
    CoTrackerTrain,
    TrackPredictions,
    evaluate_tracking,
    loss_parts,
    plain_model,
    tracking_loss,
)
from attnvision.cotracker.training_data import (
    VALIDATION_FIRST_SEED,
    SyntheticTracks,
    ValidationClips,
)

FRAMES, POINTS = 8, 16


@pytest.fixture(scope="module")
def dataset() -> SyntheticTracks:
    return SyntheticTracks(2, RESOLUTION, FRAMES, POINTS, seed=0)


def test_examples_are_deterministic_and_hold_the_exact_tracks(dataset):
    inputs, targets = dataset[1]
    frames, queries = inputs["frames"], inputs["queries"]
    assert frames.shape == (FRAMES, 3, *RESOLUTION) and frames.dtype == torch.uint8
    assert queries.shape == (POINTS, 3)
    assert targets["tracks"].shape == (FRAMES, POINTS, 2)
    assert targets["visible"].shape == (FRAMES, POINTS)
    again_inputs, again_targets = dataset[1]
    assert torch.equal(queries, again_inputs["queries"])
    assert torch.equal(targets["tracks"], again_targets["tracks"])
    # The truth: the clip's own tracks of each query from its frame, visible there.
    clip = dataset.clip(1)
    assert np.array_equal(frames.permute(0, 2, 3, 1).numpy(), clip.frames)
    for t in torch.unique(queries[:, 0]).long().tolist():
        rows = (queries[:, 0] == t).nonzero()[:, 0]
        xy, visible = clip.track(queries[rows, 1:].numpy(), frame=t)
        assert np.array_equal(targets["tracks"][:, rows].numpy(), xy)
        assert np.array_equal(targets["visible"][:, rows].numpy(), visible)
        assert visible[t].all()
        assert np.allclose(xy[t], queries[rows, 1:].numpy(), atol=1e-4)
    # Points on objects and on the background; queries on frame 0 and later frames.
    owners = [clip.owner(queries[i:i + 1, 1:].numpy(), int(queries[i, 0]))[0]
              for i in range(POINTS)]
    assert 0 in owners and any(o > 0 for o in owners)
    assert (queries[:, 0] == 0).any() and (queries[:, 0] > 0).any()
    # Another epoch draws other points of the same clip.
    other = SyntheticTracks(2, RESOLUTION, FRAMES, POINTS, seed=0)
    other.set_epoch(2)
    assert torch.equal(other[1][0]["frames"], frames)
    assert not torch.equal(other[1][0]["queries"], queries)


def test_validation_clips_are_train_split_clips_no_run_trains_on():
    clips = ValidationClips(2, frames=5, size=32).clips()
    assert [c.seed for c in clips] == [VALIDATION_FIRST_SEED, VALIDATION_FIRST_SEED + 1]
    assert all(c.split == "train" for c in clips)
    assert clips[0].occlusion is not None and clips[1].occlusion is None


def test_loss_by_hand():
    # One batch entry, 2 frames, 2 points, 2 iterations.
    gt = torch.tensor([[[[0.0, 0.0], [10.0, 10.0]], [[0.0, 0.0], [10.0, 10.0]]]])
    visible = torch.tensor([[[True, False], [True, True]]])
    errors = [torch.tensor([20.0, 3.0]), torch.tensor([2.0, 1.0])]  # x, y error per iteration
    coords = torch.stack([gt + e for e in errors])  # (I=2, 1, 2, 2, 2)
    vis = torch.tensor([0.5, -1.0])[:, None, None, None].expand(2, 1, 2, 2)
    conf = torch.tensor([0.0, 2.0])[:, None, None, None].expand(2, 1, 2, 2)
    parts = loss_parts(TrackPredictions(coords, vis, conf), {"tracks": gt, "visible": visible})

    def huber(d: torch.Tensor) -> float:
        d = float(d)
        return 0.5 * d * d if abs(d) <= HUBER_DELTA else HUBER_DELTA * (abs(d) - HUBER_DELTA / 2)

    weights = [GAMMA, 1.0]  # the last iteration weighs most
    # Every pair has the same error in an iteration: the masked means are that error.
    visible_loss = sum(w * (huber(e[0]) + huber(e[1])) / 2 for w, e in
                       zip(weights, errors, strict=True)) / 2
    occluded_loss = sum(w * float(e.abs().mean()) for w, e in zip(weights, errors,
                                                                  strict=True)) / 2
    target = visible.float()
    vis_loss = sum(F.binary_cross_entropy(torch.sigmoid(v).expand(1, 2, 2), target)
                   for v in (torch.tensor(0.5), torch.tensor(-1.0))) / 2
    vis_loss = float(vis_loss)
    # Confidence: iteration 0 is 20.2 px off (not near), iteration 1 2.2 px (near), both
    # counted on the 3 visible pairs of 4.
    near = [float(e.norm()) <= CONFIDENCE_RADIUS for e in errors]
    assert near == [False, True]
    conf_loss = sum(3 / 4 * float(F.binary_cross_entropy(torch.sigmoid(torch.tensor(c)),
                                                         torch.tensor(float(n))))
                    for c, n in zip((0.0, 2.0), near, strict=True)) / 2
    assert float(parts["visible"]) == pytest.approx(0.05 * visible_loss, rel=1e-4)
    assert float(parts["occluded"]) == pytest.approx(0.01 * occluded_loss, rel=1e-4)
    assert float(parts["vis"]) == pytest.approx(vis_loss, rel=1e-4)
    assert float(parts["conf"]) == pytest.approx(conf_loss, rel=1e-4)
    total = tracking_loss(TrackPredictions(coords, vis, conf), {"tracks": gt, "visible": visible})
    assert float(total) == pytest.approx(sum(float(v) for v in parts.values()), rel=1e-5)


def test_the_step_is_the_offline_forward_and_a_few_steps_reduce_the_loss(dataset):
    torch.manual_seed(0)
    net = CoTrackerTrain(SMALL, iters=3)
    inputs, targets = default_collate([dataset[0], dataset[1]])
    pred = net(inputs)
    assert pred.coords.shape == (3, 2, FRAMES, POINTS, 2)
    assert pred.vis.shape == pred.conf.shape == (3, 2, FRAMES, POINTS)
    # The last iteration is the model's own offline forward with as many iterations.
    with torch.no_grad():
        coords, vis, conf = plain_model(net)(inputs["frames"], inputs["queries"], iters=3)
    torch.testing.assert_close(pred.coords[-1].detach(), coords, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pred.vis[-1].detach().sigmoid(), vis, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pred.conf[-1].detach().sigmoid(), conf, atol=1e-5, rtol=1e-4)

    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = tracking_loss(net(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in net.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.9 * losses[0], losses


def test_the_per_epoch_measure(dataset):
    net = CoTrackerTrain(SMALL).train()
    result = evaluate_tracking(net, ValidationClips(1, frames=FRAMES, size=48), points=8)
    assert 0 <= result["average_pts_within_thresh"] <= 1 and result["clips"] == 1
    assert "per_clip" not in result and net.training


@pytest.fixture
def small_tiny(monkeypatch):
    monkeypatch.setitem(COTRACKER_CONFIGS, "cotracker_tiny", SMALL)


def run_json(argv, capsys) -> tuple[int, dict]:
    code = main([*argv, "--json", "--quiet"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else {"stderr": captured.err})


def test_train_cotracker_then_resume_and_export(tmp_path, capsys, small_tiny, monkeypatch):
    import attnvision.cotracker.training as training

    out = tmp_path / "run"
    argv = ["train", "cotracker", "--clips", "2", "--points", "8", "--epochs", "2",
            "--eval-clips", "1", "--out", str(out)]
    # Interrupted during epoch 2's evaluation: epoch 1 is saved, epoch 2 is not.
    real, calls = training.evaluate_tracking, []

    def interrupt_second(module, clips, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(module, clips, **kwargs)

    monkeypatch.setattr(training, "evaluate_tracking", interrupt_second)
    assert main([*argv, "--quiet"]) == 130
    capsys.readouterr()
    info = json.loads((out / "model.json").read_text())
    assert info["epoch"] == 1 and info["best"]["epoch"] == 1
    monkeypatch.setattr(training, "evaluate_tracking", real)

    code = main([*argv, "--json"])  # resumes after epoch 1
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming" in captured.err and "after epoch 1/2" in captured.err
    result = json.loads(captured.out)
    assert result["epochs"] == 2 and len(result["history"]) == 2
    assert result["best"]["epoch"] in (1, 2) and set(result["files"]) == {"checkpoint", "best"}
    assert result["model_resolution"] == list(RESOLUTION)
    for key in ("checkpoint", "best"):  # official keys: the tracker builds from the file
        model = build_cotracker(result["files"][key], model_resolution=RESOLUTION)
        assert model.config.window_len == SMALL.window_len
    resumed = out

    exported = tmp_path / "cotracker_small.safetensors"
    code = main([*argv, "--quiet", "--export", str(exported)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and "best δ_avg" in lines[0]
    with safe_open(exported, "pt") as f:
        assert f.metadata()["model_resolution"] == f"{RESOLUTION[0]},{RESOLUTION[1]}"
        assert json.loads(f.metadata()["from"]) == "best.safetensors"
        assert f.get_tensor("corr_mlp.fc1.weight").dtype == torch.float16
    best = build_cotracker(resumed / "best.safetensors", model_resolution=RESOLUTION)
    half = build_cotracker(exported, model_resolution=RESOLUTION).state_dict()
    for key, value in best.state_dict().items():
        torch.testing.assert_close(half[key].float(), value, atol=1e-2, rtol=1e-2)

    # Another recipe on the same --out: one line, exit 2.
    code = main([*argv, "--points", "9"])
    assert code == 2 and "other CoTracker settings" in capsys.readouterr().err


def test_train_cotracker_from_init_with_bf16(tmp_path, capsys, small_tiny):
    init = tmp_path / "init.pt"
    torch.manual_seed(3)
    start = CoTrackerTrain(SMALL)
    torch.save(start.state_dict(), init)  # the official files' layout: a flat state dict
    code, result = run_json(["train", "cotracker", "--init", str(init), "--clips", "1",
                             "--points", "4", "--frames", "6", "--eval-clips", "0",
                             "--amp", "bf16", "--model-resolution", "64,96",
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 0, result
    assert result["best"] is None and set(result["files"]) == {"checkpoint"}
    assert result["init"] == str(init) and "6 frames" in result["data"]
    tuned = build_cotracker(result["files"]["checkpoint"], model_resolution=RESOLUTION)
    assert not torch.equal(tuned.corr_mlp.fc1.weight, start.corr_mlp.fc1.weight)


def test_eval_start_measures_the_starting_weights_at_the_runs_size_once(tmp_path, capsys,
                                                                      small_tiny):
    init = tmp_path / "init.pt"
    torch.manual_seed(4)
    start = CoTrackerTrain(SMALL)
    torch.save(start.state_dict(), init)
    out = tmp_path / "o"
    argv = ["train", "cotracker", "--init", str(init), "--clips", "1", "--points", "4",
            "--eval-clips", "1", "--eval-start", "--model-resolution", "64,96",
            "--out", str(out)]
    code, result = run_json(argv, capsys)
    assert code == 0, result
    # The same clip tracked by the untouched starting weights at the run's size.
    expected = evaluate_tracking(build_cotracker(init, model_resolution=(64, 96)),
                                 ValidationClips(1, frames=SMALL.window_len, size=256), points=64)
    saved = json.loads((out / "start.json").read_text())
    assert saved["model_resolution"] == [64, 96] and saved["weights"] == str(init)
    assert saved["start"]["average_pts_within_thresh"] == pytest.approx(
        expected["average_pts_within_thresh"], abs=1e-6)
    assert result["start"] == saved["start"]
    # Run again on the same folder (nothing left to train): read back, not tracked again.
    (out / "start.json").write_text(json.dumps({**saved, "start": {
        **saved["start"], "average_pts_within_thresh": 0.5}}))
    code, again = run_json(argv, capsys)
    assert code == 0 and again["start"]["average_pts_within_thresh"] == 0.5
    # --no-resume starts over: the starting weights are tracked again.
    code, fresh = run_json([*argv, "--no-resume"], capsys)
    key = "average_pts_within_thresh"
    assert code == 0 and fresh["start"][key] == pytest.approx(saved["start"][key], abs=1e-9)


@pytest.mark.parametrize("argv, message", [
    (["--frames", "1"], "--frames 1: give 2 or more"),
    (["--points", "0"], "--points must be >= 1"),
    (["--clips", "0"], "--clips must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--iters", "0"], "--iters must be >= 1"),
    (["--eval-clips", "-1"], "--eval-clips must be >= 0"),
    (["--eval-clips", "0", "--eval-start"], "--eval-start tracks the validation clips"),
    (["--model-resolution", "63,96"], "--model-resolution '63,96' is not H,W"),
    (["--first-clip", "999999", "--clips", "2"], "the validation clips"),
    (["--init", "missing.pt"], "not found"),
    (["--init", "junk.pt"], "not a CoTracker3 checkpoint"),
])
def test_train_cotracker_bad_input_exits_2(tmp_path, capsys, argv, message):
    torch.save({"something.weight": torch.ones(2)}, tmp_path / "junk.pt")
    argv = [a.replace("missing.pt", str(tmp_path / "missing.pt"))
            .replace("junk.pt", str(tmp_path / "junk.pt")) for a in argv]
    code = main(["train", "cotracker", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


WORKER = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from cotracker_helpers import SMALL
from attnvision.cotracker import COTRACKER_CONFIGS
COTRACKER_CONFIGS["cotracker_tiny"] = SMALL
from attnvision.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_cotracker_under_torchrun(tmp_path):
    """Two processes, one run: rank 0 writes, the steps are split between the ranks."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(tests=os.path.dirname(__file__)))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", str(worker), "train", "cotracker", "--clips", "4", "--points", "4",
           "--frames", "4", "--batch-size", "2", "--eval-clips", "0", "--out", str(out),
           "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "model.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2
    assert build_cotracker(out / "model.safetensors", model_resolution=RESOLUTION)
