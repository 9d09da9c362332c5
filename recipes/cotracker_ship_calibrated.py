"""Copy a CoTracker stage's export into the package only if it tracks better and, each file at
its own visibility cuts, calls hidden points no worse.

    python recipes/cotracker_ship_calibrated.py STAGE_DIR PACKAGED_FILE START_JSON

The rule of recipes/cotracker_tiny.sh from stage 13 on. (1) The stage's validation δ_avg
(``best.json``) must be higher than the package's file's on the same clips at the same size
(START_JSON: ``train cotracker --eval-start``'s ``start.json`` of a run from that file).
(2) Both files go through the visibility step's sweep (recipes/cotracker_visibility.py: the
trainer's 16 validation clips, offline and online, each file's cut chosen by that step's
rule), and the stage's validation occlusion accuracy at its cut must be no lower than the
package's file's at its own, offline and online. A guard at the official cuts, as
``ship_if_better.py --guard`` applies, judges a file at a cut it will not run at once the
visibility step has moved it. On success STAGE_DIR's ``export.safetensors`` replaces
PACKAGED_FILE (atomically; its cuts are then written by the visibility step, which runs
next). The test split is not read. Prints one JSON document.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from cotracker_visibility import OFFICIAL, calibrate
from ship_if_better import copy_export, figure

METRIC = "average_pts_within_thresh"


def decide(new_delta: float, old_delta: float, new: dict[str, dict[str, Any]],
           old: dict[str, dict[str, Any]]) -> list[str]:
    """The reasons the stage does not ship (none: it ships)."""
    reasons = []
    if not new_delta > old_delta:
        reasons.append(f"validation δ_avg {new_delta:.4f} is not above {old_delta:.4f}")
    for mode in OFFICIAL:
        if new[mode]["occlusion_accuracy"] < old[mode]["occlusion_accuracy"]:
            reasons.append(f"{mode} occlusion accuracy {new[mode]['occlusion_accuracy']:.4f} "
                           f"(cut {new[mode]['threshold']}) is below "
                           f"{old[mode]['occlusion_accuracy']:.4f} (cut "
                           f"{old[mode]['threshold']})")
    return reasons


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.exit(__doc__)
    stage, packaged, start = Path(argv[0]), argv[1], Path(argv[2])
    new_delta, old_delta = figure(stage, METRIC), figure(start, METRIC)
    new, old = calibrate(str(stage / "export.safetensors"))[2], calibrate(packaged)[2]
    reasons = decide(new_delta, old_delta, new, old)
    print(json.dumps({"stage": str(stage), "packaged": packaged,
                      "delta_avg": {"stage": new_delta, "packaged": old_delta},
                      "calibrated": {"stage": new, "packaged": old},
                      "ships": not reasons, "why_not": reasons}, indent=2))
    if reasons:
        print(f"{stage.name} does not ship: {'; '.join(reasons)}", file=sys.stderr)
        return 0
    copy_export(stage, packaged)
    print(f"{stage.name} ships", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
