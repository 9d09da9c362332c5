"""The recipe that made the shipped sam_tiny stays a valid series of commands."""

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


def recipe_commands(recipe: Path = RECIPE) -> list[list[str]]:
    """Each `attnvision train ...` line's arguments (after any VAR=value prefix)."""
    text = recipe.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line.strip(), comments=True)
        if "attnvision" in words and words[words.index("attnvision") + 1:][:1] == ["train"]:
            commands.append(words[words.index("attnvision") + 1:])
    return commands


def test_every_stage_parses_and_chains_to_the_shipped_file():
    commands = recipe_commands()
    assert len(commands) == 9
    parsed = [build_parser().parse_args(c) for c in commands]
    assert [a.model for a in parsed] == ["sam"] * 9
    # Each stage starts from the best epoch of the one before, on scenes no stage saw (scenes
    # skipped between two stages went to endings tried and dropped).
    for before, after in itertools.pairwise(parsed):
        assert after.init == f"{before.out}/best.safetensors"
        first = before.first_scene + (before.scenes or SYNTHETIC_RECIPE["scenes"])
        assert after.first_scene >= first
    last = parsed[-1]
    assert last.export == "src/attnvision/sam/weights/sam_tiny.safetensors"
    assert last.text and "packed" in last.scene_style and last.freeze is None
    # Stages 6 and 7 move the model to 384 then 512 px; the others keep their --init's size.
    assert [a.img_size for a in parsed] == [None] * 5 + [384, 512, None, None]
    assert [a.export for a in parsed[:-1]] == [None] * 8  # one stage writes the package's file


def test_the_sam2_tiny_recipe_chains_three_stages_to_the_shipped_file():
    commands = recipe_commands(RECIPES / "sam2_tiny.sh")
    assert len(commands) == 3
    first, second, third = (build_parser().parse_args(c) for c in commands)
    assert first.model == second.model == third.model == "sam2"
    assert first.init is None and first.annotations is None and second.annotations is None
    assert first.freeze == second.freeze == third.freeze == "image_encoder"
    assert first.amp == second.amp == third.amp == "bf16"
    assert first.export == "src/attnvision/sam2/weights/sam2_tiny.safetensors"
    # Stage 2 starts from stage 1's best, on clips stage 1 never saw, and exports into its
    # own folder: the recipe copies that file into the package only if it validates higher.
    assert second.init == f"{first.out}/best.safetensors"
    assert second.first_clip >= first.first_clip + first.clips
    assert second.export == f"{second.out}/export.safetensors"
    # Stage 3 starts from whichever file the package holds then, on clips neither saw.
    assert third.init == first.export
    assert third.first_clip >= second.first_clip + second.clips
    assert third.export == f"{third.out}/export.safetensors"


@pytest.mark.parametrize(("first_jf", "second_jf", "ships"), [(0.685, 0.70, True),
                                                               (0.685, 0.685, False),
                                                               (0.685, 0.60, False)])
def test_the_sam2_tiny_recipe_ships_stage_2_only_if_it_validates_higher(
        tmp_path, first_jf, second_jf, ships):
    # The recipe's own check, run as the recipe runs it, on two made-up runs.
    text = (RECIPES / "sam2_tiny.sh").read_text()
    check = text.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    runs = tmp_path / "runs"
    for name, jf in (("sam2_tiny", first_jf), ("sam2_tiny_stage2", second_jf)):
        (runs / name).mkdir(parents=True)
        (runs / name / "best.json").write_text(json.dumps({"best": {"epoch": 3, "jf": jf}}))
    (runs / "sam2_tiny_stage2" / "export.safetensors").write_bytes(b"stage 2")
    shipped = tmp_path / "src/attnvision/sam2/weights/sam2_tiny.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"stage 1")
    subprocess.run([sys.executable, "-", str(runs)], input=check, text=True, cwd=tmp_path,
                   check=True, capture_output=True)
    assert shipped.read_bytes() == (b"stage 2" if ships else b"stage 1")


@pytest.mark.parametrize(("jfs", "ships"), [((0.685, 0.717, 0.73), True),
                                            ((0.685, 0.717, 0.717), False),
                                            ((0.75, 0.717, 0.73), False),
                                            ((0.685, 0.60, 0.70), True)])
