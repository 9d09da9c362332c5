"""The recipe that made the shipped sam_tiny stays a valid series of commands."""

import importlib.util
import itertools
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from attnvision.cli import build_parser
from attnvision.commands.sam_train import SYNTHETIC_RECIPE

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE = RECIPES / "sam_tiny.sh"
PACKAGED_SAM = "src/attnvision/sam/weights/sam_tiny.safetensors"


def recipe_commands(recipe: Path = RECIPE) -> list[list[str]]:
    """Each `attnvision train ...` line's arguments (after any VAR=value prefix)."""
    text = recipe.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if "attnvision" in words and words[words.index("attnvision") + 1:][:1] == ["train"]:
            commands.append(words[words.index("attnvision") + 1:])
    return commands


def command_lines(recipe: Path) -> list[list[str]]:
    """The words of each of the recipe's commands (continued lines joined, comments skipped)."""
    text = recipe.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def final_command(recipe: Path) -> list[str]:
    """The words of the recipe's last command."""
    return command_lines(recipe)[-1]


def test_every_stage_parses_and_chains_to_the_shipped_file():
    commands = recipe_commands()
    assert len(commands) == 13
    parsed = [build_parser().parse_args(c) for c in commands]
    assert [a.model for a in parsed] == ["sam"] * 13
    stages, candidates, (eleven_b, eleven_c) = parsed[:9], parsed[9:11], parsed[11:]
    # Each stage starts from the best epoch of the one before, on scenes no stage saw (scenes
    # skipped between two stages went to endings tried and dropped).
    for before, after in itertools.pairwise(stages):
        assert after.init == f"{before.out}/best.safetensors"
        first = before.first_scene + (before.scenes or SYNTHETIC_RECIPE["scenes"])
        assert after.first_scene >= first
    last = stages[-1]
    # Stage 9 keeps its file in its folder (a later rule may measure against it) and copies
    # it into the package.
    assert last.export == f"{last.out}/export.safetensors"
    assert ["cp", last.export, PACKAGED_SAM] in command_lines(RECIPE)
    assert last.text and "packed" in last.scene_style and last.freeze is None
    # Stages 6 and 7 move the model to 384 then 512 px; the others keep their --init's size.
    assert [a.img_size for a in parsed] == [None] * 5 + [384, 512] + [None] * 6
    assert [a.export for a in stages[:-1]] == [None] * 8
    # Stage 10's two candidates start from the package's file, on scenes of their own, with
    # large objects and packed trays, into their own folders: a script ships one or none.
    for before, after in itertools.pairwise([last, *candidates, eleven_b, eleven_c]):
        assert after.first_scene >= before.first_scene + before.scenes
    for stage in candidates:
        assert stage.init == PACKAGED_SAM and stage.export == f"{stage.out}/export.safetensors"
        assert "large=" in stage.scene_style and "packed=" in stage.scene_style
    # Stage 11: 11b from the package's file, 11c from 11b, look-alikes placed apart at stage
    # 9's share in both; 11c is the candidate.
    assert eleven_b.init == PACKAGED_SAM
    assert eleven_c.init == eleven_b.export == f"{eleven_b.out}/export.safetensors"
    assert eleven_c.export == f"{eleven_c.out}/export.safetensors"
    assert all("repeated=0.2" in s.scene_style for s in (eleven_b, eleven_c))
    rule = load_recipe_script("sam_tiny_large")
    rules = [words for words in command_lines(RECIPE) if "recipes/sam_tiny_large.py" in words]
    assert len(rules) == 2 and rules[-1] == final_command(RECIPE)
    ten, eleven = (rule.build_parser().parse_args(words[2:]) for words in rules)
    assert (str(ten.packaged), [str(r) for r in ten.runs]) == (
        PACKAGED_SAM, [a.out for a in candidates])
    # Stage 10 guards five figures against the package's file itself, stage 11 every
    # held-out figure but the large style's against stage 9's file.
    assert ten.baseline is None and ten.guard == ",".join(rule.GUARDED)
    assert (str(eleven.packaged), [str(r) for r in eleven.runs]) == (
        PACKAGED_SAM, [eleven_c.out])
    assert str(eleven.baseline) == last.export
    assert set(eleven.guard.split(",")) == set(rule.FIGURES) - {"large_point", "large_box"}


