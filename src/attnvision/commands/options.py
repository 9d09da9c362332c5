"""What the command modules share when they register their sub-commands.

Each module in this package has a ``register`` function (``register_train``, ``register_eval``,
``register_explain`` for the models of those groups) that adds its parser with the helpers
below; ``attnvision.cli`` calls them all and reports the results. ``attnvision --help`` builds
every parser, so this module and the top of every command module import the standard library
and ``attnvision.errors`` only: torch, numpy and PIL are imported inside the functions that run
a command (tests/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SAM_SIZES = ["vit_b", "vit_l", "vit_h", "sam_tiny"]  # attnvision.sam.image_encoder.ENCODER_CONFIGS

# What a sub-command runs: its parsed arguments in, its results (one JSON document) out.
Command = Callable[[argparse.Namespace], dict[str, Any]]


def add_command(parent: argparse._SubParsersAction, name: str,
                help: str) -> argparse.ArgumentParser:
    """A sub-command whose one-line summary in the parent's help is also its description."""
    return parent.add_parser(name, help=help, description=help)


def common(p: argparse.ArgumentParser, command: Command) -> None:
    """The options every command takes, and the function it runs; called after the command's
    own options, so that these come last in its help."""
    p.add_argument("--json", action="store_true",
                   help="print one JSON document with the results on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=command)


def precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast, about 2x faster on CPUs with AVX-512 BF16 or AMX "
                        "(default: fp32)")


def img_size_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--img-size", type=int, metavar="PIXELS",
                   help="run the model at this input side, a multiple of its patch size "
                        "(default: the checkpoint's own); the position weights are resampled: "
                        "larger sees small objects better and encodes slower")


def training_options(p: argparse.ArgumentParser, *, epochs: str, batch_size: str, lr: str,
                     weight_decay: float, warmup_epochs: float) -> None:
    """The options of the shared training loop, with each model's recipe as defaults."""
    p.add_argument("--epochs", type=int, help=epochs)
    p.add_argument("--batch-size", type=int, help=batch_size)
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {lr})")
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=warmup_epochs)
    p.add_argument("--amp", choices=["none", "bf16"], default="none",
                   help="bf16 autocast (fast on GPUs and on CPUs with AVX-512 BF16 / AMX; "
                        "emulated, slower than float32, on other CPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for checkpoints and metrics")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --out holds an interrupted run")


def check_out_dir(out: str | os.PathLike[str]) -> None:
    """Say now, before the slow part, if --out cannot be a folder (it is created later, once
    everything has worked, so that a mistake leaves nothing)."""
    from attnvision.errors import UserError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"output folder {path} is an existing file: choose another --out")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder {path} cannot be written ({parent} is not writable): "
                        "choose another --out")


def frame_numbers(option: str, text: str, counts: tuple[int, ...], form: str,
                  example: str) -> list[float]:
    """``--point FRAME,X,Y``-style text as numbers: ``counts`` of them, the first a whole
    frame number; one line naming the option, the expected ``form`` and an ``example``."""
    from attnvision.errors import UserError

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts or not all(math.isfinite(v) for v in values):
        raise UserError(f"--{option} {text!r} is not {form} (e.g. {example})")
    if values[0] != int(values[0]):
        raise UserError(f"--{option} {text!r}: the frame must be a whole number (0 = first)")
    return values


def check_on_frame(what: str, frame: int, xs: Sequence[float], ys: Sequence[float],
                   num_frames: int, height: int, width: int) -> None:
    """A prompt (``what``, as the user wrote it) on a frame of the video and within its
    pixels (0 to width, 0 to height): one line otherwise."""
    from attnvision.errors import UserError

    if not 0 <= frame < num_frames:
        raise UserError(f"{what}: frame {frame} is out of range: the video has "
                        f"{num_frames} frames (0 to {num_frames - 1})")
    if any(not 0 <= x <= width for x in xs) or any(not 0 <= y <= height for y in ys):
        raise UserError(f"{what} is off the frame: the video is {width}x{height} pixels "
                        f"(x 0 to {width}, y 0 to {height})")


def train_log(message: str) -> None:
    """A trainer's line on stderr, from the main process only under torchrun."""
    import sys

    from attnvision.train.ddp import is_main_process

    if is_main_process():
        print(message, file=sys.stderr)


def parse_freeze(text: str | None, parts: tuple[str, ...], all_frozen: str) -> tuple[str, ...]:
    """``--freeze a,b``: the named parts, each one of ``parts``; freezing them all is refused
    with ``all_frozen`` (what would be left to train)."""
    from attnvision.errors import UserError

    names = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    unknown = [p for p in names if p not in parts]
    if unknown:
        raise UserError(f"--freeze {text!r}: unknown part {unknown[0]!r}; choose from "
                        f"{', '.join(parts)} (comma-separated)")
    if set(names) == set(parts):
        raise UserError(f"--freeze leaves {all_frozen} to train: drop one of the parts")
    return names


def _run_record(out: Path) -> dict[str, Any] | None:
    """The model.json of a run the training loop would resume in ``out`` (its state and its
    record both there), or None: none there, or a record that cannot be read (the loop itself
    says what is wrong with the folder)."""
    import json

    state, info = out / "train_state.pt", out / "model.json"
    if not (state.exists() and info.exists()):
        return None
    try:
        record = json.loads(info.read_text())
    except (OSError, ValueError):  # json.JSONDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) else None


def check_resumable(out: Path, metadata: dict[str, Any], model: str,
                    record: dict[str, Any] | None = None) -> None:
    """A run about to resume in ``out`` must have the settings ``metadata`` it was started
    with (the training loop compares its own; these are the ``model`` trainer's): one line
    naming what changed otherwise. ``record``: the run's model.json, if already read."""
    from attnvision.errors import UserError

    record = record if record is not None else _run_record(out)
    if record is None:
        return
    saved = record.get("metadata", {})
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in metadata.items()
               if k in saved and saved[k] != v]
    if changed:
        raise UserError(f"{out} holds a run with other {model} settings "
                        f"({'; '.join(changed)}): use another --out, or --no-resume to start "
                        "over")


def resume_epochs(out: Path, metadata: dict[str, Any], model: str, train_set: Any,
                  resume: bool) -> tuple[Path, Callable[[dict], None]]:
    """For a training set that draws each epoch afresh (``set_epoch``): checks that a run to
    resume in ``out`` has these settings, sets the epoch it goes on at, and returns the folder
    (made now, after every check) and fit's ``on_epoch_end`` that moves the set on."""
    from attnvision.files import ensure_dir

    record = _run_record(out) if resume else None
    done = 0  # the last finished epoch of the run fit will resume
    if record is not None:
        check_resumable(out, metadata, model, record)
        try:
            done = int(record.get("epoch", 0))
        except (ValueError, TypeError):
            done = 0
    train_set.set_epoch(done + 1)

    def next_epoch(record: dict) -> None:
        train_set.set_epoch(record["epoch"] + 1)

    return ensure_dir(out), next_epoch
