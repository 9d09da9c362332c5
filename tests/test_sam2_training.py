"""SAM 2 training: the datasets, the per-step session (prompts, tracking with memory,
corrections, losses), and ``attnvision train sam2`` end to end on tiny data.

The model is ``sam2_tiny``'s config at 64 px (a 4x4 grid: seconds, not minutes). The
per-epoch measure comes from :mod:`attnvision.sam2.synthetic_eval`; the command tests put a
stand-in module in its place (fast, and independent of that module), and one test runs the
real one when it is installed.
"""

import json
import os
import subprocess
import sys
import types
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from torch.utils.data import default_collate

from attnvision.cli import main
from attnvision.commands.sam2_train import PARTS
from attnvision.data.davis import write_indexed_png
from attnvision.data.moving_scenes import make_clip
from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, build_sam2, sam2_from_config, save_sam2
from attnvision.sam2.tracking import MemoryBank, frame_features, track_step
from attnvision.sam2.training import (
    SAM2Train,
    correction_clicks,
    encode_frames,
    evaluate_tracking,
    normalised_frames,
)
from attnvision.sam2.training_data import (
    VALIDATION_FIRST_SEED,
    ClipAugment,
    DavisClips,
    HeldOutClips,
    SyntheticClips,
)
from attnvision.train.mask_losses import sam2_loss

NAME = "sam2_tiny"
S = 64
SMALL = replace(SAM2_CONFIGS[NAME], image_size=S)


def small_model(seed: int = 0):
    """A fresh 64 px sam2_tiny whose object score starts at "present", so masks and
    pointers are live from the first step (a random head says "absent" about half the time,
    and an absent object's pointer is the learned constant)."""
    torch.manual_seed(seed)
    model = sam2_from_config(SMALL)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)
    return model.train()


def batch_of(dataset, indices=(0, 1)):
    return default_collate([dataset[i][0] for i in indices])


@pytest.fixture(scope="module")
def clips():
    return batch_of(SyntheticClips(2, S, frames=4, first=7))


# --- the datasets ------------------------------------------------------------------------------


def test_synthetic_clips_hold_objects_visible_on_the_first_frame():
    data = SyntheticClips(3, S, frames=4, first=7, seed=1)
    inputs, valid = data[0]
    assert inputs["frames"].shape == (4, 3, S, S) and inputs["frames"].dtype == torch.uint8
    assert inputs["masks"].shape == (3, 4, S, S) and inputs["masks"].dtype == torch.bool
    assert torch.equal(valid, inputs["valid"]) and valid.any()
    assert inputs["masks"][valid, 0].flatten(1).any(1).all()  # each shows on frame 0
    assert not inputs["masks"][~valid].any()
    clip = make_clip(7, "train", size=S, frames=4, n_objects=(1, 3))
    assert torch.equal(inputs["frames"], torch.from_numpy(clip.frames).permute(0, 3, 1, 2))
    # Deterministic per (seed, epoch, index).
    again = SyntheticClips(3, S, frames=4, first=7, seed=1)[0][0]
    assert all(torch.equal(inputs[k], again[k]) for k in inputs)


def write_davis(root, sequences=(("ball", 3), ("cars", 11)), frames=6, size=(48, 80)):
    """A DAVIS folder: synthetic clips as JPEG frames and indexed PNG masks."""
    for name, seed in sequences:
        clip = make_clip(seed, "train", size=size, frames=frames, n_objects=(2, 3))
        (root / "JPEGImages" / name).mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(clip.frames[t]).save(root / "JPEGImages" / name / f"{t:05d}.jpg",
                                                 quality=95)
            write_indexed_png(root / "Annotations" / name / f"{t:05d}.png", clip.masks[t])
    return root


