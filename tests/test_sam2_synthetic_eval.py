"""SAM 2 on held-out synthetic clips: the clips, the prompts, the protocol with fake
predictors whose scores are known, a small random SAM 2 end to end, and ``attnvision eval
sam2 --synthetic``."""

import itertools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sam2_helpers import NAME, SMALL, small_sam2_weights
from scipy import ndimage

from attnvision.cli import main
from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, build_sam2
from attnvision.sam2.synthetic_eval import (
    MIN_SHARE,
    REAPPEAR_FRAMES,
    evaluate_clips,
    first_frame_prompts,
    held_out_clips,
    score_clip,
    summarise,
)

T, S = 8, 64  # frames and side of the clips these tests track


@pytest.fixture(scope="module")
def clips():
    """Four clips: the first and third with an occlusion."""
    return held_out_clips(4, T, S)


# -- the clips and the prompts ---------------------------------------------------------------

def test_held_out_clips_are_deterministic_and_half_occluded(clips):
    again = held_out_clips(4, T, S)
    assert [c.seed for c in clips] == [0, 1, 2, 3] and {c.split for c in clips} == {"test"}
    for a, b in zip(clips, again, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
        assert a.frames.shape == (T, S, S, 3) and 1 <= len(a.objects) <= 4  # + a distractor
    assert [c.occlusion is not None for c in clips] == [True, False, True, False]
    for c in clips[::2]:
        assert len(c.occlusion.frames) >= 3
        assert not (c.masks[list(c.occlusion.frames)] == c.occlusion.target).any()
    other = held_out_clips(3, 6, 32, first_seed=10)
    assert [c.seed for c in other] == [10, 11, 12] and other[0].masks.shape == (6, 32, 32)
    for bad in ({"count": 0}, {"frames": 4}):
        with pytest.raises(UserError):
            held_out_clips(**bad)


def test_a_click_lies_at_the_most_interior_pixel_and_a_box_is_tight(clips):
    for clip in clips:
        clicks, unprompted = first_frame_prompts(clip, "click")
        boxes, _ = first_frame_prompts(clip, "box")
        assert set(clicks) == set(boxes) and not set(clicks) & set(unprompted)
        assert sorted([*clicks, *unprompted]) == [o.id for o in clip.objects]
        for obj, prompt in clicks.items():
            mask = clip.masks[0] == obj
            x, y = prompt.point.astype(int)
            assert mask[y, x] and prompt.box is None
            inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            assert inside[y, x] == inside.max()
            ys, xs = np.nonzero(mask)
            assert boxes[obj].box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        for obj in unprompted:  # too small on frame 0 (or absent)
            assert (clip.masks[0] == obj).sum() < S * S / 1024
    # Objects under the threshold are not prompted.
    assert first_frame_prompts(clips[0], "click", min_share=1.0) == (
        {}, [o.id for o in clips[0].objects])
    with pytest.raises(UserError, match="prompt must be"):
        first_frame_prompts(clips[0], "scribble")


# -- the protocol, with fakes -------------------------------------------------------------------

class FakeVideo:
    """The official video predictor's calls; each frame's logits are +10 inside and -10
    outside ``answer(clip, t, obj)``, the clips taken in order."""

    def __init__(self, clips, answer):
        self.clips, self.answer, self.sessions = list(clips), answer, []

    def __call__(self, model):  # the factory evaluate_clips calls with the model
        return self

    def init_state(self, video):
        clip = self.clips.pop(0)
        assert video is clip.frames
        self.sessions.append([])
        return {"clip": clip, "objects": []}

    def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None,
                              box=None):
        state["objects"].append(obj_id)
        self.sessions[-1].append((frame_idx, obj_id, points, labels, box))

    def propagate_in_video(self, state):
        ids, clip = state["objects"], state["clip"]
        for t in range(len(clip.frames)):
            masks = [self.answer(clip, t, obj) for obj in ids]
            yield t, ids, torch.from_numpy(np.where(np.stack(masks), 10.0, -10.0)[:, None])


def truth(clip, t, obj):
    return clip.masks[t] == obj


def nothing(clip, t, obj):
    return np.zeros(clip.masks.shape[1:], bool)


def lost_after_occlusion(clip, t, obj):
    if clip.occlusion is not None and obj == clip.occlusion.target \
            and t > clip.occlusion.frames[-1]:
        return nothing(clip, t, obj)
    return truth(clip, t, obj)


