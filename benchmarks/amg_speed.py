"""Automatic mask generation: our generator against the official one, same weights, one process.

    python benchmarks/amg_speed.py --small                     # reduced encoder, quick
    python benchmarks/amg_speed.py                             # SAM vit_b, points 16 and 32 (slow)
    python benchmarks/amg_speed.py --small --points-per-side 16 --repeats 5 --json
    python benchmarks/amg_speed.py --image coffee --points-per-side 32   # a 600x400 photo

Both generators get the same SAM (official_sam.py: the official model with seeded random
weights, saved as an official .pth and loaded by ours). Two cases per grid size, fp32, under
``torch.no_grad``:

- ``generate``: the whole ``generate(image)`` call, image encoding included;
- ``no_encoder``: the same call with the embedding computed beforehand (each generator's
  ``predictor.set_image`` replaced by setting that embedding), so only prompting, filtering,
  NMS and encoding of the masks are timed.

After a warm-up of each, runs alternate ours, official, ours, ... and the figures are medians
(with the median of per-pair ratios). The record counts of the two must agree, or the timing
means nothing: the script then exits 1. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from official_sam import FULL, SMALL, both_sams
from segment_anything import SamAutomaticMaskGenerator as RefGenerator
from segment_anything.modeling import Sam

from attnvision.data.images import load_image, sample_image
from attnvision.sam.automatic import SamAutomaticMaskGenerator


def use_fixed_embedding(ours: SamAutomaticMaskGenerator, ref: RefGenerator,
                        image: np.ndarray) -> None:
    """Replace both generators' encoder pass by the embedding computed once here."""
    ref.predictor.set_image(image)
    features = ref.predictor.features
    original, inp = ref.predictor.original_size, ref.predictor.input_size

    def ref_set(_image: np.ndarray, image_format: str = "RGB") -> None:
        p = ref.predictor
        p.features, p.original_size, p.input_size, p.is_image_set = (
            features, original, inp, True)

    def our_set(_image: np.ndarray, image_format: str = "RGB") -> None:
        ours.predictor.set_image_embedding(features, original, inp)

    ref.predictor.set_image = ref_set
    ours.predictor.set_image = our_set


# Random weights pass few masks through the official filters: these let many through.
LOW_FILTERS = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.5}


def load_benchmark_image(name: str) -> np.ndarray:
    if name == "astronaut":
        return sample_image("astronaut")
    if Path(name).is_file():
        return load_image(name)
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)()[..., :3])


def timed(fn, image: np.ndarray) -> tuple[float, int]:
    start = time.perf_counter()
    records = fn(image)
    return time.perf_counter() - start, len(records)


def run_case(ours_model: Sam, ref_model: Sam, image: np.ndarray, points: int, case: str,
             filters: dict[str, float],
             repeats: int) -> dict[str, Any]:
    kwargs = {"points_per_side": points, **filters}
    ours, ref = SamAutomaticMaskGenerator(ours_model, **kwargs), RefGenerator(ref_model, **kwargs)
    if case == "no_encoder":
        use_fixed_embedding(ours, ref, image)
    with torch.no_grad():
        _, n_ours = timed(ours.generate, image)  # warm-up, and the counts to compare
        _, n_ref = timed(ref.generate, image)
        t_ours, t_ref = [], []
        for i in range(repeats):
            t_ours.append(timed(ours.generate, image)[0])
            t_ref.append(timed(ref.generate, image)[0])
            print(f"  {case} points={points} run {i + 1}/{repeats}: ours {t_ours[-1]:.2f} s, "
                  f"official {t_ref[-1]:.2f} s", file=sys.stderr)
    ours_s, ref_s = statistics.median(t_ours), statistics.median(t_ref)
    return {"case": case, "points_per_side": points, "repeats": repeats,
            "ours_s": round(ours_s, 3), "official_s": round(ref_s, 3),
            "ratio": round(ours_s / ref_s, 3),
            "paired_ratio": round(statistics.median(a / b for a, b in zip(t_ours, t_ref,
                                                                           strict=True)), 3),
            "records_ours": n_ours, "records_official": n_ref}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points-per-side", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=["generate", "no_encoder"],
                        default=["generate", "no_encoder"])
    parser.add_argument("--small", action="store_true",
                        help="a 2-block, 192-wide encoder instead of vit_b's (quick run)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--low-thresholds", action="store_true",
                        help="predicted IoU and stability thresholds at 0.5 instead of 0.88 and "
                             "0.95, so that many masks reach the post-processing")
    parser.add_argument("--image", default="astronaut",
                        help="the shipped 256 px 'astronaut' sample (default), a scikit-image "
                             "photo by name ('coffee': 600x400, 'chelsea': 451x300) or a file")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    encoder = SMALL if args.small else FULL
    with tempfile.TemporaryDirectory() as tmp:
        ours_model, ref_model, _ = both_sams(encoder, Path(tmp))
    image = load_benchmark_image(args.image)
    print(f"image {image.shape[1]}x{image.shape[0]}, encoder {encoder}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    filters = LOW_FILTERS if args.low_thresholds else {}
    results = [run_case(ours_model, ref_model, image, p, c, filters, args.repeats)
               for p in args.points_per_side for c in args.cases]
    report = {"benchmark": "amg_speed", "encoder": "small" if args.small else "vit_b",
              "image": list(image.shape[:2]), "filters": filters or "official defaults",
              "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "load_average": os.getloadavg()[0], "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'case':<11} {'points':>6} {'ours s':>8} {'official s':>10} {'ratio':>6} "
              f"{'paired':>6} {'records':>9}")
        for r in results:
            print(f"{r['case']:<11} {r['points_per_side']:>6} {r['ours_s']:>8.2f} "
                  f"{r['official_s']:>10.2f} {r['ratio']:>6.2f} {r['paired_ratio']:>6.2f} "
                  f"{r['records_ours']:>4}/{r['records_official']:<4}")
    agree = all(r["records_ours"] == r["records_official"] for r in results)
    if not agree:
        print("record counts differ: the timings compare different work", file=sys.stderr)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