def test_davis_clips_are_windows_at_the_model_size(tmp_path):
    root = write_davis(tmp_path / "davis")
    (root / "Annotations" / "cars" / "00003.png").unlink()  # cars: runs of 3 and 2 frames
    data = DavisClips(root, S, frames=4, seed=0)
    assert len(data) == 1 and data.skipped == ["cars"]
    inputs, valid = data[0]
    assert inputs["frames"].shape == (4, 3, S, S) and inputs["masks"].shape == (3, 4, S, S)
    assert inputs["masks"][valid, 0].flatten(1).any(1).all()
    starts = set()
    for epoch in range(1, 9):
        data.set_epoch(epoch)
        first = data[0][0]
        again = data[0][0]  # the same draw within an epoch
        assert torch.equal(first["frames"], again["frames"])
        starts.add(first["frames"][0].float().mean().item())
    assert len(starts) > 1  # another window some epochs (3 windows in 6 frames)
    with pytest.raises(UserError, match=r"no sequence .* has 7 consecutive frames"):
        DavisClips(root, S, frames=7)
    with pytest.raises(UserError, match="annotations folder not found"):
        DavisClips(tmp_path / "nowhere", S)


def test_clip_augment_flips_every_frame_and_mask_together(clips):
    generator = torch.Generator().manual_seed(0)
    augment = ClipAugment(flip=1.0, grey=0.0, brightness=0.0, contrast=0.0)
    out = augment(clips, generator)
    assert torch.equal(out["masks"], clips["masks"].flip(-1))
    assert torch.equal(out["frames"], clips["frames"].flip(-1))


# --- the training step -------------------------------------------------------------------------