def test_the_true_masks_score_one_and_every_object_is_prompted_in_one_session(clips):
    fake = FakeVideo(clips, truth)
    model = torch.nn.Linear(1, 1)
    result = evaluate_clips(model, clips, "click", video_predictor=fake)
    assert (result["jf"], result["j"], result["f"], result["reappeared"]) == (1, 1, 1, 1)
    assert result["jf_occluded"] == result["jf_targets"] == 1.0
    assert result["occluded_clips"] == result["reappeared_count"] == 2
    assert result["clips"] == 4 and result["tracked_frames"] == 4 * T and result["fps"] > 0
    assert result["objects"] == sum(len(first_frame_prompts(c)[0]) for c in clips)
    assert len(fake.sessions) == 4
    for clip, session, record in zip(clips, fake.sessions, result["per_clip"], strict=True):
        prompts, unprompted = first_frame_prompts(clip, "click")
        assert [(t, obj) for t, obj, *_ in session] == [(0, obj) for obj in prompts]
        for (_, obj, points, labels, box) in session:
            assert np.array_equal(points, prompts[obj].point[None]) and box is None
            assert labels.tolist() == [1]
        assert record["unprompted"] == unprompted and record["seed"] == clip.seed
        if clip.occlusion is not None:
            occlusion = record["occlusion"]
            assert occlusion["target"] == clip.occlusion.target and occlusion["reappeared"]
            # The first 3 frames after the hidden run that show at least MIN_SHARE of the
            # frame (fewer at the clip's end), and the first 3 that show any pixel of it.
            area = [np.count_nonzero(clip.masks[t] == clip.occlusion.target) for t in range(T)]
            later = range(clip.occlusion.frames[-1] + 1, T)
            shows = [t for t in later if area[t] >= MIN_SHARE * S * S]
            assert occlusion["after"] == shows[:REAPPEAR_FRAMES] and shows
            shows = [t for t in later if area[t] > 0]
            assert occlusion["after_any_pixel"] == shows[:REAPPEAR_FRAMES]
            assert occlusion["reappeared_any_pixel"]
    boxed = evaluate_clips(model, clips, "box", video_predictor=FakeVideo(clips, truth))
    assert boxed["jf"] == 1.0 and boxed["prompt"] == "box"
    assert model.training  # restored


def test_empty_predictions_score_the_frames_where_the_object_is_absent(clips):
    result = evaluate_clips(None, clips, video_predictor=FakeVideo(clips, nothing))
    # J (and F) of an empty prediction: 1 on a frame where the object is absent from the
    # truth (hidden or out of the frame), 0 where it shows: the share of absent frames.
    absent = [np.mean([not (c.masks[t] == obj).any() for t in range(1, T)])
              for c in clips for obj in first_frame_prompts(c)[0]]
    assert result["j"] == pytest.approx(np.mean(absent)) == pytest.approx(result["f"])
    assert 0 < result["j"] < 0.5  # the occluded targets are absent 3+ of 7 frames
    assert result["reappeared"] == 0.0 and result["reappeared_count"] == 0
    # Without the occlusions, nothing is ever absent here: J = 0.
    plain = [clips[1], clips[3]]
    assert evaluate_clips(None, plain, video_predictor=FakeVideo(plain, nothing))["j"] == 0.0


def test_an_object_lost_after_its_occlusion_is_not_found_again(clips):
    result = evaluate_clips(None, clips, video_predictor=FakeVideo(clips, lost_after_occlusion))
    assert result["reappeared"] == 0.0 and result["occluded_clips"] == 2
    assert result["jf_targets"] < 1.0 and result["jf_occluded"] < 1.0
    for record in result["per_clip"]:
        if record["occlusion"] is None:
            assert record["J&F"] == 1.0
        else:
            assert record["occlusion"]["J_after"] == 0.0
            others = [v for k, v in record["objects"].items()
                      if int(k) != record["occlusion"]["target"]]
            assert all(v["J"] == v["F"] == 1.0 for v in others)


