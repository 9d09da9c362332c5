"""One SAM checkpoint run at several input sizes, side by side: speed and quality.

    python benchmarks/input_size.py                                   # shipped sam_tiny
    python benchmarks/input_size.py --checkpoint runs/sam_tiny_stage5/best.safetensors
    python benchmarks/input_size.py --sizes 256,384,512 --scenes 40 --json

``build_sam(None, checkpoint, img_size=S)`` resamples the grid-sized position weights to S
(``attnvision.sam.input_size``), so any checkpoint runs at any multiple of 16: this shows what
a size costs (milliseconds to encode an image, then to answer one click, in fp32 in this
process) and what it gives without training there (held-out 1-click and box mIoU on test
scenes 1000.., each scene drawn at the model's size; coins and horse). The shipped sam_tiny
was trained at 256 px, then fine-tuned at 384 and at 512 px (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from attnvision.sam import SamPredictor, build_sam
from attnvision.sam.evaluation import photo_ious, synthetic_miou


def _ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 1)


def measure(checkpoint, size: int, scenes: int, repeats: int) -> dict:
    sam = build_sam(None, checkpoint, img_size=size)
    predictor = SamPredictor(sam)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    click = dict(point_coords=np.array([[320.0, 240.0]]), point_labels=np.array([1]))
    encode = _ms(lambda: predictor.set_image(image), repeats)
    decode = _ms(lambda: predictor.predict(**click), 5 * repeats)
    row = {"img_size": size, "encode_ms": encode, "click_ms": decode}
    if scenes:
        found = synthetic_miou(sam, scenes, 1000, ("point", "box"))
        row.update(miou_point=found["miou_point"], miou_box=found["miou_box"])
    return {**row, **{k: v for k, v in photo_ious(sam).items() if k != "coins"}}


def main(argv: list[str] | None = None) -> int:
    from attnvision.sam.pretrained import shipped_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="SAM weights (default: the shipped sam_tiny)")
    parser.add_argument("--sizes", default="256,384,512", help="comma-separated input sizes")
    parser.add_argument("--scenes", type=int, default=100,
                        help="held-out test scenes for mIoU (0: speed and photos only)")
    parser.add_argument("--repeats", type=int, default=10, help="timed encodings per size")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or shipped_checkpoint()
    torch.manual_seed(0)
    rows = [measure(checkpoint, int(s), args.scenes, args.repeats)
            for s in args.sizes.split(",")]
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), "threads": torch.get_num_threads(),
                          "sizes": rows}, indent=2))
        return 0
    print(f"{checkpoint} ({torch.get_num_threads()} threads, fp32)")
    keys = list(rows[0])
    print("  ".join(f"{k:>13}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]:>13}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
