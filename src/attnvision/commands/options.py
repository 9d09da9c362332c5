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
from collections.abc import Callable
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
                   help="bf16 autocast (fast on CPUs with AVX-512 BF16 / AMX, and on GPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for checkpoints and metrics")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --out holds an interrupted run")