def grad_norm(module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_one_step_trains_memories_through_time_and_corrections_condition(clips):
    model = small_model()
    net = SAM2Train(model)
    assert net.state_dict().keys() == model.state_dict().keys()  # loads with build_sam2
    torch.manual_seed(0)
    episode = net.run(clips, kind="click", prompt_frames=[0], corrected_frames=[2])
    assert torch.isfinite(episode.loss)
    episode.loss.backward()
    # Later frames read earlier memories and pointers: the parts that only make memories
    # learn, through time.
    for part in ("memory_attention", "memory_encoder", "obj_ptr_proj",
                 "sam_mask_decoder.pred_obj_score_head", "image_encoder"):
        assert grad_norm(net.get_submodule(part)) > 0, part
    assert model.maskmem_tpos_enc.grad.abs().sum() > 0
    # Every parameter has a gradient (zero for unused ones): DDP waits for all of them.
    assert all(p.grad is not None for p in net.parameters())
    # The corrected frame: tracked, clicked, and from then on a conditioning frame.
    assert episode.order == [0, 1, 2, 3]
    assert sorted(episode.bank.conditioning) == [0, 2]
    assert sorted(episode.bank.tracked) == [1, 3]
    record = episode.frames[2]
    assert record.kind == "corrected" and record.conditioning and record.answers == 2
    assert record.points.shape == (len(record.iou), 1, 2)
    assert [episode.frames[t].kind for t in (0, 1, 3)] == ["click", "tracked", "tracked"]
    assert net.last["corrected_frames"] == [2] and net.last["objects"] == len(record.iou)


def test_the_step_is_the_video_predictors_path(clips):
    """Without corrections, the step's answers are track_step's, frame after frame (in eval
    mode: in training the memory attention's dropout draws differ between two runs)."""
    model = small_model()
    net = SAM2Train(model).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        episode = net.run(clips, kind="click", prompt_frames=[0], corrected_frames=[])
        b_idx, _ = clips["valid"].nonzero(as_tuple=True)
        images = normalised_frames(clips["frames"].flatten(0, 1))
        features = frame_features(model, images)
        ours = encode_frames(model, images)
        assert torch.equal(ours.vision, features.vision)
        bank = MemoryBank()
        for t in range(4):
            rows = b_idx * 4 + t
            f = replace(features, vision=features.vision[rows], pos=features.pos[:1])
            if t == 0:
                points = episode.frames[0].points
                labels = torch.ones(points.shape[:2], dtype=torch.long)
                out = track_step(model, 0, f, bank, points=(points, labels),
                                 is_init_cond_frame=True, num_frames=4)
            else:
                out = track_step(model, t, f, bank, num_frames=4)
            bank.add(t, out.memory, conditioning=t == 0)
            torch.testing.assert_close(out.object_score_logits.view(-1),
                                       episode.frames[t].object_score)
            torch.testing.assert_close(out.memory.maskmem, episode.bank.conditioning.get(
                t, episode.bank.tracked.get(t)).maskmem)


def test_an_object_absent_everywhere_learns_only_its_object_score():
    model = small_model()
    net = SAM2Train(model)
    frames = torch.randint(0, 256, (1, 4, 3, S, S), dtype=torch.uint8)
    inputs = {"frames": frames, "masks": torch.zeros(1, 3, 4, S, S, dtype=torch.bool),
              "valid": torch.tensor([[True, False, False]])}
    episode = net.run(inputs, kind="mask", prompt_frames=[0], corrected_frames=[])
    # Frame 0's mask prompt is the answer itself (no loss); frames 1-3: BCE(score, absent)
    # = softplus(score), nothing else.
    assert episode.frames[0].answers == 0 and episode.frames[0].loss == 0
    expected = sum(F.softplus(episode.frames[t].object_score).sum() for t in (1, 2, 3))
    torch.testing.assert_close(episode.loss.detach(), expected)
    assert episode.parts["focal"] == episode.parts["dice"] == episode.parts["iou_l1"] == 0
    assert episode.parts["object"] == pytest.approx(float(expected), rel=1e-5)


def test_sam2_loss_by_hand():
    # 2x2 masks, logits 0 everywhere: p = 1/2, nothing predicted (logit > 0 is the mask).
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # one pixel of four
    logits, iou_pred, score = torch.zeros(1, 1, 2, 2), torch.tensor([[0.25]]), torch.tensor([[1.5]])
    loss, parts = sam2_loss(logits, iou_pred, score, target, torch.tensor([True]))
    ln2 = np.log(2)
    focal = (0.25 * 0.25 * ln2 + 3 * 0.75 * 0.25 * ln2) / 4  # α_t (1 - p_t)² (-log p_t)
    dice = 1 - (2 * 0.5 + 1) / (2.0 + 1 + 1)
    iou_l1 = 0.25  # the predicted 0.25 against an actual IoU of 0
    bce = np.log1p(np.exp(-1.5))  # present, score 1.5
    assert float(parts["focal"][0]) == pytest.approx(focal, rel=1e-6)
    assert float(parts["dice"][0]) == pytest.approx(dice, rel=1e-6)
    assert float(loss[0]) == pytest.approx(20 * focal + dice + iou_l1 + bce, rel=1e-6)
    # The object absent: only the object score counts, against "absent".
    loss, _ = sam2_loss(logits, iou_pred, score, target * 0, torch.tensor([False]))
    assert float(loss[0]) == pytest.approx(np.log1p(np.exp(1.5)), rel=1e-6)
    # Three candidates: the best one's mask loss, every candidate's IoU error.
    three = torch.stack([torch.full((2, 2), -20.0), torch.tensor([[20.0, -20.0], [-20.0, -20.0]]),
                         torch.zeros(2, 2)])[None]
    loss, parts = sam2_loss(three, torch.tensor([[0.0, 1.0, 0.5]]), score, target,
                            torch.tensor([True]))
    assert int(parts["best"][0]) == 1
    assert float(parts["iou_l1"][0]) == pytest.approx((0 + 0 + 0.5) / 3)


def test_correction_clicks_point_at_errors():
    target = torch.zeros(3, 8, 8, dtype=torch.bool)
    target[0, 2:4, 2:4] = True  # missed entirely: a positive click on it
    predicted = torch.zeros_like(target)
    predicted[1, 5:7, 5:7] = True  # spilled where nothing is: a negative click there
    # Row 2: absent and nothing predicted: a negative click anywhere.
    points, labels = correction_clicks(predicted, target)
    assert labels.tolist() == [1, 0, 0]
    x, y = points[0].long()
    assert target[0, y, x]
    x, y = points[1].long()
    assert predicted[1, y, x]


def test_a_few_steps_on_one_clip_reduce_its_loss(clips):
    net = SAM2Train(small_model(), corrected_frames=1)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-4)
    one = {k: v[:1] for k, v in clips.items()}

    def loss() -> torch.Tensor:
        torch.manual_seed(0)  # the same click and correction frames every time
        return net.run(one, kind="click", prompt_frames=[0]).loss

    with torch.no_grad():
        before = float(loss())
    for _ in range(6):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.8 * before, (before, after)


# --- the command -------------------------------------------------------------------------------


