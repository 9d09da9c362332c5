"""``attnvision eval track``: CoTracker3's TAP-Vid metrics on held-out synthetic videos.

``--synthetic``: :mod:`attnvision.cotracker.synthetic_eval` on ``--clips`` held-out clips
(half of them with an object hidden for 3+ frames): ``--points`` points of frame 0 per clip,
half on objects, tracked to the end (offline, or ``--online`` in the official chunks) and
scored against the exact tracks in TAP-Vid's "first" mode; the means over clips of AJ, δ_avg,
occlusion accuracy and each threshold's δ and Jaccard, and frames per second. With ``--out``:
``results.json``, ``scores.png`` (δ^x and Jaccard at each threshold, the averages beside) and
``trajectories.png`` (the first clip: the true paths, then the predicted ones). The options
and the weights are checked before ``--out`` is made, so a mistake leaves nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common
from attnvision.errors import UserError

DEFAULTS = {"clips": 50, "frames": 24, "size": 256, "points": 64}


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "track", "CoTracker3's TAP-Vid metrics (AJ, δ_avg, occlusion "
                                     "accuracy) on held-out synthetic videos with exact tracks")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", action="store_true",
                        help="held-out synthetic clips (the test split of the moving scenes, "
                             "half with an object hidden for 3+ frames)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="CoTracker3 weights: the official scaled_offline.pth / "
                        "scaled_online.pth or ours (.safetensors)")
    p.add_argument("--clips", type=int, default=DEFAULTS["clips"], metavar="N",
                   help=f"how many clips (default: {DEFAULTS['clips']})")
    p.add_argument("--frames", type=int, default=DEFAULTS["frames"], metavar="T",
                   help=f"frames per clip, 2 or more; 5 or more for occlusions (default: "
                        f"{DEFAULTS['frames']})")
    p.add_argument("--size", type=int, default=DEFAULTS["size"], metavar="PIXELS",
                   help=f"the clips' side (default: {DEFAULTS['size']})")
    p.add_argument("--points", type=int, default=DEFAULTS["points"], metavar="P",
                   help=f"query points of frame 0 per clip, half on objects (default: "
                        f"{DEFAULTS['points']})")
    p.add_argument("--online", action="store_true",
                   help="the online model over each clip in chunks of half its window (use "
                        "scaled_online.pth)")
    p.add_argument("--model-resolution", metavar="H,W",
                   help="the size frames are resized to for the model (default: 384,512, the "
                        "released models')")
    p.add_argument("--out", metavar="DIR",
                   help="folder for results.json, scores.png and trajectories.png (default: "
                        "write nothing)")
    common(p, evaluate)


METRIC_NAMES = {"average_jaccard": "AJ", "average_pts_within_thresh": "δ_avg",
                "occlusion_accuracy": "occlusion accuracy"}


def _score_chart(result: dict[str, Any], title: str, path: Path) -> Path:
    """δ^x and Jaccard at each threshold, their averages and occlusion accuracy beside."""
    import numpy as np
    from matplotlib.figure import Figure

    from attnvision.cotracker.metrics import THRESHOLDS
    from attnvision.viz.plots import save_figure

    labels = [f"{d} px" for d in THRESHOLDS] + ["average"]
    within = [result[f"pts_within_{d}"] for d in THRESHOLDS] + [
        result["average_pts_within_thresh"]]
    jaccard = [result[f"jaccard_{d}"] for d in THRESHOLDS] + [result["average_jaccard"]]
    x = np.arange(len(labels), dtype=float)
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for offset, values, name, colour in ((-0.2, within, r"$\delta^x$ (position within x px)",
                                          "#4c72b0"),
                                         (0.2, jaccard, "Jaccard (position and visibility)",
                                          "#c44e52")):
        bars = ax.bar(x + offset, np.nan_to_num(values), 0.4, color=colour, label=name)
        ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
    occ = result["occlusion_accuracy"]
    bars = ax.bar([len(labels) + 0.2], [np.nan_to_num(occ)], 0.4, color="#8c8c8c",
                  label="occlusion accuracy")
    ax.bar_label(bars, fmt="%.2f", padding=2, fontsize=7)
    ax.set_xticks([*x, len(labels) + 0.2], [*labels, "occlusion"])
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("threshold (pixels of a 256 x 256 frame)")
    ax.set_ylabel("score (1 = the true tracks)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    return save_figure(fig, path)


SHEET_SIDE = 256  # small clips are enlarged to about this side, so their paths can be seen


def _trajectories(kept: dict[str, Any], path: Path) -> Path:
    """One clip's first frame twice: the true paths, then the predicted ones (a small clip
    enlarged, whole pixels repeated)."""
    import numpy as np

    from attnvision.viz.overlays import save_png
    from attnvision.viz.tracks import track_colours, trajectories_picture
    from attnvision.viz.video import contact_sheet

    clip, queries = kept["clip"], kept["queries"]
    gt_xy, gt_visible = clip.track(queries[:, 1:], frame=0)
    colours = track_colours(queries)
    k = max(1, SHEET_SIDE // max(clip.frames.shape[1:3]))
    frame = clip.frames[0].repeat(k, axis=0).repeat(k, axis=1)

    def enlarged(xy: Any) -> Any:  # pixel centres stay centres: x -> (x + 0.5) k - 0.5
        return (np.asarray(xy, np.float64) + 0.5) * k - 0.5

    thumbs = [np.asarray(trajectories_picture(frame, enlarged(xy), vis, colours))
              for xy, vis in ((gt_xy, gt_visible), (kept["tracks"], kept["visible"]))]
    captions = [f"seed {clip.seed}: truth", f"seed {clip.seed}: predicted"]
    return save_png(contact_sheet(thumbs, captions, columns=2, thumb_width=384), path)


def _summary(result: dict[str, Any]) -> list[str]:
    from attnvision.cotracker.metrics import THRESHOLDS

    lines = [f"{'metric':<24} {'mean':>6}"]
    for key, name in METRIC_NAMES.items():
        lines.append(f"{name:<24} {result[key]:6.3f}")
    for d in THRESHOLDS:
        lines.append(f"{f'δ^{d} / Jaccard_{d}':<24} {result[f'pts_within_{d}']:6.3f} "
                     f"{result[f'jaccard_{d}']:6.3f}")
    lines.append(f"{result['clips']} clips x {result['points']} points, "
                 f"{result['fps']:.1f} frames/s")
    return lines


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.commands.track import parse_resolution, weights_file
    from attnvision.cotracker import build_cotracker
    from attnvision.cotracker.synthetic_eval import (
        cotracker_tracker,
        evaluate_clips,
        held_out_clips,
    )
    from attnvision.files import ensure_dir, write_json

    for name in ("clips", "points"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} {getattr(args, name)}: give 1 or more")
    if args.frames < 2:
        raise UserError(f"--frames {args.frames}: give 2 or more (tracking is measured on the "
                        "frames after the first; 5 or more for occlusions)")
    weights = weights_file(args.checkpoint, args.online)
    resolution = parse_resolution(args.model_resolution, weights)
    if args.out is not None and Path(args.out).is_file():
        raise UserError(f"output folder {args.out} is an existing file: choose another --out")
    clips = held_out_clips(args.clips, args.frames, args.size)  # a bad --size: one line
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_cotracker(weights, offline=not args.online, model_resolution=resolution,
                            device=device)
    out = ensure_dir(args.out) if args.out is not None else None  # only now: inputs are good

    kept: dict[str, Any] = {}

    def keep(clip: Any, queries: Any, tracks: Any, visible: Any) -> None:
        if not kept:
            kept.update(clip=clip, queries=queries, tracks=tracks, visible=visible)

    result = evaluate_clips(cotracker_tracker(model, online=args.online), clips, args.points,
                            progress=not args.quiet, on_clip=keep)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    report = {"command": "eval track", "source": "synthetic", "weights": weights,
              "online": args.online, "model_resolution": list(resolution),
              "frames": args.frames, "size": args.size, "first_seed": 0, "device": device,
              "protocol": "held-out synthetic clips (test split), half with an object hidden "
                          "3+ frames; P points of frame 0 per clip, half on objects, tracked "
                          "to the end; TAP-Vid metrics in 'first' mode (frames after the "
                          "query), at the clip's size rescaled to 256 x 256; means over clips",
              **result, "summary": _summary(result), "files": {}}
    if out is not None:
        title = (f"CoTracker3 ({'online' if args.online else 'offline'}) on {result['clips']} "
                 f"held-out synthetic clips, {result['points']} points each: "
                 f"AJ {result['average_jaccard']:.3f}, δ_avg "
                 f"{result['average_pts_within_thresh']:.3f}")
        files = {"results": str(out / "results.json"),
                 "scores": str(_score_chart(result, title, out / "scores.png")),
                 "trajectories": str(_trajectories(kept, out / "trajectories.png"))}
        report["files"] = files
        write_json(out / "results.json", report)
    return report