def test_a_sliver_at_the_occluders_edge_counts_only_in_the_any_pixel_figure(clips):
    # Clip 0's target comes back as 3 pixels on frame 6, then 28 on frame 7: at 64 x 64,
    # MIN_SHARE is 4 pixels, so it has come back on frame 7. A tracker that misses the sliver
    # and finds the rest has found it again; by the first-pixel figure, J is (0 + 1) / 2.
    clip = clips[0]
    target = clip.occlusion.target
    area = [np.count_nonzero(clip.masks[t] == target) for t in range(T)]
    assert clip.occlusion.frames == (2, 3, 4, 5) and area[6:] == [3, 28]
    labels = np.where(clip.masks == target, np.uint8(0), clip.masks).astype(np.uint8)
    labels[7][clip.masks[7] == target] = target
    objects = list(first_frame_prompts(clip)[0])
    occlusion = score_clip(clip, labels, objects)["occlusion"]
    assert (occlusion["after"], occlusion["J_after"], occlusion["reappeared"]) == ([7], 1.0, True)
    assert occlusion["after_any_pixel"] == [6, 7] and occlusion["J_after_any_pixel"] == 0.5
    # A target that never shows MIN_SHARE again is left out of "found again" (not counted as
    # lost), but its clip is still occluded and measured by the first pixel.
    never = score_clip(clip, labels, objects, min_share=29 / (S * S))
    assert never["occlusion"]["reappeared"] is None
    assert never["occlusion"]["after_any_pixel"] == [6, 7]
    summary = summarise([never])
    assert (summary["occluded_clips"], summary["reappeared_clips"]) == (1, 0)
    assert summary["reappeared"] is None and summary["reappeared_any_pixel"] == 1.0


class FakeImage:
    """The image predictor's calls, recorded. A click gives three masks, the best scoring a
    7x7 square around it; a box gives its rectangle moved one pixel right (so each next box
    moves on); object ``lose`` comes back empty from frame ``lose_at`` on."""

    def __init__(self, lose=None, lose_at=None):
        self.calls, self.frame, self.lose, self.lose_at = [], -1, lose, lose_at

    def __call__(self, model):
        return self

    def set_image(self, image):
        self.frame += 1
        self.image, self.k = image, 0

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True,
                return_logits=False):
        assert return_logits
        h, w = self.image.shape[:2]
        t = self.frame % T
        obj = self.k
        self.k += 1
        out = np.zeros((h, w), bool)
        if box is not None:
            x0, y0, x1, y1 = np.asarray(box, int)
            out[y0:y1 + 1, x0 + 1:x1 + 2] = True
        else:
            x, y = np.asarray(point_coords[0], int)
            out[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = True
        if obj == self.lose and t >= self.lose_at:
            out[:] = False
        self.calls.append({"t": t, "k": obj, "box": None if box is None else list(box),
                           "point": None if point_coords is None else point_coords.tolist(),
                           "multimask": multimask_output, "out": out})
        logits = np.where(out, 10.0, -10.0)[None]
        if multimask_output:
            return np.concatenate([-logits, logits, -logits]), np.array([0.1, 0.9, 0.2]), None
        return logits, np.array([0.9]), None


def test_without_memory_each_frame_is_prompted_with_the_previous_box(clips):
    clip = next(c for c in clips if len(first_frame_prompts(c)[0]) >= 2)
    prompts, _ = first_frame_prompts(clip, "click")
    ids = list(prompts)
    last = len(ids) - 1  # lost: the last object, so the others keep their call order
    fake = FakeImage(lose=last, lose_at=3)
    kept = {}
    result = evaluate_clips(None, [clip], "click", memory=False, image_predictor=fake,
                            on_clip=lambda c, labels: kept.update(labels=labels))
    assert result["memory"] is False and result["tracked_frames"] == T
    by_object = {k: [c for c in fake.calls if c["k"] == k] for k in range(len(ids))}
    for k, obj in enumerate(ids):
        calls = by_object[k]
        assert calls[0]["t"] == 0 and calls[0]["point"] == [prompts[obj].point.tolist()]
        assert calls[0]["multimask"] and calls[0]["box"] is None
        for before, now in itertools.pairwise(calls):
            ys, xs = np.nonzero(before["out"])
            assert now["t"] == before["t"] + 1 and not now["multimask"]
            assert now["box"] == [xs.min(), ys.min(), xs.max(), ys.max()]
    # The last object came back empty on frame 3: never prompted again, empty to the end.
    assert [c["t"] for c in by_object[last]] == [0, 1, 2, 3]
    assert [c["t"] for c in by_object[0]] == list(range(T))
    assert not (kept["labels"][3:] == ids[last]).any() and (kept["labels"][2] == ids[last]).any()
    # A box prompt starts from the tight box.
    fake = FakeImage()
    evaluate_clips(None, [clip], "box", memory=False, image_predictor=fake)
    boxes, _ = first_frame_prompts(clip, "box")
    assert fake.calls[0]["box"] == boxes[ids[0]].box.tolist() and not fake.calls[0]["multimask"]


# -- a small random SAM 2 -----------------------------------------------------------------------

def test_a_small_random_sam2_tracks_and_its_training_mode_is_restored(clips):
    torch.manual_seed(0)
    model = build_sam2(config=replace(SAM2_CONFIGS["sam2_tiny"], image_size=64))
    model.train()
    model.image_encoder.eval()  # as a trainer holding the encoder frozen
    modes = {name: m.training for name, m in model.named_modules()}
    for memory in (True, False):
        for prompt in ("click", "box"):
            result = evaluate_clips(model, clips[:2], prompt, memory)
            for key in ("jf", "j", "f", "j_recall", "jf_occluded", "reappeared"):
                assert 0.0 <= result[key] <= 1.0, (key, result[key])
            assert result["objects"] >= 2 and result["fps"] > 0
            assert {name: m.training for name, m in model.named_modules()} == modes
    assert not torch.is_inference_mode_enabled()


# -- the command -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return small_sam2_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


@pytest.fixture
def small_config(monkeypatch):
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)