def test_the_sam2_tiny_recipe_chains_its_stages_to_the_shipped_file():
    commands = recipe_commands(RECIPES / "sam2_tiny.sh")
    assert len(commands) == 6
    parsed = [build_parser().parse_args(c) for c in commands]
    # Stage 9 did not ship (benchmarks/RESULTS.md): its check is a comment, not a command.
    assert not [words for words in command_lines(RECIPES / "sam2_tiny.sh")
                if "recipes/sam2_ship_validated.py" in words]
    # Stage 5 is two variants on the same clips, grown by the pixel stem, the ViT frozen: two
    # learning rates.
    variant, other = parsed[4:6]
    assert (variant.first_clip, variant.clips, variant.epochs, variant.seed) == (
        other.first_clip, other.clips, other.epochs, other.seed)
    assert variant.out != other.out and variant.init == other.init
    assert {variant.freeze, other.freeze} == {"image_encoder.trunk"}
    assert variant.lr < other.lr and {variant.config, other.config} == {"sam2_tiny_hr"}
    stages = parsed[:5]  # one variant of each stage: the clips they follow
    first, second = stages[:2]
    assert {a.model for a in parsed} == {"sam2"}
    assert first.init is None and first.annotations is None and second.annotations is None
    assert {a.freeze for a in stages[:4]} == {"image_encoder"}
    assert {a.amp for a in parsed} == {"bf16"}
    assert first.export == "src/attnvision/sam2/weights/sam2_tiny.safetensors"
    # Stage 2 starts from stage 1's best, on clips stage 1 never saw, and exports into its
    # own folder: the recipe copies that file into the package only if it validates higher.
    assert second.init == f"{first.out}/best.safetensors"
    assert second.first_clip >= first.first_clip + first.clips
    assert second.export == f"{second.out}/export.safetensors"
    # Stages 3 on start from whichever file the package holds then, on clips no stage before
    # it saw, into their own folders.
    for before, stage in itertools.pairwise(stages[1:]):
        assert stage.init == first.export
        assert stage.first_clip >= before.first_clip + before.clips
    assert all(a.export == f"{a.out}/export.safetensors" for a in parsed[1:])


