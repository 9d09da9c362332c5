"""``attnvision track`` and ``attnvision eval track --synthetic``: a small random-weight
CoTracker3 on a short synthetic clip, every output file read back, every bad input refused in
one line with nothing written. ``--mask X,Y`` (a click segmented into the mask) runs small
random-weight SAM and SAM 2 files, whose masks the tests recompute, and the shipped sam_tiny,
whose mask must be the clicked object."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cotracker_helpers import RESOLUTION, RESOLUTION_ARGS, small_cotracker_weights
from PIL import Image
from sam2_helpers import NAME as SAM2_NAME
from sam2_helpers import SMALL as SAM2_SMALL
from sam2_helpers import small_sam2_weights
from sam_helpers import small_sam_checkpoint

from attnvision.cli import main
from attnvision.commands.track import MASK_GRID, click_mask, grid_queries
from attnvision.cotracker import (
    CoTrackerOnlinePredictor,
    CoTrackerPredictor,
    build_cotracker,
)
from attnvision.cotracker.predictor import video_tensor
from attnvision.data.moving_scenes import make_clip
from attnvision.sam import SamPredictor, build_sam
from attnvision.sam2 import SAM2_CONFIGS, SAM2ImagePredictor, build_sam2
from attnvision.viz.overlays import PALETTE
from attnvision.viz.tracks import track_colours, trajectories_picture

T, H, W = 10, 48, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return small_cotracker_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


@pytest.fixture(scope="module")
def clip():
    return make_clip(0, "test", size=(H, W), frames=T)


@pytest.fixture(scope="module")
def files(tmp_path_factory, clip):
    """The clip as an mp4 and as a folder of PNGs; frame 0's objects as a mask; bad masks."""
    pytest.importorskip("av")
    from attnvision.data.video import write_video

    root = tmp_path_factory.mktemp("clips")
    mp4 = write_video(root / "clip.mp4", clip.frames, quality=10)
    folder = root / "frames"
    folder.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    assert (clip.masks[0] > 0).sum() > 100
    Image.fromarray(((clip.masks[0] > 0) * 255).astype(np.uint8)).save(root / "mask.png")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "empty.png")
    Image.fromarray(np.full((H + 2, W), 255, np.uint8)).save(root / "other_size.png")
    speck = np.zeros((H, W), np.uint8)
    speck[0, 0] = 1  # one corner pixel: no grid point falls on it
    Image.fromarray(speck).save(root / "speck.png")
    (root / "corrupt.safetensors").write_bytes(b"not weights")
    return {"mp4": mp4, "folder": folder, "mask": root / "mask.png",
            "empty": root / "empty.png", "other_size": root / "other_size.png",
            "speck": root / "speck.png", "corrupt": root / "corrupt.safetensors",
            "root": root}


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    """A small random-weight SAM in our format."""
    return small_sam_checkpoint(tmp_path_factory.mktemp("sam") / "small_sam.safetensors")


@pytest.fixture(scope="module")
def sam2_file(tmp_path_factory):
    """A small random-weight SAM 2, saved under the tiny name (see sam2_helpers)."""
    return small_sam2_weights(tmp_path_factory.mktemp("sam2") / "small_sam2.safetensors")


@pytest.fixture(autouse=True)
def small_sam2_config(monkeypatch):
    monkeypatch.setitem(SAM2_CONFIGS, SAM2_NAME, SAM2_SMALL)


# The clip's large object on frame 0 (id 4, about 490 pixels at the left) and a pixel of it.
OBJECT, CLICK = 4, (8, 16)


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def track(capsys, video, weights, out, *args):
    code, stdout, err = run(capsys, "track", video, "--checkpoint", weights, *RESOLUTION_ARGS,
                            *args, "--out", out, "--json", "--quiet")
    assert code == 0, err
    return json.loads(stdout)