def run(capsys, *argv):
    """Exit code, stdout and stderr of the command (a usage mistake exits from argparse)."""
    try:
        code = main(["eval", "sam2", *map(str, argv)])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_sam2_synthetic_writes_results_and_pictures(weights, small_config, tmp_path,
                                                         capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--synthetic", "--checkpoint", weights, "--clips", 2,
                            "--frames", 6, "--size", 48, "--out", out, "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)  # one document
    assert result["command"] == "eval sam2" and result["source"] == "synthetic"
    assert (result["model"], result["clips"], result["frames"]) == (NAME, 2, 6)
    assert list(result["runs"]) == ["click", "box", "click, no memory", "box, no memory"]
    for run_ in result["runs"].values():
        assert 0 <= run_["jf"] <= 1 and len(run_["per_clip"]) == 2
        assert run_["occluded_clips"] <= 1
    assert result["J&F"] == result["runs"]["click"]["jf"]
    assert set(result["files"]) == {"results", "scores", "contact_sheet"}
    assert json.loads(Path(result["files"]["results"]).read_text()) == result
    for picture in ("scores", "contact_sheet"):
        with Image.open(result["files"][picture]) as image:
            assert image.width > 200 and np.asarray(image.convert("L")).std() > 5
    assert not list(out.rglob(".*.tmp"))


def test_eval_sam2_synthetic_for_a_person(weights, small_config, tmp_path, capsys):
    code, stdout, err = run(capsys, "--synthetic", "--checkpoint", weights, "--clips", 1,
                            "--frames", 5, "--size", 32, "--prompt", "box", "--no-baseline")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].split() == ["sequence", "J&F", "J", "F"]
    assert lines[1].startswith("box ") and lines[2].startswith("box occluded")
    assert "mean over" in lines[3] and "no memory" not in stdout
    assert "box" in err  # the progress bar


@pytest.mark.parametrize(("args", "words"), [
    ([], "one of the arguments --annotations --synthetic is required"),
    (["--synthetic", "--annotations", "{tmp}"], "not allowed with"),
    (["--synthetic", "--sequences", "a"], "--sequences goes with --annotations"),
    (["--annotations", "{tmp}", "--clips", "3", "--prompt", "box"],
     "--clips, --prompt go with --synthetic"),
    (["--synthetic", "--clips", "0"], "--clips 0"),
    (["--synthetic", "--frames", "4"], "--frames 4"),
    (["--synthetic", "--prompt", "scribble"], "invalid choice"),
    (["--synthetic", "--size", "8"], "clip size"),
    (["--synthetic", "--model", "sam2.1_hiera_tiny"], "needs SAM 2 weights"),
    (["--synthetic", "--out", "{file}"], "existing file"),
])
def test_bad_flags_are_one_line_and_write_nothing(weights, small_config, tmp_path, capsys,
                                                 args, words):
    (tmp_path / "file").write_text("")
    argv = [a.format(tmp=tmp_path, file=tmp_path / "file") for a in args]
    if words != "needs SAM 2 weights":
        argv += ["--checkpoint", str(weights)]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code, stdout, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not stdout and not (tmp_path / "out").exists()


def test_the_summary_line_gives_both_counts_and_says_when_nothing_came_back():
    from attnvision.commands.sam2_eval import _summary

    run = {"reappeared_count": 3, "reappeared_clips": 4, "reappeared": 0.75,
           "reappeared_any_pixel_count": 1, "occluded_clips": 5, "fps": 12.0}
    assert _summary({"click": run}) == [
        "click: hidden objects found again 3/4 (75%; from their first pixel 1/5); "
        "12.0 frames/s"]
    gone = {**run, "reappeared_count": 0, "reappeared_clips": 0, "reappeared": None}
    assert "no hidden object came back" in _summary({"box": gone})[0]
    none = {**gone, "occluded_clips": 0, "reappeared_any_pixel_count": 0}
    assert _summary({"box": none}) == ["box: no occlusion measured; 12.0 frames/s"]
