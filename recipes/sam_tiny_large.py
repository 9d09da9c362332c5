"""Stages 10 and 11 of the sam_tiny recipe: measure the package's file and each large-object
candidate the same way, and ship the model the rule picks (written before the runs, in
recipes/sam_tiny.sh).

    python recipes/sam_tiny_large.py PACKAGED_FILE RUN_DIR [RUN_DIR ...]
        [--baseline FILE] [--guard FIGURE,...] [--jobs N] [--threads N]

Each RUN_DIR holds the trainer's ``export.safetensors`` (its best epoch on test scenes 0-63).
A model qualifies if coins >= 0.8, each guarded held-out figure is at most 0.01 under the
baseline's (the package's file unless ``--baseline`` names another), and its horse mean (one
click at a time at 8 points) is higher than the baseline's. The package's file competes with
the candidates: of the models that qualify, the one with the highest horse mean (the first
listed on a tie, the package's file first of all) is the package's file afterwards. With the
package's file as the baseline it cannot qualify (its horse is not higher than its own), which
is stage 10's rule: a candidate replaces it or nothing does. The issue's horse target (>= 0.9
at every click) is reported, not used. Prints one JSON document: every model's figures and
the decision.
"""

import argparse
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from attnvision.files import atomic_path

# Every held-out figure measure() takes, and (by default) the five stage 10 guarded.
FIGURES = ("point", "points3", "box", "box_zoom", "text", "packed_point", "packed_box",
           "repeated_point", "repeated_box", "large_point", "large_box")
GUARDED = ("point", "points3", "box", "text", "packed_point")
TOLERANCE = 0.01
COINS_TARGET = 0.8
HORSE_TARGET = 0.9
PACKAGED = "packaged"


def measure(path: Path, threads: int | None = None) -> dict[str, float]:
    """Every held-out figure of one weights file (test split, scenes from 1000), coins and the
    horse."""
    from attnvision.commands.sam import load_sam
    from attnvision.sam.evaluation import photo_ious, synthetic_miou, text_miou

    if threads:
        torch.set_num_threads(threads)
    sam = load_sam(str(path), None)
    figures = {}
    for style, scenes, modes in (("standard", 100, ("point", "points3", "box", "box_zoom")),
                                 ("packed", 40, ("point", "box")),
                                 ("repeated", 40, ("point", "box")),
                                 ("large", 50, ("point", "box"))):
        found = synthetic_miou(sam, scenes, 1000, modes, style=style)
        prefix = "" if style == "standard" else f"{style}_"
        figures.update({f"{prefix}{m}": found[f"miou_{m}"] for m in modes})
    figures["text"] = text_miou(sam, 100, 1000)["miou_text"]
    photos = photo_ious(sam)
    figures.update(coins=photos["coins_miou"], horse=photos["horse_iou"],
                   horse_min=photos["horse_min_iou"])
    return figures


def failures(model: dict[str, float], baseline: dict[str, float],
             guard: tuple[str, ...] = GUARDED) -> list[str]:
    """Why a model does not qualify (empty: it does)."""
    why = [f"{k} {model[k]:.4f} < {baseline[k]:.4f} - {TOLERANCE}"
           for k in guard if model[k] < baseline[k] - TOLERANCE]
    if model["coins"] < COINS_TARGET:
        why.append(f"coins {model['coins']:.4f} < {COINS_TARGET}")
    if model["horse"] <= baseline["horse"]:
        why.append(f"horse {model['horse']:.4f} <= {baseline['horse']:.4f}")
    return why


def choose(baseline: dict[str, float], models: dict[str, dict[str, float]],
           guard: tuple[str, ...] = GUARDED) -> str | None:
    """The qualifying model with the highest horse mean (the first listed on a tie)."""
    qualified = [name for name, figures in models.items()
                 if not failures(figures, baseline, guard)]
    return max(qualified, key=lambda name: models[name]["horse"], default=None)


def ship(source: Path, packaged: Path) -> None:
    """Replace the package's file in one step: a copy beside it, then a rename."""
    with atomic_path(packaged) as tmp:
        shutil.copyfile(source, tmp)


def measure_all(paths: list[Path], jobs: int, threads: int | None) -> list[dict[str, float]]:
    """measure() for each file, ``jobs`` files at a time, each process with ``threads``."""
    if jobs <= 1:
        return [measure(p, threads) for p in paths]
    # spawn: a forked child would inherit the parent's OpenMP state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        return list(pool.map(measure, paths, [threads or 1] * len(paths)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packaged", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--baseline", type=Path,
                        help="the file whose figures the guards compare with (default: the "
                             "package's file)")
    parser.add_argument("--guard", default=",".join(GUARDED),
                        help=f"comma-separated figures that may fall by at most {TOLERANCE} "
                             f"(of {', '.join(FIGURES)}; default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="files measured at once, one process each (default: 1)")
    parser.add_argument("--threads", type=int,
                        help="torch threads per process (default: torch's; 1 with --jobs)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    guard = tuple(args.guard.split(","))
    unknown = sorted(set(guard) - set(FIGURES))
    if unknown:
        parser.exit(2, f"sam_tiny_large.py: unknown figure {', '.join(unknown)} in --guard; "
                       f"choose from {', '.join(FIGURES)}\n")
    exports = {run.name: run / "export.safetensors" for run in args.runs}
    files = {PACKAGED: args.packaged, **exports}
    if args.baseline is not None:
        files["baseline"] = args.baseline
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        parser.exit(2, f"sam_tiny_large.py: no weights at {', '.join(missing)}\n")
    measured = dict(zip(files, measure_all(list(files.values()), args.jobs, args.threads),
                        strict=True))
    baseline = measured.pop("baseline", measured[PACKAGED])
    chosen = choose(baseline, measured, guard)
    if chosen not in (None, PACKAGED):
        ship(exports[chosen], args.packaged)
    report = {"baseline": str(args.baseline or args.packaged), "guard": list(guard),
              "baseline_figures": baseline, "models": measured,
              "failures": {name: failures(f, baseline, guard) for name, f in measured.items()},
              "horse_target_met": {name: f["horse_min"] >= HORSE_TARGET
                                   for name, f in measured.items()},
              "ships": chosen or PACKAGED}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
