"""``attnvision segment-video``: a small random-weight SAM 2 tracks a moving square."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sam2_helpers import NAME, SMALL, small_sam2_weights

from attnvision.cli import main
from attnvision.data.rle import rle_to_mask
from attnvision.sam2 import SAM2_CONFIGS

T, H, W = 8, 48, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return small_sam2_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


@pytest.fixture(autouse=True)
def small_config(monkeypatch):
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)


def square_clip() -> np.ndarray:
    frames = np.full((T, H, W, 3), 30, np.uint8)
    for t in range(T):
        x = 8 + 4 * t
        frames[t, 16:32, x:x + 16] = (230, 200, 40)
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The clip as an mp4 and as a folder of PNGs."""
    pytest.importorskip("av")
    from attnvision.data.video import write_video

    root = tmp_path_factory.mktemp("clips")
    frames = square_clip()
    mp4 = write_video(root / "square.mp4", frames, quality=10)
    folder = root / "frames"
    folder.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    return {"mp4": mp4, "folder": folder}


def run(capsys, *argv):
    code = main(["segment-video", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["mp4", "folder"])
def test_tracks_objects_and_writes_every_file(clips, weights, tmp_path, capsys, kind):
    import av

    out = tmp_path / "out"
    # object 1 prompted on frame 3 (so tracking runs forwards and back), object 2 on frame 0
    code, stdout, err = run(capsys, clips[kind], "--checkpoint", weights,
                            "--point", "3,28,24", "--box", "3,20,16,36,32",
                            "--obj", "2", "--point", "0,50,40,1", "--point", "0,5,5,0",
                            "--out", out, "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["command"] == "segment-video"
    assert (result["frames"], result["objects"], result["size"]) == (T, [1, 2], [W, H])
    assert [(p["obj"], p["frame"]) for p in result["prompts"]] == [(1, 3), (1, 3), (2, 0),
                                                                   (2, 0)]
    files = result["files"]
    for path in [*files.values(), *result["mask_files"]]:
        assert Path(path).exists(), path
    pngs = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(T)]
    assert [str(p) for p in pngs] == result["mask_files"]
    assert not list(out.rglob(".*.tmp"))
    doc = json.loads((out / "masks.json").read_text())
    assert doc["frames"] == T and len(doc["annotations"]) == T
    seen = set()
    for t, png in enumerate(pngs):
        with Image.open(png) as image:
            assert image.mode == "P" and image.size == (W, H)
            ids = np.asarray(image)
        assert set(np.unique(ids)) <= {0, 1, 2}
        seen |= set(np.unique(ids).tolist())
        entry = doc["annotations"][t]
        assert entry["frame"] == t
        assert [o["id"] for o in entry["objects"]] == [1, 2]
        masks = {o["id"]: rle_to_mask(o["segmentation"]) for o in entry["objects"]}
        for o in entry["objects"]:
            assert o["area"] == int(masks[o["id"]].sum())
        # later objects on top: the PNG is object 1's mask overwritten by object 2's
        expected = np.zeros((H, W), np.uint8)
        expected[masks[1]] = 1
        expected[masks[2]] = 2
        np.testing.assert_array_equal(ids, expected)
    assert seen >= {1, 2}, "the random model should mark both objects somewhere"
    with av.open(files["overlay"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == T
    with Image.open(files["contact_sheet"]) as sheet:
        assert sheet.mode == "RGB" and sheet.width > W


def test_progress_bar_on_stderr_and_lines_for_a_person(clips, weights, tmp_path, capsys):
    code, stdout, err = run(capsys, clips["folder"], "--checkpoint", weights,
                            "--point", "0,20,20", "--out", tmp_path / "o")
    assert code == 0, err
    assert "segment-video" in err  # the tqdm bar
    assert "wrote" in stdout and "overlay.mp4" in stdout


@pytest.mark.parametrize(("args", "words"), [
    (["--point", "8,10,10"], "out of range"),
    (["--point", "0,65,10"], "off the frame"),
    (["--box", "0,0,0,70,20"], "off the frame"),
    (["--point", "0,10"], "FRAME,X,Y"),
    (["--point", "a,b,c"], "FRAME,X,Y"),
    (["--point", "0,10,10,3"], "label"),
    (["--point", "1.5,10,10"], "whole number"),
    (["--box", "0,10,10,20"], "FRAME,X0,Y0,X1,Y1"),
    (["--box", "0,30,10,20,20"], "X1 must exceed"),
    (["--obj", "2"], "give a prompt"),
    (["--point", "0,10,10", "--obj", "3"], "--obj 3"),
    (["--obj", "0", "--point", "0,10,10"], "object ids"),
    ([], "give a prompt"),
])
def test_bad_prompts_are_one_line_and_write_nothing(clips, weights, tmp_path, capsys, args,
                                                    words):
    out = tmp_path / "out"
    code, _, err = run(capsys, clips["folder"], "--checkpoint", weights, *args,
                       "--out", out)
    assert code == 2
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_bad_videos_and_missing_weights(clips, weights, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all")
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    cases = [([tmp_path / "missing.mp4", "--checkpoint", weights], "not found"),
             ([empty, "--checkpoint", weights], "no JPEG or PNG"),
             ([garbage, "--checkpoint", weights], "garbage.mp4"),
             ([zero, "--checkpoint", weights], "zero.mp4"),
             ([clips["folder"], "--model", "sam2.1_hiera_tiny"], "dl.fbaipublicfiles.com"),
             ([clips["folder"], "--checkpoint", tmp_path / "nope.pt"], "nope.pt"),
             ([clips["folder"], "--checkpoint", weights, "--model", "sam9"], "unknown SAM 2")]
    for argv, words in cases:
        code, _, err = run(capsys, *argv, "--point", "0,10,10", "--out", out)
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and words in err, (argv, err)
        assert not out.exists()


def read_ids(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_stream_gives_the_whole_video_masks_forward(clips, weights, tmp_path, capsys):
    """Prompts on frame 0: one forward pass either way, so the stream's masks are the video
    predictor's. An object first prompted on frame 3 starts there in the stream."""
    prompts = ["--point", "0,16,24", "--obj", "2", "--box", "0,40,30,60,46"]
    code, stdout, err = run(capsys, clips["mp4"], "--checkpoint", weights, *prompts,
                            "--out", tmp_path / "whole", "--json", "--quiet")
    assert code == 0, err
    code, stdout, err = run(capsys, clips["mp4"], "--checkpoint", weights, *prompts,
                            "--stream", "--out", tmp_path / "stream", "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["stream"] is True and result["frames"] == T
    for path in [*result["files"].values(), *result["mask_files"]]:
        assert Path(path).exists(), path
    np.testing.assert_array_equal(read_ids(tmp_path / "stream" / "masks"),
                                  read_ids(tmp_path / "whole" / "masks"))
    assert (json.loads((tmp_path / "stream" / "masks.json").read_text())["annotations"] ==
            json.loads((tmp_path / "whole" / "masks.json").read_text())["annotations"])

    code, stdout, err = run(capsys, clips["folder"], "--checkpoint", weights, "--point",
                            "3,28,24", "--stream", "--out", tmp_path / "late", "--json",
                            "--quiet")
    assert code == 0, err
    doc = json.loads((tmp_path / "late" / "masks.json").read_text())
    assert [len(a["objects"]) for a in doc["annotations"]] == [0, 0, 0] + [1] * (T - 3)
    assert not read_ids(tmp_path / "late" / "masks")[:3].any()


def test_bf16_precision_runs_and_is_reported(clips, weights, tmp_path, capsys):
    code, stdout, err = run(capsys, clips["mp4"], "--checkpoint", weights, "--point",
                            "0,16,24", "--precision", "bf16", "--out", tmp_path / "o",
                            "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["precision"] == "bf16" and result["frames"] == T
    with pytest.raises(SystemExit) as exit_code:  # a usage error: argparse's own exit
        run(capsys, clips["mp4"], "--checkpoint", weights, "--point", "0,16,24",
            "--precision", "fp16", "--out", tmp_path / "p")
    err = capsys.readouterr().err
    assert exit_code.value.code == 2 and "fp16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()
