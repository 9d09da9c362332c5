"""Where the tracking test split's difficulty comes from: the same clips with other photos.

The synthetic clips cut their backgrounds and object textures from scikit-image photos, and
the test split's photos are ones training never sees (:data:`attnvision.data.scenes.PHOTOS`).
A tracker that scores lower on the test split than on validation clips of the train split may
have learnt the training photos, or the test photos may simply be harder to track (flat
regions, repeated print). This tells the two apart: it draws the validation series (train
split, seeds from 1,000,000) four times, with the training photos, with the test split's
backgrounds, with its textures, and with both, and runs the shipped ``cotracker_tiny``
(offline, at its file's own cut) and OpenCV's pyramidal Lucas-Kanade
(`benchmarks/cotracker_vs_lucas_kanade.py`) on each. A tracker that has learnt nothing of the
photos, as Lucas-Kanade, falls only by what the photos themselves cost. The background has a
random stream of its own, so with other backgrounds the clips keep every motion, object and
query; the objects' stream also cuts their texture crops, so with other textures the objects
are drawn anew (other clips of the same kind).

    python benchmarks/tracking_photo_gap.py [--checkpoint W] [--clips 16] [--json]

Needs ``opencv-python-headless`` (a benchmark dependency, not the library's).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cotracker_vs_lucas_kanade import lucas_kanade_tracker

SUMMARY = ("average_pts_within_thresh", "occlusion_accuracy", "average_jaccard")


def pools() -> dict[str, dict[str, tuple[str, ...]]]:
    """The four photo pools: each split's backgrounds with each split's textures."""
    from attnvision.data.scenes import PHOTOS

    train, test = PHOTOS["train"], PHOTOS["test"]
    return {"train photos": dict(train),
            "test backgrounds": {"backgrounds": test["backgrounds"],
                                 "textures": train["textures"]},
            "test textures": {"backgrounds": train["backgrounds"],
                              "textures": test["textures"]},
            "test photos": dict(test)}


@contextmanager
def train_split_photos(photos: dict[str, tuple[str, ...]]) -> Iterator[None]:
    """The train split drawn from ``photos`` while inside (the generator reads its pool
    from ``scenes.PHOTOS`` by split)."""
    from attnvision.data import scenes

    kept = scenes.PHOTOS["train"]
    scenes.PHOTOS["train"] = photos
    try:
        yield
    finally:
        scenes.PHOTOS["train"] = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="CoTracker3 weights (default: the shipped model)")
    parser.add_argument("--clips", type=int, default=16,
                        help="validation clips (default 16, the trainer's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import cv2
    import torch

    from attnvision.commands.cotracker_train import EVAL_POINTS, EVAL_SIZE
    from attnvision.cotracker.build import build_cotracker
    from attnvision.cotracker.pretrained import shipped_checkpoint
    from attnvision.cotracker.synthetic_eval import cotracker_tracker, evaluate_clips
    from attnvision.cotracker.training_data import validation_clips

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    checkpoint = args.checkpoint or str(shipped_checkpoint())
    model = build_cotracker(checkpoint, offline=True)
    trackers = {"cotracker": cotracker_tracker(model, online=False),
                "lucas_kanade": lucas_kanade_tracker()}
    rows: dict[str, dict[str, Any]] = {}
    for name, photos in pools().items():
        with train_split_photos(photos):
            clips = validation_clips(args.clips, frames=model.config.window_len,
                                     size=EVAL_SIZE)
        rows[name] = {}
        for tracker_name, tracker in trackers.items():
            result = evaluate_clips(tracker, clips, EVAL_POINTS, progress=not args.json)
            rows[name][tracker_name] = {k: result[k] for k in SUMMARY}
    base = rows["train photos"]
    drops = {name: {t: base[t]["average_pts_within_thresh"] - r[t]["average_pts_within_thresh"]
                    for t in trackers} for name, r in rows.items()}
    report = {"checkpoint": checkpoint, "clips": args.clips, "points": EVAL_POINTS,
              "size": EVAL_SIZE, "threads": args.threads, "pools": pools(), "rows": rows,
              "delta_avg_drop_from_train_photos": drops}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, r in rows.items():
        print(f"{name:17s}" + "  ".join(
            f"{t} δ_avg {r[t]['average_pts_within_thresh']:.3f} (−{drops[name][t]:.3f}) "
            f"OA {r[t]['occlusion_accuracy']:.3f} AJ {r[t]['average_jaccard']:.3f}"
            for t in trackers))


if __name__ == "__main__":
    main()