def test_the_cotracker_tiny_recipe_chains_fifteen_stages_to_the_shipped_file():
    commands = recipe_commands(RECIPES / "cotracker_tiny.sh")
    assert len(commands) == 15
    *stages, eleventh, twelfth, thirteenth, fourteenth, fifteenth = [
        build_parser().parse_args(c) for c in commands]
    # Stages 14 and 15 go on from the stage before's weights, on the clips after its own.
    for before, stage, clips in ((thirteenth, fourteenth, 600), (fourteenth, fifteenth, 300)):
        assert stage.init == f"{before.out}/best.safetensors"
        assert stage.first_clip == before.first_clip + before.clips
        assert (stage.model_resolution, stage.lr, stage.amp, stage.clips) == (
            "240,320", 1.5e-4, "none", clips)
    # Stage 13 goes on from stage 12's weights (which its guard held out of the package), on
    # the clips after stage 12's, at the same size and peak.
    assert thirteenth.init == f"{twelfth.out}/best.safetensors"
    assert thirteenth.first_clip == twelfth.first_clip + twelfth.clips
    assert (thirteenth.model_resolution, thirteenth.lr, thirteenth.amp, thirteenth.clips) == (
        "240,320", 1.5e-4, "none", 400)
    # Stages 11 on train at the size the frame-size step chose, from the package's file, each
    # on clips no stage before it saw, and are judged against that file's own figure at that
    # size (their start.json).
    for before, stage in ((stages[-1], eleventh), (eleventh, twelfth)):
        assert stage.init == stages[-1].init and stage.model_resolution == "240,320"
        assert stage.eval_start and stage.first_clip >= before.first_clip + before.clips
        assert (stage.epochs, stage.lr, stage.amp) == (1, 1.5e-4, "none")
    assert (eleventh.clips, twelfth.clips) == (800, 600)
    first, second = stages[:2]
    assert {a.model for a in stages} == {"cotracker"}
    assert first.init is None and first.export is None
    assert {a.amp for a in stages} == {"bf16"}
    assert (first.clips, first.epochs, first.points, first.lr) == (200, 4, 128, 5e-4)
    assert second.init == f"{first.out}/best.safetensors"
    assert second.first_clip >= first.first_clip + first.clips  # clips stage 1 never saw
    assert (second.clips, second.epochs, second.lr) == (250, 2, 3e-4)
    assert second.export == "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    # Stages 3 on start from the file in the package (stage 2 wrote it; a later stage
    # replaces it only if it validates higher), each on clips no stage before it saw, one
    # epoch at stage 2's learning rate (stages 7 to 10 at half of it), into its own folder.
    clip_counts = (600, 600, 900, 450, 450, 900, 600, 900)
    for before, stage, clips, lr in zip(stages[1:-1], stages[2:], clip_counts,
                                        (3e-4,) * 4 + (1.5e-4,) * 4, strict=True):
        assert stage.init == second.export
        assert stage.first_clip >= before.first_clip + before.clips
        assert (stage.clips, stage.epochs, stage.lr) == (clips, 1, lr)
        assert stage.export == f"{stage.out}/export.safetensors"


def ship_lines(recipe: Path) -> list[list[str]]:
    """The arguments of each ``ship_if_better.py`` call, with ``$runs`` left as it is."""
    text = recipe.read_text().replace("\\\n", " ")
    return [shlex.split(line, comments=True)[2:] for line in text.splitlines()
            if "recipes/ship_if_better.py" in line]


def test_each_later_stage_ships_only_through_the_check_against_every_earlier_one():
    runs = "$runs"
    sam2 = "src/attnvision/sam2/weights/sam2_tiny.safetensors"
    cotracker = "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    assert ship_lines(RECIPES / "sam2_tiny.sh") == [
        ["jf", f"{runs}/sam2_tiny_stage2", sam2, f"{runs}/sam2_tiny"],
        ["jf", f"{runs}/sam2_tiny_stage3", sam2, f"{runs}/sam2_tiny", f"{runs}/sam2_tiny_stage2"],
        ["jf", f"{runs}/sam2_tiny_stage4", sam2, f"{runs}/sam2_tiny", f"{runs}/sam2_tiny_stage2",
         f"{runs}/sam2_tiny_stage3"],
        ["jf", f"{runs}/sam2_tiny_stage5", sam2, f"{runs}/sam2_tiny", f"{runs}/sam2_tiny_stage2",
         f"{runs}/sam2_tiny_stage3", f"{runs}/sam2_tiny_stage4"],
        ["jf", f"{runs}/sam2_tiny_stage5_lr1e-4", sam2, f"{runs}/sam2_tiny",
         f"{runs}/sam2_tiny_stage2", f"{runs}/sam2_tiny_stage3", f"{runs}/sam2_tiny_stage4",
         f"{runs}/sam2_tiny_stage5"]]
    metric = "average_pts_within_thresh"
    assert ship_lines(RECIPES / "cotracker_tiny.sh") == [
        [metric, f"{runs}/cotracker_tiny_stage3", cotracker, f"{runs}/cotracker_tiny_stage2"],
        [metric, f"{runs}/cotracker_tiny_stage4", cotracker, f"{runs}/cotracker_tiny_stage2",
         f"{runs}/cotracker_tiny_stage3"],
        [metric, f"{runs}/cotracker_tiny_stage5", cotracker, f"{runs}/cotracker_tiny_stage2",
         f"{runs}/cotracker_tiny_stage3", f"{runs}/cotracker_tiny_stage4"],
        [metric, f"{runs}/cotracker_tiny_stage6", cotracker, f"{runs}/cotracker_tiny_stage2",
         f"{runs}/cotracker_tiny_stage3", f"{runs}/cotracker_tiny_stage4",
         f"{runs}/cotracker_tiny_stage5"],
        [metric, f"{runs}/cotracker_tiny_stage7", cotracker,
         *(f"{runs}/cotracker_tiny_stage{i}" for i in range(2, 7))],
        [metric, f"{runs}/cotracker_tiny_stage8", cotracker,
         *(f"{runs}/cotracker_tiny_stage{i}" for i in range(2, 8))],
        [metric, f"{runs}/cotracker_tiny_stage9", cotracker,
         *(f"{runs}/cotracker_tiny_stage{i}" for i in range(2, 9))],
        [metric, f"{runs}/cotracker_tiny_stage10", cotracker,
         *(f"{runs}/cotracker_tiny_stage{i}" for i in range(2, 10))],
        [metric, f"{runs}/cotracker_tiny_stage11", cotracker,
         f"{runs}/cotracker_tiny_stage11/start.json"],
        # From stage 12 on, a gain in δ_avg must not cost occlusion accuracy.
        [metric, "--guard", "occlusion_accuracy", f"{runs}/cotracker_tiny_stage12", cotracker,
         f"{runs}/cotracker_tiny_stage12/start.json"]]