def test_the_sam2_tiny_recipe_ships_stage_3_only_if_it_beats_the_packaged_file(
        tmp_path, jfs, ships):
    text = (RECIPES / "sam2_tiny.sh").read_text()
    check = text.split("<<'PY'\n")[2].split("\nPY\n", 1)[0]
    runs = tmp_path / "runs"
    for name, jf in zip(("sam2_tiny", "sam2_tiny_stage2", "sam2_tiny_stage3"), jfs,
                        strict=True):
        (runs / name).mkdir(parents=True)
        (runs / name / "best.json").write_text(json.dumps({"best": {"epoch": 2, "jf": jf}}))
    (runs / "sam2_tiny_stage3" / "export.safetensors").write_bytes(b"stage 3")
    shipped = tmp_path / "src/attnvision/sam2/weights/sam2_tiny.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"before")
    subprocess.run([sys.executable, "-", str(runs)], input=check, text=True, cwd=tmp_path,
                   check=True, capture_output=True)
    assert shipped.read_bytes() == (b"stage 3" if ships else b"before")


def test_the_cotracker_tiny_recipe_chains_four_stages_to_the_shipped_file():
    commands = recipe_commands(RECIPES / "cotracker_tiny.sh")
    assert len(commands) == 4
    first, second, third, fourth = (build_parser().parse_args(c) for c in commands)
    assert {a.model for a in (first, second, third, fourth)} == {"cotracker"}
    assert first.init is None and first.export is None
    assert first.amp == second.amp == third.amp == "bf16"
    assert (first.clips, first.epochs, first.points, first.lr) == (200, 4, 128, 5e-4)
    assert second.init == f"{first.out}/best.safetensors"
    assert second.first_clip >= first.first_clip + first.clips  # clips stage 1 never saw
    assert (second.clips, second.epochs, second.lr) == (250, 2, 3e-4)
    assert second.export == "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    # Stage 3 starts from the file stage 2 wrote, on clips neither saw, into its own folder:
    # the recipe copies its export into the package only if it validates higher.
    assert third.init == second.export
    assert third.first_clip >= second.first_clip + second.clips
    assert (third.clips, third.epochs, third.lr) == (600, 1, 3e-4)
    assert third.export == f"{third.out}/export.safetensors"
    # Stage 4 as stage 3, from whichever file the package holds then, on the next clips.
    assert fourth.init == second.export
    assert fourth.first_clip >= third.first_clip + third.clips
    assert (fourth.clips, fourth.epochs, fourth.lr) == (600, 1, 3e-4)
    assert fourth.export == f"{fourth.out}/export.safetensors"


@pytest.mark.parametrize(("second", "third", "ships"), [(0.501, 0.52, True),
                                                         (0.501, 0.501, False),
                                                         (0.501, 0.45, False)])
def test_the_cotracker_tiny_recipe_ships_stage_3_only_if_it_validates_higher(
        tmp_path, second, third, ships):
    text = (RECIPES / "cotracker_tiny.sh").read_text()
    check = text.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    runs = tmp_path / "runs"
    for name, delta in (("cotracker_tiny_stage2", second), ("cotracker_tiny_stage3", third)):
        (runs / name).mkdir(parents=True)
        (runs / name / "best.json").write_text(
            json.dumps({"best": {"epoch": 1, "average_pts_within_thresh": delta}}))
    (runs / "cotracker_tiny_stage3" / "export.safetensors").write_bytes(b"stage 3")
    shipped = tmp_path / "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"stage 2")
    subprocess.run([sys.executable, "-", str(runs)], input=check, text=True, cwd=tmp_path,
                   check=True, capture_output=True)
    assert shipped.read_bytes() == (b"stage 3" if ships else b"stage 2")


@pytest.mark.parametrize(("deltas", "ships"), [((0.501, 0.531, 0.55), True),
                                               ((0.501, 0.531, 0.531), False),
                                               ((0.501, 0.531, 0.52), False),
                                               ((0.501, 0.45, 0.52), True)])
def test_the_cotracker_tiny_recipe_ships_stage_4_only_if_it_beats_the_packaged_file(
        tmp_path, deltas, ships):
    text = (RECIPES / "cotracker_tiny.sh").read_text()
    check = text.split("<<'PY'\n")[2].split("\nPY\n", 1)[0]
    runs = tmp_path / "runs"
    names = ("cotracker_tiny_stage2", "cotracker_tiny_stage3", "cotracker_tiny_stage4")
    for name, delta in zip(names, deltas, strict=True):
        (runs / name).mkdir(parents=True)
        (runs / name / "best.json").write_text(
            json.dumps({"best": {"epoch": 1, "average_pts_within_thresh": delta}}))
    (runs / "cotracker_tiny_stage4" / "export.safetensors").write_bytes(b"stage 4")
    shipped = tmp_path / "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"before")
    subprocess.run([sys.executable, "-", str(runs)], input=check, text=True, cwd=tmp_path,
                   check=True, capture_output=True)
    assert shipped.read_bytes() == (b"stage 4" if ships else b"before")