def read_outputs(result, frames=T):
    """Every file of a run, each checked against tracks.npz; returns the npz arrays."""
    import av

    files = result["files"]
    out = Path(files["tracks"]).parent
    clicked = result["mask"] is not None and result["mask"]["click"] is not None
    assert set(files) == {"tracks", "tracks_json", "tracks_csv", "overlay", "trajectories",
                          *(["mask"] if clicked else [])}
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in files.values())
    with np.load(files["tracks"]) as npz:
        tracks, visible, queries = npz["tracks"], npz["visibility"], npz["queries"]
    n = result["points"]
    assert tracks.shape == (frames, n, 2) and tracks.dtype == np.float32
    assert visible.shape == (frames, n) and visible.dtype == bool
    assert queries.shape == (n, 3) and queries.dtype == np.float32
    assert np.isfinite(tracks).all()

    doc = json.loads(Path(files["tracks_json"]).read_text())
    assert (doc["frames"], doc["size"], len(doc["tracks"])) == (frames, [W, H], n)
    for i, entry in enumerate(doc["tracks"]):
        assert entry["id"] == i
        q = entry["query"]
        np.testing.assert_allclose([q["frame"], q["x"], q["y"]], queries[i], atol=1e-3)
        assert [f["frame"] for f in entry["frames"]] == list(range(frames))
        np.testing.assert_allclose([[f["x"], f["y"]] for f in entry["frames"]], tracks[:, i],
                                   atol=1e-3)
        assert [f["visible"] for f in entry["frames"]] == visible[:, i].tolist()

    with open(files["tracks_csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["track", "frame", "x", "y", "visible"]
    assert len(rows) == frames * n
    table = np.array([[float(r[k]) for k in ("track", "frame", "x", "y", "visible")]
                      for r in rows])
    i, t = table[:, 0].astype(int), table[:, 1].astype(int)
    np.testing.assert_allclose(table[:, 2:4], tracks[t, i], atol=1e-3)
    assert np.array_equal(table[:, 4].astype(bool), visible[t, i])

    with av.open(files["overlay"]) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == frames and decoded[0].shape == (H, W, 3)
    with Image.open(files["trajectories"]) as picture:
        assert picture.mode == "RGB" and picture.size == (W, H)
    assert result["frames"] == frames and result["size"] == [W, H]
    assert result["seconds"] >= 0 and result["command"] == "track"
    return tracks, visible, queries


@pytest.mark.parametrize("kind", ["mp4", "folder"])
def test_grid_writes_every_file(files, weights, tmp_path, capsys, kind):
    result = track(capsys, files[kind], weights, tmp_path / "out", "--grid", "3")
    assert result["points"] == 9 and result["queries_from"] == "grid"
    assert result["video"] == str(files[kind]) and not result["online"]
    assert result["visible_threshold"] == 0.9  # a file without its own cut: the official one
    tracks, _, queries = read_outputs(result)
    assert (queries[:, 0] == 0).all()
    # The reported queries are the predictor's own grid: each track starts at its query.
    np.testing.assert_allclose(tracks[0], queries[:, 1:], atol=1e-3)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_grid_on_a_later_frame_tracked_backwards(files, weights, tmp_path, capsys):
    result = track(capsys, files["folder"], weights, tmp_path / "out", "--grid", "2",
                   "--grid-query-frame", "4", "--backward")
    tracks, visible, queries = read_outputs(result)
    assert result["backward"] and (queries[:, 0] == 4).all()
    np.testing.assert_allclose(tracks[4], queries[:, 1:], atol=1e-3)
    assert visible[4].all()


def test_points_start_where_they_are_given(files, weights, tmp_path, capsys):
    result = track(capsys, files["mp4"], weights, tmp_path / "out", "--point", "0,10,12",
                   "--point", "3,30.5,20", "--point", "9,63,47")
    tracks, visible, queries = read_outputs(result)
    assert result["points"] == 3 and result["queries_from"] == "points"
    np.testing.assert_array_equal(queries, [[0, 10, 12], [3, 30.5, 20], [9, 63, 47]])
    for i, (t, x, y) in enumerate(queries.astype(float)):
        np.testing.assert_allclose(tracks[int(t), i], [x, y], atol=1e-3)
        assert visible[int(t), i]


def test_mask_keeps_the_predictors_masked_grid(files, weights, tmp_path, capsys, clip):
    result = track(capsys, files["folder"], weights, tmp_path / "out", "--mask", files["mask"])
    tracks, _, queries = read_outputs(result)
    assert result["queries_from"] == "mask" and 0 < result["points"] < MASK_GRID ** 2
    mask = clip.masks[0] > 0
    inside = mask[queries[:, 2].round().astype(int), queries[:, 1].round().astype(int)]
    assert inside.mean() > 0.9  # read at the model's resolution: the rim may differ
    np.testing.assert_allclose(tracks[0], queries[:, 1:], atol=1e-3)
    # The same points as the official predictor's segm_mask grid picks.
    predictor = CoTrackerPredictor(build_cotracker(weights, model_resolution=RESOLUTION))
    official, _ = predictor(video_tensor(clip.frames), grid_size=MASK_GRID,
                            segm_mask=torch.from_numpy(mask)[None, None])
    np.testing.assert_allclose(official[0, 0].numpy(), queries[:, 1:], atol=1e-3)
    np.testing.assert_allclose(
        grid_queries(MASK_GRID, 0, (H, W), RESOLUTION, mask), queries, atol=1e-6)


def read_mask_png(path):
    with Image.open(path) as picture:
        assert picture.mode == "L" and picture.size == (W, H)
        pixels = np.asarray(picture)
    assert set(np.unique(pixels)) <= {0, 255}
    return pixels > 0


@pytest.mark.parametrize(("family", "online"), [("SAM", False), ("SAM 2", False),
                                                ("SAM 2", True)])
def test_click_segments_its_frame_and_tracks_the_grid_inside(
        files, weights, sam_file, sam2_file, tmp_path, capsys, clip, monkeypatch, family,
        online):
    """The click on frame 2 is segmented by the given model on that frame, the best of its
    three masks kept, written as mask.png and reported; the tracked points are the masked
    grid of that mask. A 10 x 10 grid keeps it fast (the random masks cover about half the
    frame: 800 points of the 30 x 30 grid); the full grid is the shipped-SAM test's."""
    grid = 10
    monkeypatch.setattr("attnvision.commands.track.MASK_GRID", grid)
    option, path = (("--sam-checkpoint", sam_file) if family == "SAM"
                    else ("--sam2-checkpoint", sam2_file))
    x, y = 40, 30
    result = track(capsys, files["folder"], weights, tmp_path / "out", "--mask", f"{x},{y}",
                   "--grid-query-frame", "2", option, path,
                   *(["--online"] if online else []))
    tracks, _, queries = read_outputs(result)

    predictor = (SamPredictor(build_sam(None, sam_file)) if family == "SAM"
                 else SAM2ImagePredictor(build_sam2(None, sam2_file)))
    predictor.set_image(clip.frames[2])
    masks, scores, _ = predictor.predict(point_coords=np.array([[x, y]], float),
                                         point_labels=np.array([1]), multimask_output=True)
    want = masks[int(np.argmax(scores))] > 0
    # Random weights: a real part of the frame, so that "inside" means something.
    assert 0 < want.sum() < 0.9 * H * W

    mask = read_mask_png(result["files"]["mask"])
    assert np.array_equal(mask, want)
    np.testing.assert_allclose(queries, grid_queries(grid, 2, (H, W), RESOLUTION, want),
                               atol=1e-6)
    assert (queries[:, 0] == 2).all() and 0 < result["points"] < grid ** 2
    if not online:
        np.testing.assert_allclose(tracks[2], queries[:, 1:], atol=1e-3)
    info = result["mask"]
    assert set(info) == {"file", "frame", "click", "model", "family", "weights", "score",
                         "area", "bbox"}
    assert info["file"] == str(tmp_path / "out" / "mask.png")
    assert (info["frame"], info["click"], info["family"]) == (2, [x, y], family)
    assert info["model"] == ("vit_b" if family == "SAM" else SAM2_NAME)
    assert info["weights"] == str(path)
    assert info["score"] == pytest.approx(float(scores.max()), abs=1e-5)
    assert info["area"] == int(want.sum())
    ys, xs = np.nonzero(want)
    assert info["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                            ys.max() - ys.min() + 1]
    assert result["queries_from"] == "mask" and result["online"] == online
    assert json.loads(json.dumps(result)) == result


def test_click_with_the_shipped_sam_masks_the_clicked_object(files, weights, tmp_path, capsys,
                                                             clip):
    """No segmenting model given: the shipped sam_tiny (said on stderr) masks the object
    under the click, and only points on it are tracked."""
    code, stdout, err = run(capsys, "track", files["mp4"], "--checkpoint", weights,
                            *RESOLUTION_ARGS, "--mask", f"{CLICK[0]},{CLICK[1]}",
                            "--out", tmp_path / "out", "--json", "--quiet")
    assert code == 0, err
    assert "shipped sam_tiny" in err
    result = json.loads(stdout)
    _, _, queries = read_outputs(result)
    info = result["mask"]
    assert (info["model"], info["family"], info["click"]) == ("sam_tiny", "SAM", list(CLICK))
    assert info["weights"].endswith("sam_tiny.safetensors")
    mask = read_mask_png(result["files"]["mask"])
    assert mask[CLICK[1], CLICK[0]]
    target = clip.masks[0] == OBJECT
    assert (mask & target).sum() / (mask | target).sum() > 0.8
    assert info["area"] == mask.sum()
    on_object = target[queries[:, 2].round().astype(int), queries[:, 1].round().astype(int)]
    assert len(queries) > 20 and on_object.mean() > 0.9
    # Every point is in the written mask (read at the model's resolution: the rim may differ).
    inside = mask[queries[:, 2].round().astype(int), queries[:, 1].round().astype(int)]
    assert inside.mean() > 0.9


def test_a_png_mask_is_reported_and_not_copied(files, weights, tmp_path, capsys, clip):
    result = track(capsys, files["folder"], weights, tmp_path / "out", "--mask", files["mask"],
                   "--grid-query-frame", "1")
    read_outputs(result)
    mask = clip.masks[0] > 0
    ys, xs = np.nonzero(mask)
    assert result["mask"] == {"file": str(files["mask"]), "frame": 1, "click": None,
                              "area": int(mask.sum()),
                              "bbox": [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                       ys.max() - ys.min() + 1]}
    assert result["files"].get("mask") is None
    assert track(capsys, files["folder"], weights, tmp_path / "grid", "--grid", "2")[
        "mask"] is None


def test_an_empty_mask_from_the_click_is_one_line_and_writes_nothing(files, weights, tmp_path,
                                                                     capsys):
    """A SAM whose masks are all empty (its mask hypernetworks output zeros)."""
    def silence(model):
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.zero_()

    empty_sam = small_sam_checkpoint(tmp_path / "empty_sam.safetensors", silence)
    predictor = SamPredictor(build_sam(None, empty_sam))
    assert not click_mask(predictor, np.zeros((H, W, 3), np.uint8), CLICK)[0].any()
    out = tmp_path / "out"
    code, _, err = run(capsys, "track", files["folder"], "--checkpoint", weights,
                       *RESOLUTION_ARGS, "--mask", "8,16", "--sam-checkpoint", empty_sam,
                       "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "empty mask" in err and "click inside the object" in err and "mask PNG" in err
    assert not out.exists()


def test_a_click_mask_with_no_grid_point_is_one_line(files, weights, tmp_path, capsys,
                                                     monkeypatch):
    """A 1 x 1 grid: its one point, the frame's centre, is off the clicked object."""
    monkeypatch.setattr("attnvision.commands.track.MASK_GRID", 1)
    out = tmp_path / "out"
    code, _, err = run(capsys, "track", files["folder"], "--checkpoint", weights,
                       *RESOLUTION_ARGS, "--mask", f"{CLICK[0]},{CLICK[1]}", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert "no point of the 1 x 1 grid falls inside its mask: click a larger object" in err
    assert not out.exists()


def test_trajectories_outline_the_mask():
    frame = np.full((20, 30, 3), 200, np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[5:15, 0:10] = True  # touching the frame's left border
    picture = np.asarray(trajectories_picture(frame, np.zeros((3, 0, 2)), np.zeros((3, 0), bool),
                                              np.zeros((0, 3), np.uint8), outline=mask))
    white = (picture == 255).all(axis=2)
    edge = mask.copy()
    edge[6:14, 1:9] = False
    assert np.array_equal(white, edge)
    assert (picture[~white] == 90).all()  # the rest dimmed (0.45 of 200)


def official_online(weights, frames, **first_step):
    """The official online demo's loop over the whole video in memory."""
    predictor = CoTrackerOnlinePredictor(build_cotracker(weights, offline=False,
                                                         model_resolution=RESOLUTION))
    video = video_tensor(frames)
    predictor(video, is_first_step=True, **first_step)
    for ind in range(0, video.shape[1] - predictor.step, predictor.step):
        tracks, visible = predictor(video[:, ind:ind + 2 * predictor.step])
    return tracks[0].numpy(), visible[0].numpy()


def test_online_equals_the_official_chunk_loop(files, weights, tmp_path, capsys, clip):
    from attnvision.data.video import read_frames

    frames = read_frames(files["mp4"])  # what the command decodes
    result = track(capsys, files["mp4"], weights, tmp_path / "grid", "--grid", "3",
                   "--online")
    assert result["online"] and result["points"] == 9 and result["visible_threshold"] == 0.6
    tracks, visible, _ = read_outputs(result)
    want_tracks, want_visible = official_online(weights, frames, grid_size=3)
    np.testing.assert_allclose(tracks, want_tracks, atol=1e-3)
    assert np.array_equal(visible, want_visible)

    result = track(capsys, files["folder"], weights, tmp_path / "points", "--point",
                   "0,10,12", "--point", "2,40,30", "--online")
    tracks, visible, queries = read_outputs(result)
    want_tracks, want_visible = official_online(
        weights, clip.frames, queries=torch.from_numpy(queries)[None], add_support_grid=True)
    np.testing.assert_allclose(tracks, want_tracks, atol=1e-3)
    assert np.array_equal(visible, want_visible)


def test_progress_on_stderr_and_lines_for_a_person(files, weights, tmp_path, capsys):
    code, stdout, err = run(capsys, "track", files["folder"], "--checkpoint", weights,
                            *RESOLUTION_ARGS, "--grid", "2", "--out", tmp_path / "o")
    assert code == 0, err
    assert "track" in err  # the tqdm bar
    assert "tracked 4 points through 10 frames" in stdout
    assert "wrote" in stdout and "overlay.mp4" in stdout


BAD_OPTIONS = [
    (["--point", "10,5,5"], "out of range"),
    (["--point", "0,65,5"], "off the frame"),
    (["--point", "0,5,-1"], "off the frame"),
    (["--point", "0,5"], "FRAME,X,Y"),
    (["--point", "a,b,c"], "FRAME,X,Y"),
    (["--point", "nan,5,5"], "FRAME,X,Y"),
    (["--point", "0,inf,5"], "FRAME,X,Y"),
    (["--point", "1.5,5,5"], "whole number"),
    (["--point=-1,5,5"], "0 or more"),
    (["--grid", "0"], "--grid 0"),
    (["--grid", "3", "--point", "0,5,5"], "together"),
    (["--grid", "3", "--mask", "MASK"], "together"),
    (["--point", "0,5,5", "--mask", "MASK"], "together"),
    (["--grid-query-frame", "10"], "out of range"),
    (["--mask", "MASK", "--grid-query-frame", "12"], "out of range"),
    (["--point", "0,5,5", "--grid-query-frame", "1"], "--grid-query-frame goes with"),
    (["--online", "--backward"], "--backward"),
    (["--model-resolution", "65,96"], "--model-resolution"),
    (["--model-resolution", "64"], "--model-resolution"),
    (["--mask", "EMPTY"], "empty"),
    (["--mask", "OTHER_SIZE"], "video's size"),
    (["--mask", "SPECK"], "no point of the"),
    (["--mask", "MISSING"], "not found"),
    (["--mask", "65,5"], "--mask 65,5 is off the frame"),
    (["--mask=-1,5"], "off the frame"),
    (["--mask", "5,49.5", "--online"], "off the frame"),
    (["--mask", "5,5", "--grid-query-frame", "10"], "out of range"),
    (["--mask", "1,2,3"], "neither a click X,Y"),
    (["--mask", "nan,5"], "neither a click X,Y"),
    (["--mask", "5,5", "--point", "0,5,5"], "together"),
    (["--sam-checkpoint", "SAM"], "segments a click"),
    (["--mask", "MASK", "--sam2-checkpoint", "SAM2"], "segments a click"),
    (["--mask", "5,5", "--sam-checkpoint", "SAM", "--sam2-checkpoint", "SAM2"], "together"),
    (["--mask", "5,5", "--sam-checkpoint", "MISSING"], "not found"),
    (["--mask", "5,5", "--sam2-checkpoint", "MISSING"], "not found"),
    (["--mask", "5,5", "--sam-checkpoint", "CORRUPT"], "corrupt"),
    (["--mask", "5,5", "--sam2-checkpoint", "CORRUPT"], "corrupt"),
    (["--mask", "5,5", "--sam-checkpoint", "COTRACKER"], "not a SAM checkpoint"),
    (["--mask", "5,5", "--sam2-checkpoint", "COTRACKER"], "not a SAM 2 checkpoint"),
    (["--mask", "5,5", "--sam2-checkpoint", "SAM"], "SAM (v1) checkpoint"),
]


@pytest.mark.parametrize(("args", "words"), BAD_OPTIONS)
def test_bad_options_are_one_line_and_write_nothing(files, weights, sam_file, sam2_file,
                                                    tmp_path, capsys, args, words):
    names = {"MASK": files["mask"], "EMPTY": files["empty"],
             "OTHER_SIZE": files["other_size"], "SPECK": files["speck"],
             "MISSING": tmp_path / "missing.png", "SAM": sam_file, "SAM2": sam2_file,
             "CORRUPT": files["corrupt"], "COTRACKER": weights}
    out = tmp_path / "out"
    code, _, err = run(capsys, "track", files["folder"], "--checkpoint", weights,
                       *RESOLUTION_ARGS, *[str(names.get(a, a)) for a in args], "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_bad_videos_and_weights_are_one_line_and_write_nothing(files, weights, tmp_path,
                                                               capsys, monkeypatch):
    import attnvision.cotracker.pretrained as pretrained

    monkeypatch.setattr(pretrained, "has_shipped", lambda: False)  # an install without one
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)},
              str(foreign))
    folder = files["folder"]
    cases = [([tmp_path / "missing.mp4", "--checkpoint", weights], "not found"),
             ([empty, "--checkpoint", weights], "no JPEG or PNG"),
             ([garbage, "--checkpoint", weights], "garbage.mp4"),
             ([folder], "huggingface.co/facebook/cotracker3"),
             ([folder], "scaled_offline.pth"),
             ([folder, "--online"], "scaled_online.pth"),
             ([folder, "--checkpoint", tmp_path / "nope.pth"], "nope.pth"),
             ([folder, "--checkpoint", foreign], "not a CoTracker3")]
    for argv, words in cases:
        code, _, err = run(capsys, "track", *argv, *RESOLUTION_ARGS, "--grid", "2",
                           "--out", out)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and words in err, (argv, err)
        assert not out.exists()


def test_track_colours_are_distinct_for_few_and_a_rainbow_for_many():
    few = track_colours(np.array([[0, 5, 5], [0, 9, 9], [2, 1, 1]], np.float32))
    assert few.tolist() == [list(c) for c in PALETTE[:3]]
    ys, xs = np.meshgrid(np.arange(5.0), np.arange(5.0), indexing="ij")
    grid = np.stack([np.zeros(25), xs.ravel(), ys.ravel()], axis=1)
    many = track_colours(grid)
    assert many.shape == (25, 3) and many.dtype == np.uint8
    assert len({tuple(c) for c in many.tolist()}) == 25


# -- eval track --synthetic ---------------------------------------------------------------------

METRICS = ["average_jaccard", "average_pts_within_thresh", "occlusion_accuracy",
           *[f"pts_within_{d}" for d in (1, 2, 4, 8, 16)],
           *[f"jaccard_{d}" for d in (1, 2, 4, 8, 16)]]


@pytest.mark.parametrize("extra", [[], ["--online", *RESOLUTION_ARGS]],
                         ids=["offline, released resolution", "online"])
def test_eval_track_synthetic(weights, tmp_path, capsys, extra):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "eval", "track", "--synthetic", "--checkpoint", weights,
                            "--clips", "2", "--frames", "8", "--size", "64", *extra,
                            "--out", out, "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["command"] == "eval track" and result["online"] == ("--online" in extra)
    assert (result["clips"], result["points"], result["frames"], result["size"]) == (
        2, 64, 8, 64)
    for key in METRICS:
        assert 0 <= result[key] <= 1, key
    assert math.isclose(result["average_jaccard"],
                        np.mean([result[f"jaccard_{d}"] for d in (1, 2, 4, 8, 16)]))
    assert result["fps"] > 0 and result["tracked_frames"] == 16
    assert [c["seed"] for c in result["per_clip"]] == [0, 1]
    assert [c["occluded"] for c in result["per_clip"]] == [True, False]
    assert set(result["files"]) == {"results", "scores", "trajectories"}
    assert json.loads((out / "results.json").read_text()) == result
    for name in ("scores", "trajectories"):
        with Image.open(result["files"][name]) as picture:
            assert picture.mode in ("RGB", "RGBA") and picture.width > 64


def test_eval_track_lines_for_a_person(weights, capsys):
    code, stdout, err = run(capsys, "eval", "track", "--synthetic", "--checkpoint", weights,
                            "--clips", "1", "--frames", "3", "--size", "32", "--points", "4",
                            *RESOLUTION_ARGS, "--quiet")
    assert code == 0, err
    assert "AJ" in stdout and "occlusion accuracy" in stdout and "frames/s" in stdout


@pytest.mark.parametrize(("args", "words"), [
    (["--clips", "0"], "--clips 0"),
    (["--points", "0"], "--points 0"),
    (["--frames", "1"], "--frames 1"),
    (["--size", "8"], "clip size"),
    (["--model-resolution", "60,90,3"], "--model-resolution"),
    (["NO_CHECKPOINT"], "huggingface.co/facebook/cotracker3"),
])
def test_eval_track_bad_options(weights, tmp_path, capsys, args, words, monkeypatch):
    import attnvision.cotracker.pretrained as pretrained

    monkeypatch.setattr(pretrained, "has_shipped", lambda: False)  # an install without one
    out = tmp_path / "out"
    checkpoint = [] if args == ["NO_CHECKPOINT"] else ["--checkpoint", weights]
    args = [] if args == ["NO_CHECKPOINT"] else args
    code, _, err = run(capsys, "eval", "track", "--synthetic", *checkpoint,
                       "--clips", "1", "--frames", "3", "--size", "32", *args, "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()
