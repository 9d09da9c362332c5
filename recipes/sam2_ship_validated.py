"""Copy a SAM 2 stage's export into the package only if it tracks better on more validation
clips than a run's epochs were chosen on.

    python recipes/sam2_ship_validated.py STAGE_DIR PACKAGED_FILE [--clips N]
        [--box-tolerance T]

The rule of recipes/sam2_tiny.sh from stage 9 on. The trainer picks a run's best epoch by J&F
from one click on its 16 validation clips, and stages 6 to 8 were judged against the
package's figure on the same 16: a maximum over epochs of a figure that moves by several
points between epochs on 16 clips, so the package's 0.747 (stage 5's best epoch) was itself
a lucky draw to beat. Here both files' exports (float16, as shipped) track the first N clips
of the same validation series (train split from seed 1,000,000, 16 frames, never trained on;
the trainer's 16 among them) from one click and from a box on frame 0
(:func:`attnvision.sam2.synthetic_eval.evaluate_clips`). The stage ships if its click J&F is
higher than the package's file's and its box J&F at most T lower (default 0.01). On success
STAGE_DIR's ``export.safetensors`` replaces PACKAGED_FILE (atomically). The test split is not
read. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ship_if_better import conclude

from attnvision.commands.sam2_train import EVAL_FRAMES
from attnvision.sam2.build import build_sam2
from attnvision.sam2.synthetic_eval import evaluate_clips, held_out_clips
from attnvision.sam2.training_data import VALIDATION_FIRST_SEED

FIGURES = ("jf", "j", "f", "jf_occluded", "reappeared")


def measure(model_file: str, count: int) -> dict[str, dict[str, Any]]:
    """``model_file``'s figures from a click and from a box on the first ``count``
    validation clips."""
    model = build_sam2(None, model_file)
    clips = held_out_clips(count, EVAL_FRAMES, model.image_size,
                           first_seed=VALIDATION_FIRST_SEED, split="train")
    out = {}
    for prompt in ("click", "box"):
        result = evaluate_clips(model, clips, prompt=prompt, progress=True)
        out[prompt] = {k: result[k] for k in FIGURES}
    return out


def decide(new: dict[str, dict[str, Any]], old: dict[str, dict[str, Any]],
           box_tolerance: float = 0.01) -> list[str]:
    """The reasons the stage does not ship (none: it ships)."""
    reasons = []
    if not new["click"]["jf"] > old["click"]["jf"]:
        reasons.append(f"click J&F {new['click']['jf']:.4f} is not above "
                       f"{old['click']['jf']:.4f}")
    if new["box"]["jf"] < old["box"]["jf"] - box_tolerance:
        reasons.append(f"box J&F {new['box']['jf']:.4f} is below {old['box']['jf']:.4f} - "
                       f"{box_tolerance}")
    return reasons


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", type=Path)
    parser.add_argument("packaged")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--box-tolerance", type=float, default=0.01)
    args = parser.parse_args(argv)
    if args.clips < 1 or not 0.0 <= args.box_tolerance < 1.0:
        parser.error("--clips must be 1 or more and --box-tolerance in [0, 1)")
    export = args.stage / "export.safetensors"
    if not export.is_file():
        parser.error(f"no {export}: give a run folder that `attnvision train sam2 --export` "
                     "wrote")
    new, old = measure(str(export), args.clips), measure(args.packaged, args.clips)
    return conclude(args.stage, args.packaged,
                    {"stage": str(args.stage), "packaged": args.packaged,
                     "validation_clips": args.clips, "box_tolerance": args.box_tolerance,
                     "stage_figures": new, "packaged_figures": old},
                    decide(new, old, args.box_tolerance))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
