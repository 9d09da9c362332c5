"""The recipe that made the shipped sam_tiny stays a valid series of commands."""

import itertools
import shlex
from pathlib import Path

from attnvision.cli import build_parser
from attnvision.commands.sam_train import SYNTHETIC_RECIPE

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sam_tiny.sh"


def recipe_commands() -> list[list[str]]:
    text = RECIPE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("attnvision train")]


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
