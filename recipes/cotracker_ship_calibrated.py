"""Copy a CoTracker stage's export into the package only if it tracks better and, each file at
its own visibility cuts, calls hidden points no worse.

    python recipes/cotracker_ship_calibrated.py STAGE_DIR PACKAGED_FILE [START_JSON]
        [--clips N] [--aj] [--oa-tolerance T]

The rule of recipes/cotracker_tiny.sh from stage 13 on. (1) The stage's validation δ_avg must
be higher than the package's file's on the same clips at the same size: with START_JSON
(stage 13), the trainer's figure (``best.json``) against ``train cotracker --eval-start``'s
``start.json`` of a run from that file; without it (stage 14 on), both files' exports tracked
on the same ``--clips`` validation clips here. (2) Both files go through the visibility step's
sweep (recipes/cotracker_visibility.py: the first N of the trainer's validation series, 16 by
default, offline and online, each file's cut chosen by that step's rule), and the stage's
validation occlusion accuracy at its cut must be no lower than the package's file's at its
own, offline and online, or at most ``--oa-tolerance`` lower. (3) With ``--aj``, its AJ at
its cut must also be higher than the package's file's at its own, both ways: AJ counts a
point right only where it is called visible, is visible and is within δ of the truth, so it
pays for both position and visibility. A guard at the official cuts, as
``ship_if_better.py --guard`` applies, judges a file at a cut it will not run at once the
visibility step has moved it. On success STAGE_DIR's ``export.safetensors`` replaces
PACKAGED_FILE (atomically; its cuts are then written by the visibility step, which runs next).
The test split is not read. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cotracker_visibility import OFFICIAL, calibrate
from ship_if_better import conclude, figure

from attnvision.commands.cotracker_train import EVAL_CLIPS

METRIC = "average_pts_within_thresh"


def decide(new_delta: float, old_delta: float, new: dict[str, dict[str, Any]],
           old: dict[str, dict[str, Any]], aj: bool = False, oa_tolerance: float = 0.0
           ) -> list[str]:
    """The reasons the stage does not ship (none: it ships)."""
    reasons = []
    if not new_delta > old_delta:
        reasons.append(f"validation δ_avg {new_delta:.4f} is not above {old_delta:.4f}")
    for mode in OFFICIAL:
        mine, theirs = new[mode], old[mode]
        cuts = f"(cut {mine['threshold']} against {theirs['threshold']})"
        if mine["occlusion_accuracy"] < theirs["occlusion_accuracy"] - oa_tolerance:
            allowed = f" - {oa_tolerance}" if oa_tolerance else ""
            reasons.append(f"{mode} occlusion accuracy {mine['occlusion_accuracy']:.4f} is "
                           f"below {theirs['occlusion_accuracy']:.4f}{allowed} {cuts}")
        if aj and not mine["average_jaccard"] > theirs["average_jaccard"]:
            reasons.append(f"{mode} AJ {mine['average_jaccard']:.4f} is not above "
                           f"{theirs['average_jaccard']:.4f} {cuts}")
    return reasons


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", type=Path)
    parser.add_argument("packaged")
    parser.add_argument("start", type=Path, nargs="?", default=None)
    parser.add_argument("--clips", type=int, default=EVAL_CLIPS)
    parser.add_argument("--aj", action="store_true")
    parser.add_argument("--oa-tolerance", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.clips < 1 or not 0.0 <= args.oa_tolerance < 1.0:
        parser.error("--clips must be 1 or more and --oa-tolerance in [0, 1)")
    new = calibrate(str(args.stage / "export.safetensors"), count=args.clips)[2]
    old = calibrate(args.packaged, count=args.clips)[2]
    if args.start is not None:
        new_delta, old_delta = figure(args.stage, METRIC), figure(args.start, METRIC)
    else:  # δ_avg does not depend on the cut; the offline tracks are the trainer's measure
        new_delta, old_delta = new["offline"][METRIC], old["offline"][METRIC]
    return conclude(args.stage, args.packaged,
                    {"stage": str(args.stage), "packaged": args.packaged,
                     "validation_clips": args.clips, "aj": args.aj,
                     "oa_tolerance": args.oa_tolerance,
                     "delta_avg": {"stage": new_delta, "packaged": old_delta},
                     "calibrated": {"stage": new, "packaged": old}},
                    decide(new_delta, old_delta, new, old, args.aj, args.oa_tolerance))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
