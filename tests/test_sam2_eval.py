"""SAM 2 on DAVIS: the semi-supervised protocol with fake predictors whose scores are worked
out by hand, then ``attnvision eval sam2`` end to end with a small random-weight SAM 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sam2_helpers import NAME, SMALL, small_sam2_weights

from attnvision.cli import main
from attnvision.data.davis import VOID, read_indexed_png, write_indexed_png
from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS
from attnvision.sam2.evaluation import evaluate_davis, label_map, plan_sequences
from attnvision.sam2.metrics import contour_accuracy, region_similarity

T, H, W = 6, 48, 64


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return small_sam2_weights(tmp_path_factory.mktemp("weights") / "small.safetensors")


@pytest.fixture(autouse=True)
def small_config(monkeypatch):
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)


def disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def truth_of(name: str) -> list[np.ndarray]:
    """Per frame (H, W) ids. discs: object 1 moving right in a 2-pixel void ring. late:
    object 1 moving right, object 2 moving down from frame 2 on."""
    frames = []
    for t in range(T):
        labels = np.zeros((H, W), np.uint8)
        one = disc(14 + 4 * t, 24, 9)
        if name == "discs":
            labels[disc(14 + 4 * t, 24, 11) & ~one] = VOID
        elif t >= 2:
            labels[disc(50, 8 + 3 * t, 7)] = 2
        labels[one] = 1
        frames.append(labels)
    return frames


def write_sequence(root: Path, name: str) -> None:
    frames_dir = root / "JPEGImages" / "480p" / name
    masks_dir = root / "Annotations" / "480p" / name
    frames_dir.mkdir(parents=True)
    ramp = np.linspace(20, 90, W, dtype=np.float32)[None, :, None]
    colours = {1: (230, 60, 40), 2: (40, 90, 230)}
    for t, labels in enumerate(truth_of(name)):
        frame = np.broadcast_to(ramp, (H, W, 3)).astype(np.uint8).copy()
        for obj, colour in colours.items():
            frame[labels == obj] = colour
        Image.fromarray(frame).save(frames_dir / f"{t:05d}.jpg", quality=95)
        write_indexed_png(masks_dir / f"{t:05d}.png", labels)


@pytest.fixture
def davis(tmp_path) -> Path:
    root = tmp_path / "davis"
    for name in ("discs", "late"):
        write_sequence(root, name)
    return root


class FakePredictor:
    """The official video predictor's calls; each frame's logits are +10 inside and -10
    outside ``answer(truth, t, obj)``, the sequences' truths taken in order. It answers
    from frame 0 whichever frame its objects were given on."""

    def __init__(self, answer, names=("discs", "late")):
        self.answer, self.names, self.given = answer, list(names), []

    def reset_state(self, state):
        state["objects"].clear()
        self.given.append("reset")

    def init_state(self, video):
        frames = list(video)
        assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
        return {"frames": frames, "truth": truth_of(self.names.pop(0)), "objects": []}

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        state["objects"].append(obj_id)
        self.given.append((frame_idx, obj_id, np.asarray(mask, bool)))

    def propagate_in_video(self, state):
        ids = state["objects"]
        for t in range(len(state["frames"])):
            masks = [self.answer(state["truth"], t, obj) for obj in ids]
            yield t, ids, np.where(np.stack(masks), 10.0, -10.0)[:, None]


def test_the_true_masks_score_one_and_each_object_starts_from_its_first_mask(davis):
    # Object 2 of "late" is predicted on every frame as it is on frame 2: only its first
    # mask makes it exist, so frames 0 and 1 must come out empty to score 1.
    def answer(truth, t, obj):
        return truth[max(t, 2) if obj == 2 else t] == obj

    fake = FakePredictor(answer)
    plans = plan_sequences(davis)
    assert [(p.name, p.num_frames, p.starts, p.measured) for p in plans] == [
        ("discs", T, {1: 0}, (1, 2, 3, 4)), ("late", T, {1: 0, 2: 2}, (1, 2, 3, 4))]
    result = evaluate_davis(fake, plans)
    assert (result.J, result.F, result.JF) == (1.0, 1.0, 1.0)
    assert [(s.name, s.J, s.F, s.JF) for s in result.sequences] == [("discs", 1, 1, 1),
                                                                    ("late", 1, 1, 1)]
    late = truth_of("late")
    # "late": object 1 tracked from frame 0, then object 2 alone from frame 2
    assert [g if g == "reset" else g[:2] for g in fake.given] == [(0, 1), (0, 1), "reset",
                                                                  (2, 2)]
    assert np.array_equal(fake.given[3][2], late[2] == 2)
    assert [p.steps for p in plans] == [T, T + T - 2]
    doc = result.to_dict()
    assert doc["objects"] == 3 and doc["sequences"]["late"]["measured_frames"] == 4


def test_empty_predictions_average_over_objects_not_sequences(davis):
    result = evaluate_davis(FakePredictor(lambda truth, t, obj: np.zeros((H, W), bool)),
                            plan_sequences(davis))
    # Every object is missed wherever it is; object 2 of "late" is absent from frame 1,
    # where the empty prediction is right (J = F = 1): 1 of its 4 measured frames.
    late = result.sequences[1]
    assert late.objects[1]["J"] == 0.0 and late.objects[2]["J"] == 0.25
    assert late.objects[2]["F"] == 0.25 and late.objects[2]["J_recall"] == 0.25
    assert late.J == late.F == 0.125 and result.sequences[0].JF == 0.0
    # Three objects (0, 0, 0.25), not two sequences (0, 0.125).
    assert result.J == pytest.approx(0.25 / 3) and result.JF == pytest.approx(0.25 / 3)


def test_void_pixels_are_left_out_and_a_shift_scores_as_the_metrics_say(davis):
    # Grown into its void ring, object 1 of "discs" is still exact.
    grown = FakePredictor(lambda truth, t, obj: (truth[t] == obj) | (truth[t] == VOID),
                          names=["discs"])
    (plan,) = plan_sequences(davis, ["discs"])
    assert evaluate_davis(grown, [plan]).JF == 1.0

    def shifted(truth, t, obj):
        return np.roll(truth[t] == obj, 3, axis=1)

    result = evaluate_davis(FakePredictor(shifted, names=["discs"]), [plan])
    truth = truth_of("discs")
    frames = range(1, T - 1)
    j = np.mean([region_similarity(shifted(truth, t, 1), truth[t] == 1, truth[t] == VOID)
                 for t in frames])
    f = np.mean([contour_accuracy(shifted(truth, t, 1), truth[t] == 1, truth[t] == VOID)
                 for t in frames])
    assert 0 < j < 1 and 0 < f <= 1
    assert result.J == pytest.approx(j) and result.F == pytest.approx(f)


def test_overlaps_go_to_the_highest_logit_and_unstarted_objects_to_nobody():
    logits = np.full((2, 1, 2, 3), -1.0)
    logits[0, 0] = [[5, 5, -1], [2, -1, -1]]
    logits[1, 0] = [[3, 6, 4], [1, -1, -1]]
    assert label_map([1, 2], logits, [True, True]).tolist() == [[1, 2, 2], [1, 0, 0]]
    assert label_map([1, 2], torch.from_numpy(logits), [True, False]).tolist() == [
        [1, 1, 0], [1, 0, 0]]


def test_selection_max_frames_and_frames_without_masks(davis):
    (plan,) = plan_sequences(davis, ["late"], max_frames=4)
    assert (plan.num_frames, plan.starts, plan.measured) == (4, {1: 0, 2: 2}, (1, 2))
    for t in (2, 3):  # sparse annotations: only the annotated frames are measured
        (davis / "Annotations" / "480p" / "late" / f"{t:05d}.png").unlink()
    (plan,) = plan_sequences(davis, ["late"])
    assert (plan.starts, plan.measured) == ({1: 0, 2: 4}, (1, 4))


@pytest.mark.parametrize(("change", "kwargs", "words"), [
    (lambda root: None, {"names": ["bear"]}, "no sequence named bear"),
    (lambda root: None, {"max_frames": 2}, "3 or more"),
    (lambda root: (root / "Annotations/480p/late/00000.png").unlink(), {}, "first frame"),
    (lambda root: write_indexed_png(root / "Annotations/480p/late/00000.png",
                                    np.zeros((H, W), np.uint8)), {}, "marks no object"),
    (lambda root: write_indexed_png(root / "Annotations/480p/late/00001.png",
                                    np.zeros((H, W + 1), np.uint8)), {}, "must match"),
    (lambda root: [p.unlink() for p in (root / "Annotations/480p/late").glob("*.png")
                   if p.name not in ("00000.png", "00005.png")], {}, "nothing to measure"),
])
def test_bad_folders_are_one_line_errors(davis, change, kwargs, words):
    change(davis)
    with pytest.raises(UserError, match=words):
        plan_sequences(davis, **kwargs)
    with pytest.raises(UserError, match="not found"):
        plan_sequences(davis / "missing")


# -- the command, with a small random-weight SAM 2 ----------------------------------------

def run(capsys, *argv):
    code = main(["eval", "sam2", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_sam2_scores_writes_masks_json_and_pictures(davis, weights, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--annotations", davis, "--checkpoint", weights,
                            "--out", out, "--json", "--quiet")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["command"] == "eval sam2" and result["model"] == NAME
    assert set(result["sequences"]) == {"discs", "late"} and result["objects"] == 3
    for scores in [result, *result["sequences"].values()]:
        for key in ("J", "F", "J&F"):
            assert 0.0 <= scores[key] <= 1.0
        assert scores["J&F"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    assert result["sequences"]["late"]["frames"] == T
    assert set(result["sequences"]["late"]["objects"]) == {"1", "2"}
    files = result["files"]
    assert set(files) == {"masks", "results", "scores", "contact_sheet"}
    assert json.loads(Path(files["results"]).read_text()) == result
    for name in ("discs", "late"):
        pngs = sorted((out / "masks" / name).glob("*.png"))
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(T)]
        for png in pngs:
            with Image.open(png) as image:
                assert image.mode == "P" and image.size == (W, H)
            assert set(np.unique(read_indexed_png(png))) <= {0, 1, 2}
    # frame 0 holds the given masks, which the model reproduces roughly
    assert (read_indexed_png(out / "masks" / "late" / "00000.png") == 1).any()
    for picture in ("scores", "contact_sheet"):
        with Image.open(files[picture]) as image:
            assert image.width > 200 and np.asarray(image.convert("L")).std() > 5
    assert not list(out.rglob(".*.tmp"))


def test_eval_sam2_one_sequence_for_a_person(davis, weights, tmp_path, capsys):
    code, stdout, err = run(capsys, "--annotations", davis, "--checkpoint", weights,
                            "--model", NAME, "--sequences", "late", "--max-frames", "3",
                            "--out", tmp_path / "o")
    assert code == 0, err
    assert "wrote" in stdout and "scores.png" in stdout
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert list(doc["sequences"]) == ["late"] and doc["sequences"]["late"]["frames"] == 3
    assert len(list((tmp_path / "o" / "masks" / "late").glob("*.png"))) == 3
    assert "eval sam2" in err  # the progress bar
    assert "mean over 2 objects" in stdout and "late" in stdout  # the table
    assert "discs" not in stdout


@pytest.mark.parametrize(("args", "words"), [
    (["--annotations", "{root}/missing", "--checkpoint", "{weights}"], "not found"),
    (["--annotations", "{empty}", "--checkpoint", "{weights}"], "not a DAVIS-format folder"),
    (["--annotations", "{root}", "--checkpoint", "{weights}", "--sequences", "bear"],
     "no sequence named bear"),
    (["--annotations", "{root}", "--checkpoint", "{weights}", "--sequences", ","],
     "names no sequence"),
    (["--annotations", "{root}", "--checkpoint", "{weights}", "--max-frames", "2"],
     "3 or more"),
    (["--annotations", "{root}", "--checkpoint", "{weights}", "--model", "sam3"],
     "unknown SAM 2 model"),
    (["--annotations", "{root}", "--checkpoint", "{garbage}"], "garbage.pt"),
    (["--annotations", "{root}", "--model", "sam2.1_hiera_tiny"], "needs SAM 2 weights"),
    (["--annotations", "{root}", "--checkpoint", "{weights}", "--out", "{garbage}"],
     "existing file"),
])
def test_bad_input_is_one_line_and_writes_nothing(davis, weights, tmp_path, capsys, args,
                                                  words):
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    subs = {"root": davis, "empty": tmp_path / "empty", "garbage": tmp_path / "garbage.pt",
            "weights": weights}
    argv = [a.format(**subs) for a in args]
    out = tmp_path / "out"
    if "--out" not in argv:
        argv += ["--out", str(out)]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("attnvision eval sam2: error: ")
    assert err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_a_sequence_without_a_first_frame_mask_stops_the_command(davis, weights, tmp_path,
                                                                 capsys):
    (davis / "Annotations/480p/late/00000.png").unlink()
    out = tmp_path / "out"
    code, _, err = run(capsys, "--annotations", davis, "--checkpoint", weights, "--out", out)
    assert code == 2 and err.count("\n") == 1 and "late has no mask for its first" in err
    assert not out.exists()