@pytest.mark.parametrize(("earlier", "new", "ships"), [((0.685,), 0.70, True),
                                                       ((0.685,), 0.685, False),
                                                       ((0.685,), 0.60, False),
                                                       ((0.685, 0.717), 0.72, True),
                                                       ((0.75, 0.717), 0.72, False)])
def test_ship_if_better_copies_only_a_higher_figure(tmp_path, earlier, new, ships):
    runs = []
    for i, value in enumerate((*earlier, new)):
        run = tmp_path / f"stage{i + 1}"
        run.mkdir()
        (run / "best.json").write_text(json.dumps({"best": {"epoch": 2, "jf": value}}))
        runs.append(run)
    (runs[-1] / "export.safetensors").write_bytes(b"new")
    packaged = tmp_path / "packaged.safetensors"
    packaged.write_bytes(b"before")
    subprocess.run([sys.executable, str(RECIPES / "ship_if_better.py"), "jf", str(runs[-1]),
                    str(packaged), *map(str, runs[:-1])], check=True, capture_output=True)
    assert packaged.read_bytes() == (b"new" if ships else b"before")


@pytest.mark.parametrize(("start", "new", "ships"), [(0.685, 0.69, True), (0.685, 0.685, False)])
def test_ship_if_better_compares_with_a_start_json(tmp_path, start, new, ships):
    stage = tmp_path / "stage11"
    stage.mkdir()
    (stage / "best.json").write_text(json.dumps({"best": {"jf": new}}))
    (stage / "start.json").write_text(json.dumps({"start": {"jf": start}}))
    (stage / "export.safetensors").write_bytes(b"new")
    packaged = tmp_path / "packaged.safetensors"
    packaged.write_bytes(b"before")
    subprocess.run([sys.executable, str(RECIPES / "ship_if_better.py"), "jf", str(stage),
                    str(packaged), str(stage / "start.json")], check=True, capture_output=True)
    assert packaged.read_bytes() == (b"new" if ships else b"before")


@pytest.mark.parametrize(("start", "new", "ships"), [
    ((0.685, 0.853), (0.69, 0.853), True),  # higher, guard held (a tie is no loss)
    ((0.685, 0.853), (0.69, 0.849), False),  # higher, but the guarded figure fell
    ((0.685, 0.853), (0.685, 0.90), False)])  # the guard alone does not ship
