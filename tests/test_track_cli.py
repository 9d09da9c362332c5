"""``attnvision track`` and ``attnvision eval track --synthetic``: a small random-weight
CoTracker3 on a short synthetic clip, every output file read back, every bad input refused in
one line with nothing written."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cotracker_helpers import RESOLUTION, RESOLUTION_ARGS, small_cotracker_weights
from PIL import Image

from attnvision.cli import main
from attnvision.commands.track import MASK_GRID, grid_queries
from attnvision.cotracker import (
    CoTrackerOnlinePredictor,
    CoTrackerPredictor,
    build_cotracker,
)
from attnvision.cotracker.predictor import video_tensor
from attnvision.data.moving_scenes import make_clip
from attnvision.viz.overlays import PALETTE
from attnvision.viz.tracks import track_colours

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
    return {"mp4": mp4, "folder": folder, "mask": root / "mask.png",
            "empty": root / "empty.png", "other_size": root / "other_size.png",
            "speck": root / "speck.png", "root": root}


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
    assert set(files) == {"tracks", "tracks_json", "tracks_csv", "overlay", "trajectories"}
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
    assert result["online"] and result["points"] == 9
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
]


@pytest.mark.parametrize(("args", "words"), BAD_OPTIONS)
def test_bad_options_are_one_line_and_write_nothing(files, weights, tmp_path, capsys, args,
                                                    words):
    names = {"MASK": files["mask"], "EMPTY": files["empty"],
             "OTHER_SIZE": files["other_size"], "SPECK": files["speck"],
             "MISSING": tmp_path / "missing.png"}
    out = tmp_path / "out"
    code, _, err = run(capsys, "track", files["folder"], "--checkpoint", weights,
                       *RESOLUTION_ARGS, *[str(names.get(a, a)) for a in args], "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_bad_videos_and_weights_are_one_line_and_write_nothing(files, weights, tmp_path,
                                                               capsys):
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
def test_eval_track_bad_options(weights, tmp_path, capsys, args, words):
    out = tmp_path / "out"
    checkpoint = [] if args == ["NO_CHECKPOINT"] else ["--checkpoint", weights]
    args = [] if args == ["NO_CHECKPOINT"] else args
    code, _, err = run(capsys, "eval", "track", "--synthetic", *checkpoint,
                       "--clips", "1", "--frames", "3", "--size", "32", *args, "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()