def fake_synthetic_eval(calls: list):
    """Stands in for attnvision.sam2.synthetic_eval: real held-out clips, a made-up J&F that
    improves every call (so every epoch is the best so far)."""
    module = types.ModuleType("attnvision.sam2.synthetic_eval")

    def held_out_clips(count=50, frames=24, size=256, first_seed=0, split="test"):
        # Epochs are chosen on unseen train-split clips, never on the test split's.
        assert split == "train" and first_seed == VALIDATION_FIRST_SEED
        return [make_clip(first_seed + i, split, size=size, frames=frames)
                for i in range(count)]

    def evaluate_clips(model, clips, prompt="click", memory=True, progress=False):
        assert not model.training and prompt == "click" and memory
        assert all(c.frames.shape[1] == model.image_size for c in clips)
        calls.append(len(clips))
        jf = 0.1 * len(calls)
        return {"jf": jf, "j": jf, "f": jf, "objects": sum(len(c.objects) for c in clips)}

    module.held_out_clips, module.evaluate_clips = held_out_clips, evaluate_clips
    return module


def test_the_per_epoch_measure_runs_in_eval_mode_and_restores_training(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "attnvision.sam2.synthetic_eval",
                        fake_synthetic_eval(calls))
    net = SAM2Train(small_model()).train()
    net.image_encoder.eval()  # a part held in eval mode stays so
    held_out = HeldOutClips(2, 5, S)
    result = evaluate_tracking(net, held_out)
    assert calls == [2] and result["jf"] == pytest.approx(0.1)
    assert net.training and net.sam2.training and net.memory_attention.training
    assert not net.image_encoder.training
    assert held_out.clips() is held_out.clips()  # made once


@pytest.fixture
def small_sam2_tiny(monkeypatch):
    """sam2_tiny at 64 px under its own name, and the stand-in per-epoch measure."""
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)
    calls: list = []
    monkeypatch.setitem(sys.modules, "attnvision.sam2.synthetic_eval",
                        fake_synthetic_eval(calls))
    return calls


