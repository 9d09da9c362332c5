"""Box prompts with and without zooming in, side by side: mIoU by object size, and time per box.

    python benchmarks/box_zoom.py                         # shipped sam_tiny, scenes 1000-1099
    python benchmarks/box_zoom.py --first 0 --scenes 64 --margins 0.25,0.5,0.75,1.0
    python benchmarks/box_zoom.py --checkpoint FILE --json

Every object of the held-out test scenes is prompted with its tight box, once on the image's
embedding (``predict``), and once zoomed in (``attnvision.sam.zoom.predict_zoomed``: the
window around the box encoded on its own), at each margin asked for. The margin shipped as
``ZOOM_MARGIN`` was chosen on scenes 0-63, the scenes training picks its best epoch on;
figures are reported on 1000-1099, as ``attnvision eval sam`` reports them. Times are the
mean seconds per box in this process (the plain box's share of the image's encoding not
counted: it is paid once for every prompt on the image).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from attnvision.sam.evaluation import iou, tight_box
from attnvision.sam.predictor import SamPredictor
from attnvision.sam.training_data import SceneDataset
from attnvision.sam.zoom import ZOOM_MARGIN, predict_zoomed

SIZES = {"small (< 1500 px)": (0, 1500), "medium": (1500, 4000), "large (>= 4000 px)":
         (4000, 1 << 30)}


def main(argv: list[str] | None = None) -> int:
    from attnvision.commands.sam import load_sam

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="SAM weights (default: the shipped sam_tiny)")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--first", type=int, default=1000, help="as `attnvision eval sam`")
    parser.add_argument("--margins", default=str(ZOOM_MARGIN),
                        help="comma-separated zoom margins to compare")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    margins = [float(m) for m in args.margins.split(",")]

    torch.manual_seed(0)
    sam = load_sam(args.checkpoint, None)
    predictor = SamPredictor(sam)
    data = SceneDataset("test", sam.img_size, args.scenes, args.first)
    area: list[int] = []
    ious: dict[str, list[float]] = {"box": [], **{f"zoom {m:g}": [] for m in margins}}
    seconds = {k: 0.0 for k in ious}
    for i in range(len(data)):
        image, objects = data.raw(i)
        predictor.set_image(image)
        for truth, _ in objects:
            box = tight_box(truth)
            area.append(int(truth.sum()))
            start = time.perf_counter()
            masks, _, _ = predictor.predict(box=box, multimask_output=False)
            seconds["box"] += time.perf_counter() - start
            ious["box"].append(iou(masks[0], truth))
            for m in margins:
                start = time.perf_counter()
                mask, _, _ = predict_zoomed(predictor, box, m)
                seconds[f"zoom {m:g}"] += time.perf_counter() - start
                ious[f"zoom {m:g}"].append(iou(mask, truth))
    areas = np.array(area)
    within = {size: (areas >= lo) & (areas < hi) for size, (lo, hi) in SIZES.items()}
    within = {size: w for size, w in within.items() if w.any()}
    rows = {}
    for name, values in ious.items():
        v = np.array(values)
        rows[name] = {"miou": round(float(v.mean()), 4),
                      "seconds_per_box": round(seconds[name] / len(v), 4),
                      **{size: round(float(v[w].mean()), 4) for size, w in within.items()}}
    counts = {size: int(w.sum()) for size, w in within.items()}
    result = {"checkpoint": args.checkpoint or "shipped sam_tiny", "scenes":
              f"{args.first}-{args.first + args.scenes - 1}", "objects": len(areas),
              "objects_by_size": counts, "prompts": rows}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['objects']} objects of test scenes {result['scenes']} "
              f"({', '.join(f'{n} {s}' for s, n in counts.items())})")
        print(f"{'prompt':<12}{'mIoU':>8}" + "".join(f"{s:>20}" for s in counts)
              + f"{'s / box':>10}")
        for name, row in rows.items():
            print(f"{name:<12}{row['miou']:>8.3f}"
                  + "".join(f"{row[s]:>20.3f}" for s in counts)
                  + f"{row['seconds_per_box']:>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
