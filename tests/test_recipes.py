"""The recipe that made the shipped sam_tiny stays a valid series of commands."""

import itertools
import shlex
from pathlib import Path

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


def test_the_sam2_tiny_recipe_parses_and_writes_the_shipped_file():
    commands = recipe_commands(RECIPES / "sam2_tiny.sh")
    assert len(commands) == 1
    args = build_parser().parse_args(commands[0])
    assert args.model == "sam2" and args.init is None and args.annotations is None
    assert args.freeze == "image_encoder" and args.amp == "bf16"
    assert args.export == "src/attnvision/sam2/weights/sam2_tiny.safetensors"


def test_the_cotracker_tiny_recipe_chains_two_stages_to_the_shipped_file():
    commands = recipe_commands(RECIPES / "cotracker_tiny.sh")
    assert len(commands) == 2
    first, second = (build_parser().parse_args(c) for c in commands)
    assert first.model == second.model == "cotracker"
    assert first.init is None and first.export is None and first.amp == second.amp == "bf16"
    assert (first.clips, first.epochs, first.points, first.lr) == (200, 4, 128, 5e-4)
    assert second.init == f"{first.out}/best.safetensors"
    assert second.first_clip >= first.first_clip + first.clips  # clips stage 1 never saw
    assert (second.clips, second.epochs, second.lr) == (250, 2, 3e-4)
    assert second.export == "src/attnvision/cotracker/weights/cotracker_tiny.safetensors"