def run_json(argv, capsys) -> tuple[int, dict]:
    code = main([*argv, "--json", "--quiet"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else {"stderr": captured.err})


def test_train_sam2_from_the_shipped_sam_then_resume(tmp_path, capsys, small_sam2_tiny):
    out = tmp_path / "run"
    argv = ["train", "sam2", "--clips", "2", "--frames", "3", "--epochs", "2",
            "--batch-size", "2", "--eval-clips", "1", "--eval-frames", "5", "--out", str(out)]
    # Interrupted during epoch 2's evaluation: epoch 1 is saved, epoch 2 is not.
    real = sys.modules["attnvision.sam2.synthetic_eval"].evaluate_clips

    def interrupt_second(model, clips, **kwargs):
        if len(small_sam2_tiny) == 1:
            raise KeyboardInterrupt
        return real(model, clips, **kwargs)

    sys.modules["attnvision.sam2.synthetic_eval"].evaluate_clips = interrupt_second
    assert main([*argv, "--quiet"]) == 130
    capsys.readouterr()
    info = json.loads((out / "model.json").read_text())
    assert info["epoch"] == 1 and info["best"]["epoch"] == 1
    sys.modules["attnvision.sam2.synthetic_eval"].evaluate_clips = real

    code = main([*argv, "--json"])  # resumes after epoch 1
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming" in captured.err and "after epoch 1/2" in captured.err
    result = json.loads(captured.out)
    assert result["model"] == NAME and result["epochs"] == 2 and len(result["history"]) == 2
    assert result["best"] == {"epoch": 2, "jf": pytest.approx(0.2)}
    assert "shipped sam_tiny" in result["init"] and result["frozen"] == []
    for key in ("checkpoint", "best"):
        model = build_sam2(None, result["files"][key])  # self-describing files
        assert model.size_name == NAME and model.image_size == S
    with safe_open(result["files"]["best"], "pt") as f:
        extra = json.loads(f.metadata()["extra"])
    assert extra["epoch"] == 2

    # Run again: nothing left to train; the files are rewritten, the lines a person reads.
    assert main([*argv, "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "best J&F 0.200 (epoch 2)" in lines[0] and lines[-1].endswith("best.safetensors")

    # --export: the best epoch in float16 (how the shipped model is written), same weights.
    shipped = tmp_path / "sam2_tiny.safetensors"
    assert main([*argv, "--quiet", "--export", str(shipped)]) == 0
    capsys.readouterr()
    with safe_open(shipped, "pt") as f:
        assert json.loads(f.metadata()["extra"])["from"] == "best.safetensors"
        assert f.get_tensor("memory_attention.norm.weight").dtype == torch.float16
    best = build_sam2(None, result["files"]["best"]).state_dict()
    for key, value in build_sam2(None, shipped).state_dict().items():
        torch.testing.assert_close(value, best[key], atol=1e-3, rtol=1e-3)

    # Another recipe on the same --out: one line, exit 2.
    code = main([*argv[:5], "4", *argv[6:]])  # --frames 4
    assert code == 2 and "other SAM 2 settings" in capsys.readouterr().err


def test_fine_tune_an_official_style_checkpoint_on_a_davis_folder(tmp_path, capsys,
                                                                   small_sam2_tiny):
    root = write_davis(tmp_path / "davis")
    init = tmp_path / "sam2_small.pt"
    start = small_model(seed=3)
    torch.save({"model": start.state_dict()}, init)  # the official files' layout
    out = tmp_path / "tuned"
    code, result = run_json(["train", "sam2", "--annotations", str(root), "--init", str(init),
                             "--freeze", "image_encoder", "--frames", "4", "--epochs", "1",
                             "--batch-size", "2", "--eval-clips", "0", "--amp", "bf16",
                             "--out", str(out)],
                            capsys)
    assert code == 0, result
    assert result["frozen"] == ["image_encoder"] and result["best"] is None
    assert result["data"].startswith("2 sequences (12 frames)")
    assert set(result["files"]) == {"checkpoint"}
    tuned = build_sam2(None, result["files"]["checkpoint"])
    for part, same in (("image_encoder", True), ("memory_attention", False)):
        a, b = getattr(tuned, part).state_dict(), getattr(start, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a) is same, part


def test_grow_a_trained_sam2_tiny_by_the_pixel_stem_and_train_the_stem(tmp_path, capsys,
                                                                       small_sam2_tiny,
                                                                       monkeypatch):
    monkeypatch.setitem(SAM2_CONFIGS, "sam2_tiny_hr",
                        replace(SMALL, pixel_stem=True, use_high_res_features_in_sam=True))
    start = small_model(seed=4)
    init = save_sam2(start, tmp_path / "sam2_tiny.safetensors", NAME)
    code, result = run_json(["train", "sam2", "--model", "sam2_tiny_hr", "--init", str(init),
                             "--freeze", "image_encoder.trunk", "--lr-scale",
                             "image_encoder.stem=10,sam_mask_decoder.conv_s0=10",
                             "--clips", "2", "--frames", "3",
                             "--epochs", "1", "--batch-size", "2", "--eval-clips", "1",
                             "--eval-frames", "5", "--out", str(tmp_path / "hr")], capsys)
    assert code == 0, result
    assert result["model"] == "sam2_tiny_hr" and "grown by the pixel stem" in result["init"]
    assert result["frozen"] == ["image_encoder.trunk"]
    # The fresh parts trained at ten times the rate of the rest, all the way down the schedule.
    state = torch.load(tmp_path / "hr" / "train_state.pt", weights_only=True)
    rates = sorted({g["initial_lr"] for g in state["optimizer"]["param_groups"]})
    assert rates == [pytest.approx(1e-4), pytest.approx(1e-3)]
    assert state["config"]["lr_scale"] == (("image_encoder.stem", 10.0),
                                           ("sam_mask_decoder.conv_s0", 10.0))
    grown = build_sam2(None, result["files"]["checkpoint"])
    assert grown.size_name == "sam2_tiny_hr"
    before = start.state_dict()
    after = grown.state_dict()
    trunk = [k for k in after if k.startswith("image_encoder.trunk.")]
    assert trunk and all(torch.equal(after[k], before[k]) for k in trunk)
    # The projections started at zero and opened; the fresh stem learnt through them.
    assert after["sam_mask_decoder.conv_s0.weight"].abs().sum() > 0
    assert not torch.equal(after["sam_mask_decoder.conv_s1.weight"],
                           torch.zeros_like(after["sam_mask_decoder.conv_s1.weight"]))
    # --model naming a config the file is not, nor grows into: one line, exit 2.
    code, result = run_json(["train", "sam2", "--model", "sam2.1_hiera_tiny", "--init",
                             str(init), "--clips", "2", "--frames", "3", "--epochs", "1",
                             "--out", str(tmp_path / "other")], capsys)
    assert code == 2 and "not sam2.1_hiera_tiny" in result["stderr"]


def test_train_sam2_with_the_real_held_out_measure(tmp_path, capsys, monkeypatch):
    pytest.importorskip("attnvision.sam2.synthetic_eval")
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)
    code, result = run_json(["train", "sam2", "--clips", "2", "--frames", "3", "--epochs", "1",
                             "--batch-size", "2", "--eval-clips", "2", "--eval-frames", "5",
                             "--out", str(tmp_path / "o")], capsys)
    assert code == 0, result
    assert 0 <= result["eval"]["jf"] <= 1 and result["best"]["epoch"] == 1
    assert result["eval"]["clips"] == 2 and "per_clip" not in result["eval"]


@pytest.mark.parametrize("argv, message", [
    (["--annotations", "nowhere"], "annotations folder not found"),
    (["--frames", "1"], "--frames 1: give 2 or more"),
    (["--freeze", "image_encoder,decoder"], "unknown part 'decoder'"),
    (["--freeze", ",".join(PARTS)], "leaves only the learned embeddings"),
    (["--annotations", "nowhere", "--clips", "3"], "--clips counts synthetic clips"),
    (["--init", "SAM1"], "is a SAM (v1) checkpoint"),
    (["--init", "missing.pt"], "checkpoint not found"),
    (["--model", "sam3"], "unknown SAM 2 model 'sam3'"),
    (["--epochs", "0"], "must be >= 1"),
    (["--eval-frames", "4"], "--eval-frames 4: give 5 or more"),
    (["--first-clip", "999999", "--clips", "2"], "the validation clips"),
    (["--lr-scale", "memory_attention=fast"], "give PART=FACTOR with a factor > 0"),
    (["--lr-scale", "memory_attention=0"], "give PART=FACTOR with a factor > 0"),
    (["--lr-scale", "memory_attention=2,memory_attention=3"], "names 'memory_attention' twice"),
])
def test_train_sam2_bad_input_exits_2(tmp_path, capsys, argv, message):
    if "SAM1" in argv:  # a SAM (v1) state dict: SAM's encoder keys, no trunk
        torch.save({"image_encoder.blocks.0.norm1.weight": torch.ones(2)}, tmp_path / "sam.pt")
        argv = [a.replace("SAM1", str(tmp_path / "sam.pt")) for a in argv]
    argv = [a.replace("missing.pt", str(tmp_path / "missing.pt")) for a in argv]
    code = main(["train", "sam2", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--lr-scale", "decoder=2"], "the model has no part 'decoder'"),
    (["--freeze", "memory_attention", "--lr-scale", "memory_attention=2"], "is frozen"),
])
def test_train_sam2_lr_scale_names_a_trained_part(tmp_path, capsys, small_sam2_tiny, argv,
                                                  message):
    # Checked once the model is built (after its one line saying which): exit 2, nothing written.
    code = main(["train", "sam2", "--out", str(tmp_path / "o"), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in lines[-1] and sum("error" in x for x in lines) == 1, lines
    assert not (tmp_path / "o").exists()


WORKER = """
import sys, types
from dataclasses import replace
import torch
torch.set_num_threads(1)
from attnvision.sam2 import SAM2_CONFIGS
SAM2_CONFIGS["sam2_tiny"] = replace(SAM2_CONFIGS["sam2_tiny"], image_size=64)
from attnvision.cli import main
from attnvision.commands.sam2_train import PARTS
sys.exit(main(sys.argv[1:]))
"""


def test_train_sam2_under_torchrun(tmp_path):
    """Two processes, one run: every parameter reduced on every step (DDP waits for all, also
    those a step's prompts leave unused), rank 0 writes."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--standalone", str(worker), "train", "sam2", "--clips", "4", "--frames", "3",
           "--epochs", "1", "--batch-size", "2", "--eval-clips", "0", "--out", str(out),
           "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "model.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 2
    assert build_sam2(None, out / "model.safetensors", config=SMALL).image_size == S
