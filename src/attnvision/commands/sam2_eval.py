"""``attnvision eval sam2``: SAM 2's J, F and J&F on a DAVIS-format folder.

The semi-supervised protocol of :mod:`attnvision.sam2.evaluation`: each object's first mask
given, tracked to the end, every annotated frame between the first and the last measured.
With ``--out``: ``masks/SEQ/00000.png``... (a DAVIS results folder, readable by DAVIS' own
evaluation), ``results.json``, ``scores.png`` (J, F and J&F per sequence) and
``contact_sheet.png`` (four frames of each sequence with the predicted masks). The folder, the
sequences and the weights are all checked before ``--out`` is made, so a mistake leaves
nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common
from attnvision.errors import UserError


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "sam2", "SAM 2's J, F and J&F (DAVIS) on a folder of videos with "
                                    "true masks: each object's first mask given, tracked to "
                                    "the end")
    p.add_argument("--annotations", required=True, metavar="DIR",
                   help="a DAVIS-format folder: JPEGImages/ and Annotations/ (with 480p/ "
                        "inside, or one folder per sequence, or one sequence's frames); "
                        "masks are indexed PNGs, 255 void")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="SAM 2 weights (required): an official sam2.1_hiera_*.pt or ours")
    # Not dest="model": that holds the eval group's MODEL ("sam2"), which names the command
    # in error messages.
    p.add_argument("--model", dest="config", metavar="NAME",
                   help="SAM 2 model, e.g. sam2.1_hiera_tiny (default: read from the "
                        "checkpoint)")
    p.add_argument("--sequences", metavar="A,B",
                   help="comma-separated sequences to measure (default: all)")
    p.add_argument("--max-frames", type=int, metavar="N",
                   help="track and measure only the first N frames of each sequence (a "
                        "quick look; DAVIS figures use every frame)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for masks/SEQ/*.png, results.json, scores.png and "
                        "contact_sheet.png (default: write nothing)")
    common(p, evaluate)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError(f"--sequences {text!r} names no sequence: give comma-separated names, "
                        "e.g. --sequences bear,camel")
    return names


def _score_chart(result: Any, path: Path) -> Path:
    """Horizontal bars of J, F and J&F per sequence, the mean over objects on top."""
    import numpy as np
    from matplotlib.figure import Figure

    from attnvision.viz.plots import save_figure

    rows = [("mean (objects)", result.J, result.F, result.JF)] + [
        (s.name, s.J, s.F, s.JF) for s in result.sequences]
    y = np.arange(len(rows))[::-1]  # first row at the top
    fig = Figure(figsize=(7, 1.2 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    for k, (label, colour) in enumerate([("J", "#4c72b0"), ("F", "#55a868"),
                                         ("J&F", "#c44e52")]):
        values = [r[k + 1] for r in rows]
        bars = ax.barh(y + (1 - k) * 0.27, values, height=0.27, color=colour, label=label)
        if label == "J&F":
            ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("score (1 = the true masks)")
    ax.set_title("SAM 2, semi-supervised (DAVIS protocol): J (region IoU), F (boundary), J&F")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def _contact_sheet(plans: list[Any], masks_dir: Path, path: Path) -> Path:
    """Four frames of each sequence (a row each), its predicted masks drawn on them."""
    import numpy as np

    from attnvision.data.davis import read_indexed_png
    from attnvision.data.images import load_image
    from attnvision.viz.overlays import mask_overlay, save_png
    from attnvision.viz.video import contact_sheet, sample_indices

    thumbs, captions = [], []
    for plan in plans:
        objects = list(plan.starts)
        picked = sample_indices(plan.num_frames, 4)
        for t in picked + [picked[-1]] * (4 - len(picked)):  # full rows keep sequences apart
            frame = plan.sequence.frames[t]
            labels = read_indexed_png(masks_dir / plan.name / f"{frame.stem}.png")
            thumbs.append(np.asarray(mask_overlay(load_image(frame),
                                                  [labels == o for o in objects])))
            captions.append(f"{plan.name} {t}")
    return save_png(contact_sheet(thumbs, captions, columns=4, thumb_width=240), path)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from attnvision.commands.segment_video import check_sam2_weights
    from attnvision.files import ensure_dir, write_json
    from attnvision.sam2 import build_sam2_video_predictor
    from attnvision.sam2.evaluation import evaluate_davis, plan_sequences

    check_sam2_weights("eval sam2", args.config, args.checkpoint)
    if args.max_frames is not None and args.max_frames < 3:
        raise UserError(f"--max-frames {args.max_frames}: give 3 or more (DAVIS measures the "
                        "frames between the first, whose mask is given, and the last)")
    if args.out is not None and Path(args.out).is_file():
        raise UserError(f"output folder {args.out} is an existing file: choose another --out")
    plans = plan_sequences(args.annotations, _names(args.sequences), args.max_frames)
    predictor = build_sam2_video_predictor(args.config, args.checkpoint)
    out = ensure_dir(args.out) if args.out is not None else None  # only now: inputs are good
    masks_dir = out / "masks" if out is not None else None

    with tqdm(total=sum(p.steps for p in plans), desc="eval sam2", unit="frame",
              file=sys.stderr, disable=args.quiet) as bar:
        result = evaluate_davis(predictor, plans, masks_dir, on_frame=lambda: bar.update(1))
    model_name = getattr(predictor.model, "size_name", None) or args.config
    del predictor
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    report = {"command": "eval sam2", "annotations": str(args.annotations),
              "model": model_name, "weights": args.checkpoint, "max_frames": args.max_frames,
              "protocol": "semi-supervised: each object's first mask given, tracked forward; "
                          "frames between the first and the last measured; void left out",
              **result.to_dict(), "files": {}}
    if out is not None:
        files = {"masks": str(masks_dir), "results": str(out / "results.json"),
                 "scores": str(_score_chart(result, out / "scores.png")),
                 "contact_sheet": str(_contact_sheet(plans, masks_dir, out /
                                                     "contact_sheet.png"))}
        report["files"] = files
        write_json(out / "results.json", report)
    return report
