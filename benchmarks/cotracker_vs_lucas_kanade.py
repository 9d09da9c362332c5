"""CoTracker3 against OpenCV's pyramidal Lucas-Kanade on the same held-out synthetic clips.

Lucas-Kanade is the classical tracker every user knows: each point follows the local image
gradient from one frame to the next. Here it runs the usual way: frame to frame from each
query, 21 x 21 windows, 4 pyramid levels; a point is called visible while LK's status holds
and a backward LK step returns within ``--fb-px`` pixels of where it started (the
forward-backward check); a point that fails keeps its last place, is called hidden, and
tracking goes on from there, so it can be picked up again.

Both trackers see the same clips (the test split, :func:`held_out_clips`), the same query
points, and are scored by the same TAP-Vid code ("first" mode, 256 x 256), overall and on
the clips with an occlusion.

    python benchmarks/cotracker_vs_lucas_kanade.py [--checkpoint W] [--online] [--clips 50]

Without ``--checkpoint`` the shipped model is measured if there is one, else LK alone.
Needs ``opencv-python-headless`` (a benchmark dependency, not the library's).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from attnvision.cotracker.synthetic_eval import (
    cotracker_tracker,
    evaluate_clips,
    held_out_clips,
)

SUMMARY = ("average_pts_within_thresh", "occlusion_accuracy", "average_jaccard")


def lucas_kanade_tracker(fb_px: float = 1.0) -> Any:  # a synthetic_eval.Tracker
    import cv2

    params = {"winSize": (21, 21), "maxLevel": 3,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}

    def track(frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        t, n = len(frames), len(queries)
        tracks = np.zeros((t, n, 2), np.float32)
        visible = np.zeros((t, n), bool)
        # "first" mode: every query is on frame 0 (clip_queries), so one forward pass.
        if not np.all(queries[:, 0] == 0):
            raise ValueError("this baseline tracks queries of frame 0")
        tracks[0] = queries[:, 1:]
        visible[0] = True
        for i in range(1, t):
            p0 = tracks[i - 1].reshape(-1, 1, 2)
            p1, status, _ = cv2.calcOpticalFlowPyrLK(gray[i - 1], gray[i], p0, None, **params)
            back, status_back, _ = cv2.calcOpticalFlowPyrLK(gray[i], gray[i - 1], p1, None,
                                                            **params)
            ok = (status[:, 0] == 1) & (status_back[:, 0] == 1)
            ok &= np.linalg.norm(back[:, 0] - p0[:, 0], axis=1) < fb_px
            tracks[i] = np.where(ok[:, None], p1[:, 0], tracks[i - 1])
            visible[i] = ok
        return tracks, visible

    return track


def _subset(result: dict[str, Any], occluded: bool) -> dict[str, float]:
    rows = [r for r in result["per_clip"] if r["occluded"] == occluded]
    return {k: float(np.mean([r[k] for r in rows])) for k in SUMMARY} | {"clips": len(rows)}


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    return {**{k: result[k] for k in SUMMARY}, "fps": result["fps"],
            "occluded_clips": _subset(result, True), "clear_clips": _subset(result, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="CoTracker3 weights (default: the shipped model)")
    parser.add_argument("--online", action="store_true", help="the online predictor")
    parser.add_argument("--model-resolution", metavar="H,W",
                        help="for weights without it in their metadata")
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument("--fb-px", type=float, default=1.0,
                        help="LK's forward-backward check, pixels")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    clips = held_out_clips(args.clips, args.frames, args.size)
    report: dict[str, Any] = {
        "clips": args.clips, "frames": args.frames, "size": args.size, "points": args.points,
        "threads": args.threads,
        "lucas_kanade": _summary(evaluate_clips(lucas_kanade_tracker(args.fb_px), clips,
                                                args.points, progress=True))}
    model = _model(args)
    if model is not None:
        report["cotracker"] = _summary(evaluate_clips(
            cotracker_tracker(model, online=args.online), clips, args.points, progress=True))
        report["online"] = args.online
        report["margin_delta_avg"] = (report["cotracker"]["average_pts_within_thresh"]
                                      - report["lucas_kanade"]["average_pts_within_thresh"])
        report["margin_delta_avg_occluded"] = (
            report["cotracker"]["occluded_clips"]["average_pts_within_thresh"]
            - report["lucas_kanade"]["occluded_clips"]["average_pts_within_thresh"])
    else:
        print("no CoTracker weights given and none shipped: Lucas-Kanade alone",
              file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("lucas_kanade", "cotracker"):
        if name in report:
            r = report[name]
            print(f"{name:13s} δ_avg {r['average_pts_within_thresh']:.3f}  "
                  f"OA {r['occlusion_accuracy']:.3f}  AJ {r['average_jaccard']:.3f}  "
                  f"occluded clips δ_avg {r['occluded_clips']['average_pts_within_thresh']:.3f}"
                  f"  {r['fps']:.1f} fps")


def _model(args: argparse.Namespace) -> Any:
    from attnvision.cotracker import build_cotracker

    resolution = (tuple(int(v) for v in args.model_resolution.split(","))
                  if args.model_resolution else None)
    checkpoint = args.checkpoint
    if checkpoint is None:
        try:
            from attnvision.cotracker.pretrained import shipped_checkpoint
        except ImportError:
            return None
        checkpoint = shipped_checkpoint()
        if checkpoint is None:
            return None
    kwargs = {} if resolution is None else {"model_resolution": resolution}
    return build_cotracker(checkpoint, offline=not args.online, **kwargs)


if __name__ == "__main__":
    main()