def test_ship_if_better_with_a_guard_ships_only_without_a_loss_in_it(tmp_path, start, new,
                                                                     ships):
    stage = tmp_path / "stage12"
    stage.mkdir()
    (stage / "best.json").write_text(json.dumps(
        {"best": {"jf": new[0]}, "metrics": {"eval": {"jf": new[0], "oa": new[1]}}}))
    (stage / "start.json").write_text(json.dumps({"start": {"jf": start[0], "oa": start[1]}}))
    (stage / "export.safetensors").write_bytes(b"new")
    packaged = tmp_path / "packaged.safetensors"
    packaged.write_bytes(b"before")
    done = subprocess.run([sys.executable, str(RECIPES / "ship_if_better.py"), "jf", "--guard",
                           "oa", str(stage), str(packaged), str(stage / "start.json")],
                          check=True, capture_output=True, text=True)
    assert packaged.read_bytes() == (b"new" if ships else b"before")
    assert f"validation oa: in the package {start[1]:.4f}, stage12 {new[1]:.4f}" in done.stdout


def test_ship_if_better_names_a_missing_run_folder_in_one_line_and_copies_nothing(tmp_path):
    stage = tmp_path / "stage2"
    stage.mkdir()
    (stage / "best.json").write_text(json.dumps({"best": {"jf": 0.9}}))
    (stage / "export.safetensors").write_bytes(b"new")
    packaged = tmp_path / "packaged.safetensors"
    packaged.write_bytes(b"before")
    gone = tmp_path / "stage1"
    done = subprocess.run([sys.executable, str(RECIPES / "ship_if_better.py"), "jf", str(stage),
                           str(packaged), str(gone)], capture_output=True, text=True)
    assert done.returncode == 1 and packaged.read_bytes() == b"before"
    assert done.stderr.count("\n") == 1 and str(gone / "best.json") in done.stderr
    assert "Traceback" not in done.stderr


