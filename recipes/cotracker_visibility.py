"""Where a CoTracker file cuts visibility, chosen on validation clips.

    python recipes/cotracker_visibility.py [--model FILE] [--thresholds 0.05 0.1 ...]
        [--clips N] [--ship PATH]

A point is visible where the offline predictor's visibility probability, or the online
predictor's visibility x confidence, exceeds a threshold: the official 0.9 and 0.6, which suit
the released models. A small model is sure of itself in other places, and its file may
record its own cuts (``offline_visible_threshold``, ``online_visible_threshold`` in its
header; :func:`attnvision.cotracker.checkpoints.stored_thresholds`). This tracks the
trainer's 16 validation clips (train split, never trained on; 64 points each, the trainer's
figures), or the first ``--clips`` of that series (the trainer's 16 among them), once offline
and once online at the file's own frame size, and reads occlusion accuracy, AJ and δ_avg at
every threshold from the same scores
(:func:`attnvision.cotracker.synthetic_eval.sweep_visibility`).

With --ship, the rule of recipes/cotracker_tiny.sh: for each way of running, the threshold with
the highest validation AJ (a tie keeps the one nearer the official cut), if its validation
occlusion accuracy is no lower than at the official cut (else the official cut), is written
into PATH's header; the tensors are copied as they are. The test split is not read.

Why AJ and not occlusion accuracy itself: most points are visible in most frames, so
occlusion accuracy alone climbs towards the share of visible points as the threshold falls
and calls more points visible, however far off their tracks are; AJ counts a point called
visible as right only where it is both visible and within δ of the truth, so it pays for
both kinds of mistake. Prints one JSON document, with the occlusion accuracy of calling every
point visible for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from attnvision.commands.cotracker_train import EVAL_CLIPS, EVAL_POINTS, EVAL_SIZE
from attnvision.cotracker.build import build_cotracker
from attnvision.cotracker.checkpoints import THRESHOLD_KEYS
from attnvision.cotracker.configs import OFFLINE_THRESHOLD, ONLINE_THRESHOLD
from attnvision.cotracker.pretrained import shipped_checkpoint
from attnvision.cotracker.synthetic_eval import cotracker_tracker, sweep_visibility
from attnvision.cotracker.training_data import validation_clips
from attnvision.weights import read_metadata, restamp

THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]  # 0.05 .. 0.95, the official cuts too
OFFICIAL = {"offline": OFFLINE_THRESHOLD, "online": ONLINE_THRESHOLD}


def sweep(model_file: str, thresholds: list[float], count: int = EVAL_CLIPS
          ) -> dict[str, list[dict[str, Any]]]:
    """Each way of running's rows (:func:`sweep_visibility`) on the first ``count``
    validation clips."""
    rows = {}
    clips = None
    for mode in ("offline", "online"):
        model = build_cotracker(model_file, offline=mode == "offline")
        if clips is None:
            clips = validation_clips(count, frames=model.config.window_len, size=EVAL_SIZE)
        tracker = cotracker_tracker(model, online=mode == "online", scores=True)
        rows[mode] = sweep_visibility(tracker, clips, thresholds, points=EVAL_POINTS,
                                      progress=True)
    return rows


def choose(rows: list[dict[str, Any]], official: float) -> dict[str, Any]:
    """The rule: the highest validation AJ (a tie keeps the threshold nearer the official
    one), unless its occlusion accuracy is lower than the official cut's: then that cut."""
    best = max(rows, key=lambda r: (r["average_jaccard"], -abs(r["threshold"] - official)))
    at_official = next(r for r in rows if r["threshold"] == official)
    return best if best["occlusion_accuracy"] >= at_official["occlusion_accuracy"] else at_official


def calibrate(model_file: str, thresholds: list[float] = THRESHOLDS, count: int = EVAL_CLIPS
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float],
                         dict[str, dict[str, Any]]]:
    """The sweep's rows at ``thresholds`` and the official cuts, the occlusion accuracy of
    calling every point visible, and the row the rule chooses, each by way of running, on the
    first ``count`` validation clips."""
    # -1 calls every point visible: the occlusion accuracy to beat, never a choice
    cuts = sorted(set(thresholds) | set(OFFICIAL.values()))
    rows = sweep(model_file, [-1.0, *cuts], count)
    all_visible = {mode: mode_rows.pop(0)["occlusion_accuracy"]
                   for mode, mode_rows in rows.items()}
    chosen = {mode: choose(mode_rows, OFFICIAL[mode]) for mode, mode_rows in rows.items()}
    return rows, all_visible, chosen


def ship(model_file: str, chosen: dict[str, float], path: str, count: int = EVAL_CLIPS
         ) -> None:
    """``model_file``'s tensors as they are, its header recording the ``chosen`` cuts
    (way of running -> threshold) and the number of validation clips they were chosen on."""
    rule = ("recipes/cotracker_visibility.py: the highest validation AJ without a loss of "
            f"occlusion accuracy, offline and online, on {count} validation clips")
    restamp(model_file, path, {
        **read_metadata(model_file),
        **{THRESHOLD_KEYS[f"{mode}_threshold"]: str(value) for mode, value in chosen.items()},
        "visibility_from": json.dumps(rule)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a CoTracker3 safetensors file of ours (default: the shipped one)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--clips", type=int, default=EVAL_CLIPS,
                        help=f"validation clips to choose on (default {EVAL_CLIPS}, the "
                             "trainer's; more are the same series continued)")
    parser.add_argument("--ship", metavar="PATH", help="write the chosen cuts into PATH")
    args = parser.parse_args()
    if any(not 0.0 <= t < 1.0 for t in args.thresholds):
        parser.error("--thresholds: each must be in [0, 1)")
    if args.clips < 1:
        parser.error(f"--clips must be 1 or more, not {args.clips}")
    model_file = args.model or str(shipped_checkpoint())

    rows, all_visible, best = calibrate(model_file, args.thresholds, args.clips)
    chosen = {mode: row["threshold"] for mode, row in best.items()}
    for mode, row in best.items():
        print(f"{mode}: validation AJ {row['average_jaccard']:.4f}, occlusion accuracy "
              f"{row['occlusion_accuracy']:.4f} at {row['threshold']} (every point visible: "
              f"{all_visible[mode]:.4f})", file=sys.stderr)
    at_official = {mode: next(r for r in mode_rows if r["threshold"] == OFFICIAL[mode])
                   for mode, mode_rows in rows.items()}
    print(json.dumps({"model": model_file, "validation_clips": args.clips,
                      "points": EVAL_POINTS,
                      "rule": "highest average_jaccard, occlusion_accuracy not below the "
                              "official cut's",
                      "all_visible_occlusion_accuracy": all_visible,
                      "official": OFFICIAL, "at_official": at_official, "chosen": chosen,
                      "rows": rows, "shipped_to": args.ship}, indent=2))
    if args.ship:
        ship(model_file, chosen, args.ship, args.clips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
