"""The ``attnvision`` command: one entry point, one sub-command per verb.

Conventions (shared/DESIGN.md): ``--json`` prints exactly one JSON document on stdout; logs and
progress go to stderr; exit 0 success, 2 bad input (one line, no traceback), 3 partial success
(some inputs skipped, each reported), 1 unexpected failure.

Each module in ``attnvision.commands`` registers its own sub-commands and options (see
``attnvision.commands.options``); this module holds what they all share: the parser that
reports usage mistakes as one line, the report of a result, and the exit codes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from attnvision import __version__
from attnvision.commands import (
    cotracker_train,
    course,
    demo,
    diffusion_eval,
    diffusion_train,
    export_onnx,
    generate,
    sam,
    sam2_eval,
    sam2_train,
    sam_train,
    segment_all,
    segment_video,
    serve,
    track,
    track_eval,
    vit,
)
from attnvision.commands.options import Command, add_command
from attnvision.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _human(result: dict[str, Any]) -> list[str]:
    """The lines a person reads when --json is not given."""
    if result.get("command") == "segment-all":
        return [f"{result['annotations']} masks in {result['segmented']} of "
                f"{result['images']} images ({result['already_done']} done earlier) -> "
                f"{result['coco']}"] + [f"skipped {s['path']}: {s['error']}"
                                        for s in result["skipped"]]
    if result.get("command") == "serve":
        return [f"served {result['url']} (model {result['model']}); {result['images']} images "
                f"kept in {result['data_dir']}"]
    if result.get("command") == "eval sam2":
        lines = [f"{'sequence':<24} {'J&F':>6} {'J':>6} {'F':>6}"]
        for name, seq in result["sequences"].items():
            lines.append(f"{name:<24} {seq['J&F']:6.3f} {seq['J']:6.3f} {seq['F']:6.3f}")
        lines.append(f"{'mean over ' + str(result['objects']) + ' objects':<24} "
                     f"{result['J&F']:6.3f} {result['J']:6.3f} {result['F']:6.3f}")
        lines += result.get("summary", [])  # --synthetic: hidden objects found again, speed
        return lines + [f"wrote {f}" for f in result["files"].values()]
    if result.get("command") == "track":
        points = f"{result['points']} point{'s' if result['points'] != 1 else ''}"
        return [f"tracked {points} through {result['frames']} frames in "
                f"{result['seconds']:.1f} s ({result['visible']:.0%} visible)"] + [
            f"wrote {f}" for f in result["files"].values()]
    if result.get("command") == "generate":
        return [f"drew {result['count']} images in {result['seconds']:.1f} s "
                f"({result['seconds_per_image']:.2f} s each, {result['steps']} "
                f"{result['sampler']} steps, guidance {result['guidance']:g})",
                f"wrote {len(result['images'])} PNG files and {result['grid']}"]
    if result.get("command") == "eval diffusion":
        return result["summary"] + [f"wrote {f}" for f in result["files"].values()]
    if result.get("command") == "eval track":
        return result["summary"] + [f"wrote {f}" for f in result["files"].values()]
    if result.get("command") == "train sam2":
        best = result["best"]
        chosen = (f"best J&F {best['jf']:.3f} (epoch {best['epoch']})" if best
                  else "no validation (--eval-clips 0)")
        return [f"trained {result['epochs']} epochs in {result['seconds']:.0f} s; last loss "
                f"{result['train_loss']:.4f}; {chosen}"] + [
            f"wrote {f}" for f in result["files"].values()]
    if result.get("command") == "train cotracker":
        best = result["best"]
        chosen = (f"best δ_avg {best['average_pts_within_thresh']:.3f} (epoch {best['epoch']})"
                  if best else "no validation (--eval-clips 0)")
        return [f"trained {result['epochs']} epochs in {result['seconds']:.0f} s; last loss "
                f"{result['train_loss']:.4f}; {chosen}"] + [
            f"wrote {f}" for f in result["files"].values()]
    lines = []
    if "accuracy" in result:
        lines.append(f"{result['dataset']} test accuracy: {result['accuracy']:.2%}")
    for name, acc in result.get("per_class_accuracy", {}).items():
        lines.append(f"  class {name}: {acc:.2%}")
    if "checkpoint" in result and "epochs" in result:  # a training run
        lines.append(f"trained {result['epochs']} epochs in {result['seconds']:.0f} s; "
                     f"weights: {result['checkpoint']}")
    for m in result.get("masks", []):
        lines.append(f"mask score {m['score']:.3f}, area {m['area']} px -> {m['file']}")
    for r in result.get("results", []):
        if "top_k" in r:
            tops = ", ".join(f"{t['class']} ({t['probability']:.1%})" for t in r["top_k"])
            lines.append(f"{r['path']}: {tops}")
        else:
            lines.append(f"{r['path']}: {r['prediction']} ({r['probability']:.1%}) -> "
                         f"{r['picture']}")
    files = result.get("files", {})
    if not result.get("results") and not result.get("masks"):
        lines += [f"wrote {f}" for f in (files.values() if isinstance(files, dict) else files)]
    if "index" in result:
        lines.append(f"open {result['index']} to see them all")
    return lines


def _run(command: Command, args: argparse.Namespace) -> int:
    """Run a command and report its result: one JSON document with --json, else lines for a
    person; exit code 3 when some inputs were skipped."""
    result = command(args)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
        return 0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(_human(result)))
    return 3 if result.get("skipped") else 0


def _group(commands: argparse._SubParsersAction, name: str,
           help: str) -> argparse._SubParsersAction:
    """A command whose sub-commands are the models it works on: ``attnvision train vit``."""
    return add_command(commands, name, help).add_subparsers(
        dest="model", metavar="MODEL", required=True, parser_class=_Parser)


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser, each registered by its module in attnvision.commands; the order
    of the calls is the order of ``attnvision --help``."""
    parser = _Parser(prog="attnvision",
                     description="Attention models for image analysis, from patch tokens to "
                                 "Segment Anything.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo.register(commands)
    course.register(commands)
    train = _group(commands, "train", "train a model")
    vit.register_train(train)
    sam_train.register_train(train)
    sam2_train.register_train(train)
    cotracker_train.register_train(train)
    diffusion_train.register_train(train)
    evaluate = _group(commands, "eval", "evaluate a model")
    vit.register_eval(evaluate)
    sam_train.register_eval(evaluate)
    sam2_eval.register_eval(evaluate)
    track_eval.register_eval(evaluate)
    diffusion_eval.register_eval(evaluate)
    vit.register(commands)
    sam.register(commands)
    segment_video.register(commands)
    track.register(commands)
    generate.register(commands)
    segment_all.register(commands)
    export_onnx.register(commands)
    serve.register(commands)
    explain = _group(commands, "explain", "show where a model looks")
    vit.register_explain(explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "func", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    name = " ".join(filter(None, [args.command, getattr(args, "model", None)]))
    try:
        return _run(command, args)
    except UserError as e:
        print(f"attnvision {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnvision: interrupted", file=sys.stderr)
        return 130
