"""Stage 10 of the sam_tiny recipe: measure the package's file and each large-object candidate
the same way, and ship the candidate the rule picks (written before the runs, in
recipes/sam_tiny.sh).

    python recipes/sam_tiny_large.py PACKAGED_FILE RUN_DIR [RUN_DIR ...] [--threads N]

Each RUN_DIR holds the trainer's ``export.safetensors`` (its best epoch on test scenes 0-63).
A candidate qualifies if coins >= 0.8, each of the five synthetic figures below is at most
0.01 under the package file's, and its horse mean (one click at a time at 8 points) is higher
than the package file's; the qualifying candidate with the highest horse mean replaces
PACKAGED_FILE. The issue's horse target (>= 0.9 at every click) is reported, not used.
Prints one JSON document: every model's figures and the decision.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from attnvision.files import atomic_path

# The five held-out synthetic figures that may fall by at most TOLERANCE.
GUARDED = ("point", "points3", "box", "text", "packed_point")
TOLERANCE = 0.01
COINS_TARGET = 0.8
HORSE_TARGET = 0.9


def measure(path: Path) -> dict[str, float]:
    """The rule's figures for one weights file, plus the large style's (reported only)."""
    from attnvision.commands.sam import load_sam
    from attnvision.sam.evaluation import photo_ious, synthetic_miou, text_miou

    sam = load_sam(str(path), None)
    standard = synthetic_miou(sam, 100, 1000, ("point", "points3", "box"))
    packed = synthetic_miou(sam, 40, 1000, ("point",), style="packed")
    large = synthetic_miou(sam, 50, 1000, ("point", "box"), style="large")
    text = text_miou(sam, 100, 1000)
    photos = photo_ious(sam)
    return {"point": standard["miou_point"], "points3": standard["miou_points3"],
            "box": standard["miou_box"], "text": text["miou_text"],
            "packed_point": packed["miou_point"], "large_point": large["miou_point"],
            "large_box": large["miou_box"], "coins": photos["coins_miou"],
            "horse": photos["horse_iou"], "horse_min": photos["horse_min_iou"]}


def failures(candidate: dict[str, float], packaged: dict[str, float]) -> list[str]:
    """Why a candidate does not qualify (empty: it does)."""
    why = [f"{k} {candidate[k]:.4f} < {packaged[k]:.4f} - {TOLERANCE}"
           for k in GUARDED if candidate[k] < packaged[k] - TOLERANCE]
    if candidate["coins"] < COINS_TARGET:
        why.append(f"coins {candidate['coins']:.4f} < {COINS_TARGET}")
    if candidate["horse"] <= packaged["horse"]:
        why.append(f"horse {candidate['horse']:.4f} <= {packaged['horse']:.4f}")
    return why


def choose(packaged: dict[str, float], candidates: dict[str, dict[str, float]]) -> str | None:
    """The qualifying candidate with the highest horse mean (the first listed on a tie)."""
    qualified = [name for name, figures in candidates.items()
                 if not failures(figures, packaged)]
    return max(qualified, key=lambda name: candidates[name]["horse"], default=None)


def ship(source: Path, packaged: Path) -> None:
    """Replace the package's file in one step: a copy beside it, then a rename."""
    with atomic_path(packaged) as tmp:
        shutil.copyfile(source, tmp)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("packaged", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    exports = {run.name: run / "export.safetensors" for run in args.runs}
    missing = [str(p) for p in exports.values() if not p.is_file()]
    if missing:
        parser.exit(2, f"sam_tiny_large.py: no exported weights at {', '.join(missing)}\n")
    packaged = measure(args.packaged)
    candidates = {name: measure(path) for name, path in exports.items()}
    chosen = choose(packaged, candidates)
    if chosen is not None:
        ship(exports[chosen], args.packaged)
    report = {"packaged": packaged, "candidates": candidates,
              "failures": {name: failures(f, packaged) for name, f in candidates.items()},
              "horse_target_met": {name: f["horse_min"] >= HORSE_TARGET
                                   for name, f in {"packaged": packaged, **candidates}.items()},
              "ships": chosen}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
