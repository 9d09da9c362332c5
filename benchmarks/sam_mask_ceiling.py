"""The best mIoU a SAM can reach through its low-resolution mask output, on the test scenes.

    python benchmarks/sam_mask_ceiling.py            # sam_tiny: 256 px scenes, 64 x 64 output
    python benchmarks/sam_mask_ceiling.py --json

SAM's decoder answers at a quarter of the input's side (64 x 64 for sam_tiny's 256 px), and
the predictor upsamples those logits bilinearly and thresholds them at 0. Each ground-truth
mask of the held-out test scenes is given the best logits that grid can hold (the share of
each cell the object covers, as a logit), upsampled the same way: the mIoU that comes back is
the ceiling of the output's resolution, against which a model's own mIoU can be read.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from attnvision.sam.evaluation import iou
from attnvision.sam.training_data import SceneDataset


def ceiling_iou(mask: np.ndarray, grid: int) -> float:
    """IoU of ``mask`` with itself after a trip through a (grid, grid) logit map."""
    m = torch.from_numpy(mask).float()[None, None]
    cover = F.interpolate(m, (grid, grid), mode="area").clamp(1e-4, 1 - 1e-4)
    up = F.interpolate(torch.logit(cover), mask.shape, mode="bilinear", align_corners=False)
    return iou(up[0, 0].numpy() > 0, mask)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="scene size (sam_tiny: 256)")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--first", type=int, default=1000, help="as `attnvision eval sam`")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    grid = args.size // 4
    data = SceneDataset("test", args.size, args.scenes, args.first)
    kinds: dict[str, list[float]] = {}
    for i in range(len(data)):
        for mask, kind in data.raw(i)[1]:
            kinds.setdefault(kind, []).append(ceiling_iou(mask, grid))
    every = [v for values in kinds.values() for v in values]
    report = {"benchmark": "sam_mask_ceiling", "size": args.size, "grid": grid,
              "scenes": args.scenes, "first": args.first, "objects": len(every),
              "miou": round(float(np.mean(every)), 4),
              "per_kind": {k: round(float(np.mean(v)), 4) for k, v in sorted(kinds.items())}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['objects']} objects of test scenes {args.first}-"
              f"{args.first + args.scenes - 1} through a {grid} x {grid} output: "
              f"mIoU ceiling {report['miou']}")
        print(", ".join(f"{k} {v}" for k, v in report["per_kind"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