def load_recipe_script(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_resolution_rule_takes_the_best_validation_figure_among_the_fast_sizes():
    choose = load_recipe_script("cotracker_resolution").choose
    rows = [{"size": [192, 256], "delta_avg": 0.64, "fps": 11.7},
            {"size": [256, 256], "delta_avg": 0.68, "fps": 10.4},
            {"size": [240, 320], "delta_avg": 0.68, "fps": 10.1},  # a tie: the smaller wins
            {"size": [288, 384], "delta_avg": 0.70, "fps": 7.9},  # too slow
            {"size": [384, 512], "delta_avg": 0.71, "fps": None}]  # speed never measured
    assert choose(rows, 10.0)["size"] == [256, 256]
    assert choose(rows, 7.0)["size"] == [288, 384]
    assert choose(rows, 12.0) is None


def test_the_resolution_step_rewrites_only_the_header(tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    ship = load_recipe_script("cotracker_resolution").ship
    path = tmp_path / "tiny.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.float16)}
    save_file(tensors, str(path), metadata={"format": "pt", "model_resolution": "192,256",
                                            "seed": "8"})
    ship(str(path), (240, 320), str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["model_resolution"] == "240,320" and meta["seed"] == "8"
    assert "cotracker_resolution.py" in meta["resolution_from"]
    loaded = load_file(str(path))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_the_cotracker_recipe_chooses_the_frame_size_before_any_stage_trains_at_it():
    packaged = "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    lines = command_lines(RECIPES / "cotracker_tiny.sh")
    step = [i for i, words in enumerate(lines) if "recipes/cotracker_resolution.py" in words]
    assert len(step) == 1
    assert lines[step[0]][1:] == ["recipes/cotracker_resolution.py", "--model", packaged,
                                  "--ship", packaged]
    # A stage after the step trains at the chosen size (its export's header says so); one
    # before it at 192 x 256, whose header the step then rewrites.
    for i, words in enumerate(lines):
        if "train" in words and "cotracker" in words:
            assert ("--model-resolution" in words) == (i > step[0])
            if i > step[0]:
                assert words[words.index("--model-resolution") + 1] == "240,320"


def test_the_cotracker_recipe_chooses_the_visibility_cuts_after_the_last_stage_check():
    """The cuts suit the weights they were chosen for: the step comes after the check of the
    last stage, which may replace the package's file."""
    packaged = "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    lines = command_lines(RECIPES / "cotracker_tiny.sh")
    step = [i for i, words in enumerate(lines) if "recipes/cotracker_visibility.py" in words]
    assert len(step) == 1
    assert lines[step[0]][1:] == ["recipes/cotracker_visibility.py", "--clips", "64", "--ship",
                                  packaged]
    checks = [i for i, words in enumerate(lines) if "recipes/ship_if_better.py" in words]
    assert step[0] > max(checks)


def test_stages_13_to_15_are_checked_at_each_files_own_cuts_before_the_visibility_step():
    packaged = "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    lines = command_lines(RECIPES / "cotracker_tiny.sh")
    checks = [i for i, words in enumerate(lines)
              if "recipes/cotracker_ship_calibrated.py" in words]
    outs = [f"$runs/cotracker_tiny_stage{n}" for n in (13, 14, 15)]
    trains = [i for i, words in enumerate(lines) if "--out" in words
              and words[words.index("--out") + 1] in outs]
    step = [i for i, words in enumerate(lines) if "recipes/cotracker_visibility.py" in words]
    assert len(checks) == len(trains) == 3 and len(step) == 1
    order = [i for pair in zip(trains, checks, strict=True) for i in pair] + step
    assert order == sorted(order)
    assert lines[checks[0]][2:] == [outs[0], packaged, "$runs/cotracker_tiny_stage12/start.json"]
    # From stage 14 on: 64 validation clips, both files tracked for δ_avg, AJ guarded, and
    # occlusion accuracy allowed 0.005 lower.
    for check, out in zip(checks[1:], outs[1:], strict=True):
        assert lines[check][2:] == [out, packaged, "--clips", "64", "--aj", "--oa-tolerance",
                                    "0.005"]


def row(threshold, oa, aj=0.0):
    return {"threshold": threshold, "occlusion_accuracy": oa, "average_jaccard": aj}


@pytest.mark.parametrize(("new_delta", "new_oa", "ships"), [
    (0.70, (0.90, 0.90), True),
    (0.70, (0.898, 0.8967), True),  # ties are no loss
    (0.6925, (0.95, 0.95), False),  # no gain in δ_avg
    (0.70, (0.90, 0.89), False),  # online fell
    (0.70, (0.89, 0.95), False)])  # offline fell
def test_the_calibrated_check_needs_a_gain_and_no_loss_at_each_files_own_cuts(
        monkeypatch, new_delta, new_oa, ships):
    monkeypatch.syspath_prepend(str(RECIPES))
    decide = load_recipe_script("cotracker_ship_calibrated").decide
    old = {"offline": row(0.75, 0.898), "online": row(0.5, 0.8967)}
    new = {"offline": row(0.7, new_oa[0]), "online": row(0.45, new_oa[1])}
    reasons = decide(new_delta, 0.6925, new, old)
    assert (not reasons) == ships
    assert all("\n" not in r for r in reasons)


@pytest.mark.parametrize(("new_oa", "new_aj", "ships"), [
    ((0.895, 0.894), (0.565, 0.571), True),  # 0.3 points lower: within 0.005
    ((0.892, 0.8917), (0.565, 0.571), True),  # exactly 0.005 lower online
    ((0.892, 0.891), (0.565, 0.571), False),  # online 0.006 lower
    ((0.90, 0.90), (0.553, 0.571), False),  # offline AJ only equal
    ((0.90, 0.90), (0.56, 0.55), False)])  # online AJ lower
def test_stage_14s_check_guards_aj_and_allows_a_stated_occlusion_loss(
        monkeypatch, new_oa, new_aj, ships):
    monkeypatch.syspath_prepend(str(RECIPES))
    decide = load_recipe_script("cotracker_ship_calibrated").decide
    old = {"offline": row(0.75, 0.897, 0.553), "online": row(0.5, 0.8967, 0.557)}
    new = {"offline": row(0.85, new_oa[0], new_aj[0]),
           "online": row(0.6, new_oa[1], new_aj[1])}
    reasons = decide(0.70, 0.69, new, old, aj=True, oa_tolerance=0.005)
    assert (not reasons) == ships
    assert all("\n" not in r for r in reasons)


@pytest.mark.parametrize(("click", "box", "ships"), [
    (0.76, 0.80, True), (0.76, 0.791, True), (0.76, 0.789, False), (0.747, 0.85, False)])
def test_the_sam2_check_asks_more_from_a_click_and_no_real_loss_from_a_box(
        monkeypatch, click, box, ships):
    monkeypatch.syspath_prepend(str(RECIPES))
    decide = load_recipe_script("sam2_ship_validated").decide
    old = {"click": {"jf": 0.747}, "box": {"jf": 0.80}}
    reasons = decide({"click": {"jf": click}, "box": {"jf": box}}, old, box_tolerance=0.01)
    assert (not reasons) == ships
    assert all("\n" not in r for r in reasons)


def test_the_large_object_rule_guards_the_held_out_figures_and_ranks_by_the_horse():
    rule = load_recipe_script("sam_tiny_large")
    packaged = {"point": 0.806, "points3": 0.894, "box": 0.873, "text": 0.806,
                "packed_point": 0.798, "coins": 0.802, "horse": 0.181}
    good = {**packaged, "point": 0.797, "horse": 0.5}  # 0.009 lower: within the tolerance
    better = {**good, "horse": 0.7}
    coins = {**better, "horse": 0.9, "coins": 0.79}
    slipped = {**better, "horse": 0.95, "packed_point": 0.787}
    assert rule.failures(good, packaged) == []
    assert rule.failures(coins, packaged) == ["coins 0.7900 < 0.8"]
    assert rule.failures(slipped, packaged) == ["packed_point 0.7870 < 0.7980 - 0.01"]
    assert rule.failures(packaged, packaged) == ["horse 0.1810 <= 0.1810"]
    assert rule.choose(packaged, {"a": good, "b": better, "c": coins, "d": slipped}) == "b"
    assert rule.choose(packaged, {"c": coins, "d": slipped}) is None


def test_guarding_an_earlier_files_figures_lets_the_package_compete():
    rule = load_recipe_script("sam_tiny_large")
    guard = ("point", "repeated_point")
    stage9 = {"point": 0.806, "repeated_point": 0.784, "coins": 0.802, "horse": 0.181}
    package = {**stage9, "point": 0.797, "repeated_point": 0.756, "horse": 0.294}
    mended = {**package, "repeated_point": 0.780, "horse": 0.25}
    further = {**package, "horse": 0.6}  # the horse higher, look-alikes still 0.028 under
    assert rule.failures(package, stage9, guard) == [
        "repeated_point 0.7560 < 0.7840 - 0.01"]
    assert rule.choose(stage9, {"packaged": package, "a": mended, "b": further}, guard) == "a"
    # A package that qualifies stays unless a candidate's horse is higher; a tie keeps it.
    assert rule.choose(stage9, {"packaged": mended, "a": {**mended}}, guard) == "packaged"
    assert rule.choose(stage9, {"packaged": package, "b": further}, guard) is None


def test_the_large_object_step_says_what_is_missing_and_keeps_the_file(tmp_path):
    packaged = tmp_path / "sam_tiny.safetensors"
    packaged.write_bytes(b"before")
    done = subprocess.run([sys.executable, str(RECIPES / "sam_tiny_large.py"), str(packaged),
                           str(tmp_path / "stage10c")], capture_output=True, text=True)
    assert done.returncode == 2 and packaged.read_bytes() == b"before"
    assert "stage10c/export.safetensors" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(RECIPES / "sam_tiny_large.py"), str(packaged),
                           str(tmp_path / "stage11a"), "--guard", "point,horse_mean"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and packaged.read_bytes() == b"before"
    assert "unknown figure horse_mean in --guard" in done.stderr
