"""Copy a stage's exported weights into the package only if it validated higher.

    python recipes/ship_if_better.py METRIC STAGE_DIR PACKAGED_FILE EARLIER_DIR [EARLIER_DIR ...]

Each run folder holds the trainer's ``best.json``, whose ``best[METRIC]`` is its best epoch's
validation figure. The package holds the best of the earlier stages, so STAGE_DIR's
``export.safetensors`` replaces PACKAGED_FILE only if its figure is higher than all of theirs
(a tie keeps the earlier file). An EARLIER that is a ``start.json`` (``train cotracker
--eval-start``) gives ``start[METRIC]``, the starting weights' figure on the same clips at the
run's own size: the comparison for a stage trained at another size than the earlier ones. The
rule each recipe states before its runs, as code.
"""

import json
import shutil
import sys
from pathlib import Path

from attnvision.files import atomic_path


def best(run: Path, metric: str) -> float:
    path, key = (run, "start") if run.name == "start.json" else (run / "best.json", "best")
    try:
        return float(json.loads(path.read_text())[key][metric])
    except (OSError, ValueError, KeyError, TypeError) as err:
        # A recipe run again on another machine may lack an earlier stage's folder: say
        # which, and how to check by hand (the earlier figures are in benchmarks/RESULTS.md).
        sys.exit(f"ship_if_better.py: no best {metric} in {path} ({type(err).__name__}: "
                 f"{err}); give the run folders that exist, or compare with the figure "
                 f"recorded in benchmarks/RESULTS.md")


def main(argv: list[str]) -> None:
    if len(argv) < 4:
        sys.exit(__doc__)
    metric, stage, packaged, *earlier = argv
    new = best(Path(stage), metric)
    old = max(best(Path(run), metric) for run in earlier)
    print(f"validation {metric}: in the package {old:.4f}, {Path(stage).name} {new:.4f}")
    if new > old:
        with atomic_path(packaged) as tmp:  # never a half-copied file in the package
            shutil.copyfile(Path(stage) / "export.safetensors", tmp)
        print(f"{Path(stage).name} ships")


if __name__ == "__main__":
    main(sys.argv[1:])
