"""What bounds our small SAM 2: its image model or its tracking, on *validation* clips.

    python benchmarks/sam2_tiny_bounds.py --json                      # the shipped sam2_tiny
    python benchmarks/sam2_tiny_bounds.py --checkpoint best.safetensors --clips 48

Two measures of the same model on the validation clips that choose a trainer's best epoch
(train split, seeds from ``VALIDATION_FIRST_SEED``, never trained on; the test split stays for
the figures reported):

- *tracked*: J of every prompted object on every frame, from one click on frame 0 tracked with
  memory (``eval sam2 --synthetic``'s protocol, one click), by frame;
- *true box*: J of the image predictor given each object's true tight box on every frame
  (no tracking, no memory: what the encoder and decoder can draw when told exactly where the
  object is), by object size in pixels, beside the J the true mask keeps through the decoder's
  low-resolution grid (a quarter of the input; ``sam_mask_ceiling.ceiling_iou``, the best
  logits that grid can hold, upsampled as the predictor does), which no decoder of that grid
  can beat.

If *true box* is far below 1 for small objects while their masks survive the decoder's grid,
the encoder's token grid is what bounds the model; if *tracked* falls well below *true box*,
the tracking is. Objects showing fewer than ``MIN_SHARE`` of the frame are left out, as an
evaluation leaves them unprompted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import torch
from machine import cpu_model
from sam_mask_ceiling import ceiling_iou
from tqdm import tqdm

from attnvision.sam.evaluation import tight_box
from attnvision.sam2 import SAM2ImagePredictor, SAM2VideoPredictor, build_sam2
from attnvision.sam2.metrics import region_similarity
from attnvision.sam2.pretrained import load_shipped
from attnvision.sam2.synthetic_eval import (
    MIN_SHARE,
    first_frame_prompts,
    held_out_clips,
    track_with_memory,
)
from attnvision.sam2.training_data import VALIDATION_FIRST_SEED

SIZES = ((0, 400), (400, 1500), (1500, 5000), (5000, None))  # object pixels at 256 x 256


def measure(model: Any, clips: list[Any]) -> dict[str, Any]:
    video, image = SAM2VideoPredictor(model), SAM2ImagePredictor(model)
    tracked: dict[int, list[float]] = {}
    boxed: list[tuple[int, float, float]] = []  # (pixels, J with the true box, J of the grid)
    cells = model.image_size // 4
    for clip in tqdm(clips, desc="clips", file=sys.stderr):
        prompts, _ = first_frame_prompts(clip, "click")
        if not prompts:
            continue
        labels, _ = track_with_memory(video, clip, prompts)
        least = MIN_SHARE * clip.masks[0].size
        for t, frame in enumerate(clip.frames):
            image.set_image(frame)
            for obj in prompts:
                truth = clip.masks[t] == obj
                tracked.setdefault(t, []).append(region_similarity(labels[t] == obj, truth))
                if truth.sum() >= least:
                    masks, _, _ = image.predict(box=tight_box(truth), multimask_output=False)
                    boxed.append((int(truth.sum()), region_similarity(masks[0], truth),
                                  ceiling_iou(truth, cells)))
    rows = np.array(boxed, np.float64).reshape(-1, 3)
    by_size = {}
    for lo, hi in SIZES:
        keep = rows[(rows[:, 0] >= lo) & (rows[:, 0] < (hi or np.inf))]
        by_size[f"{lo}-{hi or ''}"] = {
            "objects": len(keep),
            "J_true_box": float(keep[:, 1].mean()) if len(keep) else None,
            "J_grid": float(keep[:, 2].mean()) if len(keep) else None}
    return {"tracked_J_by_frame": {t: float(np.mean(v)) for t, v in sorted(tracked.items())},
            "tracked_J_frames_1_on": float(np.mean([j for t, v in tracked.items() if t
                                                    for j in v])),
            "true_box_J": float(rows[:, 1].mean()), "grid_J": float(rows[:, 2].mean()),
            "objects": len(rows),
            "true_box_by_size": by_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a sam2_tiny(_hr) file (default: the shipped one)")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_sam2(None, args.checkpoint) if args.checkpoint else load_shipped()
    clips = held_out_clips(args.clips, args.frames, first_seed=VALIDATION_FIRST_SEED,
                           split="train")
    with torch.inference_mode():
        result = {"machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                              "torch": torch.__version__},
                  "model": model.size_name, "checkpoint": args.checkpoint or "shipped",
                  "clips": args.clips, "frames": args.frames, **measure(model, clips)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{result['model']}: tracked J (frames 1 on) {result['tracked_J_frames_1_on']:.3f}; "
              f"true box J {result['true_box_J']:.3f} over {result['objects']} objects; the "
              f"true masks through the decoder's grid {result['grid_J']:.3f}")
        for size, row in result["true_box_by_size"].items():
            if row["objects"]:
                print(f"  {size:>10} px: {row['objects']:4d} objects, true box J "
                      f"{row['J_true_box']:.3f}, grid {row['J_grid']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
