"""Copy a stage's exported weights into the package only if it validated higher.

    python recipes/ship_if_better.py METRIC [--guard OTHER] STAGE_DIR PACKAGED_FILE
        EARLIER [EARLIER ...]

Each run folder holds the trainer's ``best.json``, whose ``best[METRIC]`` is its best epoch's
validation figure. The package holds the best of the earlier stages, so STAGE_DIR's
``export.safetensors`` replaces PACKAGED_FILE only if its figure is higher than all of theirs
(a tie keeps the earlier file). An EARLIER that is a ``start.json`` (``train cotracker
--eval-start``) gives ``start[METRIC]``, the starting weights' figure on the same clips at the
run's own size: the comparison for a stage trained at another size than the earlier ones.
``--guard OTHER``: the stage must also not fall below any earlier one in OTHER, a second
validation figure (``metrics.eval[OTHER]`` of its best epoch, ``start[OTHER]`` of a
``start.json``), so that a gain in METRIC bought with a loss elsewhere does not ship. The
rule each recipe states before its runs, as code.
"""

import json
import shutil
import sys
from pathlib import Path

from attnvision.files import atomic_path


def figure(run: Path, metric: str, guard: bool = False) -> float:
    """``run``'s validation ``metric``: the best epoch's (its eval metrics when a guard),
    or a ``start.json``'s."""
    if run.name == "start.json":
        path, keys = run, ("start", metric)
    else:
        path, keys = run / "best.json", (("metrics", "eval", metric) if guard
                                          else ("best", metric))
    try:
        value = json.loads(path.read_text())
        for key in keys:
            value = value[key]
        return float(value)
    except (OSError, ValueError, KeyError, TypeError) as err:
        # A recipe run again on another machine may lack an earlier stage's folder: say
        # which, and how to check by hand (the earlier figures are in benchmarks/RESULTS.md).
        sys.exit(f"ship_if_better.py: no {'.'.join(keys[:-1])} {metric} in {path} "
                 f"({type(err).__name__}: {err}); give the run folders that exist, or "
                 f"compare with the figure recorded in benchmarks/RESULTS.md")


def copy_export(stage: Path, packaged: str) -> None:
    """STAGE's ``export.safetensors`` into the package, never half-copied."""
    with atomic_path(packaged) as tmp:
        shutil.copyfile(stage / "export.safetensors", tmp)


def conclude(stage: Path, packaged: str, report: dict, reasons: list[str]) -> int:
    """Print ``report`` with the decision as one JSON document, and copy STAGE's export into
    the package if there are no ``reasons`` against it (the recipes' checks that measure
    both files themselves)."""
    print(json.dumps({**report, "ships": not reasons, "why_not": reasons}, indent=2))
    if reasons:
        print(f"{stage.name} does not ship: {'; '.join(reasons)}", file=sys.stderr)
        return 0
    copy_export(stage, packaged)
    print(f"{stage.name} ships", file=sys.stderr)
    return 0


def main(argv: list[str]) -> None:
    guard = None
    if len(argv) > 2 and argv[1] == "--guard":
        guard, argv = argv[2], argv[:1] + argv[3:]
    if len(argv) < 4:
        sys.exit(__doc__)
    metric, stage, packaged, *earlier = argv
    new = figure(Path(stage), metric)
    old = max(figure(Path(run), metric) for run in earlier)
    print(f"validation {metric}: in the package {old:.4f}, {Path(stage).name} {new:.4f}")
    ships = new > old
    if guard is not None:
        new_guard = figure(Path(stage), guard, guard=True)
        old_guard = max(figure(Path(run), guard, guard=True) for run in earlier)
        print(f"validation {guard}: in the package {old_guard:.4f}, {Path(stage).name} "
              f"{new_guard:.4f}")
        ships = ships and new_guard >= old_guard
    if ships:
        copy_export(Path(stage), packaged)
        print(f"{Path(stage).name} ships")
    else:
        print(f"{Path(stage).name} does not ship: the package's file stays")


if __name__ == "__main__":
    main(sys.argv[1:])
