"""``attnvision eval sam2``: SAM 2's J, F and J&F on a DAVIS-format folder, or on held-out
synthetic videos.

``--annotations DIR``: the semi-supervised protocol of :mod:`attnvision.sam2.evaluation`:
each object's first mask given, tracked to the end, every annotated frame between the first
and the last measured. With ``--out``: ``masks/SEQ/00000.png``... (a DAVIS results folder,
readable by DAVIS' own evaluation), ``results.json``, ``scores.png`` (J, F and J&F per
sequence) and ``contact_sheet.png`` (four frames of each sequence with the predicted masks).
The folder, the sequences and the weights are all checked before ``--out`` is made, so a
mistake leaves nothing.

``--synthetic``: :mod:`attnvision.sam2.synthetic_eval` on ``--clips`` held-out clips (half of
them with an occlusion): one click and / or a box on frame 0, tracked with memory, and (unless
``--no-baseline``) the same model without memory; J&F over all clips and over the occluded
ones, the share of hidden objects found again, frames per second. With ``--out``:
``results.json``, ``scores.png`` (J&F of each run, all and occluded clips) and
``contact_sheet.png`` (the first clips: true masks, then each run's predictions). The plain
text table lists each run as a row (the report's ``sequences``, which the table prints), then
the ``summary`` lines.

Either mode runs the shipped ``sam2_tiny`` when no ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common
from attnvision.errors import UserError

SYNTHETIC_ONLY = ("clips", "frames", "size", "prompt", "baseline")
ANNOTATIONS_ONLY = ("sequences", "max_frames")
SHEET_CLIPS = 4  # clips on the synthetic contact sheet: two with an occlusion, two without


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "sam2", "SAM 2's J, F and J&F: on a folder of videos with true "
                                    "masks (DAVIS: each object's first mask given, tracked to "
                                    "the end), or on held-out synthetic videos (a click or a "
                                    "box on the first frame; occlusions; without memory)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotations", metavar="DIR",
                        help="a DAVIS-format folder: JPEGImages/ and Annotations/ (with 480p/ "
                             "inside, or one folder per sequence, or one sequence's frames); "
                             "masks are indexed PNGs, 255 void")
    source.add_argument("--synthetic", action="store_true",
                        help="held-out synthetic clips (the test split of the moving scenes, "
                             "half with an object hidden for 3+ frames)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="SAM 2 weights: an official sam2.1_hiera_*.pt or ours (.safetensors) "
                        "(default: the shipped sam2_tiny)")
    # Not dest="model": that holds the eval group's MODEL ("sam2"), which names the command
    # in error messages.
    p.add_argument("--model", dest="config", metavar="NAME",
                   help="SAM 2 model, e.g. sam2.1_hiera_tiny, which needs its --checkpoint "
                        "(default: read from the checkpoint, or the shipped sam2_tiny)")
    p.add_argument("--sequences", metavar="A,B",
                   help="with --annotations: comma-separated sequences to measure (default: "
                        "all)")
    p.add_argument("--max-frames", type=int, metavar="N",
                   help="with --annotations: track and measure only the first N frames of "
                        "each sequence (a quick look; DAVIS figures use every frame)")
    # Defaults None, so that a flag of the other mode is told apart from its default.
    p.add_argument("--clips", type=int, metavar="N",
                   help="with --synthetic: how many clips (default: 50)")
    p.add_argument("--frames", type=int, metavar="N",
                   help="with --synthetic: frames per clip, 5 or more (default: 24)")
    p.add_argument("--size", type=int, metavar="PIXELS",
                   help="with --synthetic: the clips' side (default: 256, sam2_tiny's input)")
    p.add_argument("--prompt", choices=["click", "box", "both"],
                   help="with --synthetic: how objects are given on the first frame: a click "
                        "at the object's most interior pixel, its box, or each in turn "
                        "(default: both)")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction,
                   help="with --synthetic: also run the model without memory, frame by frame, "
                        "each frame prompted with the box of the previous mask (default: "
                        "--baseline; --no-baseline halves the time)")
    p.add_argument("--out", metavar="DIR",
                   help="folder for results.json, scores.png and contact_sheet.png (and, with "
                        "--annotations, masks/SEQ/*.png) (default: write nothing)")
    common(p, evaluate)


def _flags(names: tuple[str, ...]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _check_mode(args: argparse.Namespace) -> None:
    """A flag of the other mode is a one-line error, not silently ignored."""
    mode, other, wrong = (("--synthetic", "--annotations", ANNOTATIONS_ONLY) if args.synthetic
                          else ("--annotations", "--synthetic", SYNTHETIC_ONLY))
    given = tuple(n for n in wrong if getattr(args, n) is not None)
    if given:
        raise UserError(f"{_flags(given)} {'goes' if len(given) == 1 else 'go'} with {other}, "
                        f"not {mode}: drop {'it' if len(given) == 1 else 'them'}")


def _weights(args: argparse.Namespace) -> str:
    """--checkpoint, or the shipped sam2_tiny: the one choice segment-video makes (its note
    is said by :func:`_shipped_note`, once the inputs are checked)."""
    from attnvision.commands.segment_video import sam2_weights

    return sam2_weights("eval sam2", args.config, args.checkpoint)


def _shipped_note(args: argparse.Namespace) -> None:
    from attnvision.commands.segment_video import SHIPPED_NOTE

    if args.checkpoint is None:
        print(SHIPPED_NOTE, file=sys.stderr)


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
    _check_mode(args)
    if args.synthetic:
        return evaluate_synthetic(args)
    return evaluate_annotations(args)


def evaluate_annotations(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from attnvision.files import ensure_dir, write_json
    from attnvision.sam2 import build_sam2_video_predictor
    from attnvision.sam2.evaluation import evaluate_davis, plan_sequences

    weights = _weights(args)
    if args.max_frames is not None and args.max_frames < 3:
        raise UserError(f"--max-frames {args.max_frames}: give 3 or more (DAVIS measures the "
                        "frames between the first, whose mask is given, and the last)")
    if args.out is not None and Path(args.out).is_file():
        raise UserError(f"output folder {args.out} is an existing file: choose another --out")
    plans = plan_sequences(args.annotations, _names(args.sequences), args.max_frames)
    _shipped_note(args)
    predictor = build_sam2_video_predictor(args.config, weights)
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
              "model": model_name, "weights": weights, "max_frames": args.max_frames,
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


# -- synthetic clips --------------------------------------------------------------------------

RUN_NAMES = {(True, "click"): "click", (True, "box"): "box",
             (False, "click"): "click, no memory", (False, "box"): "box, no memory"}


def _synthetic_chart(runs: dict[str, dict[str, Any]], path: Path) -> Path:
    """J&F of each run, over all clips and over the occluded ones, side by side."""
    import numpy as np
    from matplotlib.figure import Figure

    from attnvision.viz.plots import save_figure

    colours = {"click": "#4c72b0", "box": "#55a868", "click, no memory": "#a6bddb",
               "box, no memory": "#b8e0b0"}
    first = next(iter(runs.values()))
    groups = [f"all clips\n({first['clips']} clips, {first['objects']} objects)",
              f"occluded clips\n({first['occluded_clips']} clips, "
              f"{first['objects_occluded']} objects)"]
    x = np.arange(len(groups))
    width = 0.8 / len(runs)
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    for k, (name, run) in enumerate(runs.items()):
        values = [run["jf"], run["jf_occluded"] if run["jf_occluded"] is not None else 0.0]
        found = (f"; found again {run['reappeared_count']}/{run['reappeared_clips']}"
                 if run["reappeared_clips"] else "")
        bars = ax.bar(x - 0.4 + (k + 0.5) * width, values, width, color=colours[name],
                      label=f"{name} ({run['fps']:.1f} frames/s{found})")
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=8)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("J&F (1 = the true masks)")
    ax.set_title("SAM 2 on held-out synthetic clips: prompted on frame 0, tracked to the end")
    ax.legend(loc="upper right", fontsize=7)
    return save_figure(fig, path)


def _sheet_frames(clip: Any) -> list[int]:
    """Four frames: an occluded clip's first, its first hidden one, the first after the
    hidden run and its last; another clip's spread evenly."""
    from attnvision.viz.video import sample_indices

    t_count = len(clip.frames)
    if clip.occlusion is None:
        picked = sample_indices(t_count, 4)
    else:
        hidden = clip.occlusion.frames
        picked = sorted({0, hidden[0], min(hidden[-1] + 1, t_count - 1), t_count - 1})
    return picked + [picked[-1]] * (4 - len(picked))  # full rows keep clips apart


def _synthetic_sheet(clips: list[Any], kept: dict[str, dict[int, Any]], path: Path) -> Path:
    """For each of the first clips: a row of true masks (frame 0 with the clicks), then a row
    of each run's predicted masks on the same frames, every object in its own colour."""
    import numpy as np

    from attnvision.sam2.synthetic_eval import first_frame_prompts
    from attnvision.viz.overlays import mask_overlay, save_png
    from attnvision.viz.video import contact_sheet

    thumbs, captions = [], []
    for clip in clips:
        ids = [o.id for o in clip.objects]
        picked = _sheet_frames(clip)
        prompts, _ = first_frame_prompts(clip, "click")
        clicks = np.array([p.point for p in prompts.values()]).reshape(-1, 2)
        hidden = set(clip.occlusion.frames) if clip.occlusion is not None else set()
        for name, labels in [("truth", clip.masks)] + [(n, k[clip.seed]) for n, k in
                                                       kept.items()]:
            for t in picked:
                points = clicks if name == "truth" and t == 0 else None
                thumbs.append(np.asarray(mask_overlay(
                    clip.frames[t], [labels[t] == o for o in ids], points=points,
                    labels=np.ones(len(points)) if points is not None else None)))
                captions.append(f"seed {clip.seed} t={t}{' hidden' if t in hidden else ''}: "
                                f"{name}")
    return save_png(contact_sheet(thumbs, captions, columns=4, thumb_width=200), path)


def _rows(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The table the plain-text report prints: each run over all clips and occluded ones."""
    rows = {}
    for name, run in runs.items():
        row = name.replace(",", "")  # "box no memory occluded" fits the table's 24 columns
        rows[row] = {"J&F": run["jf"], "J": run["j"], "F": run["f"]}
        if run["jf_occluded"] is not None:
            rows[f"{row} occluded"] = {"J&F": run["jf_occluded"], "J": run["j_occluded"],
                                       "F": run["f_occluded"]}
    return rows


def _summary(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, run in runs.items():
        first_pixel = (f"from their first pixel {run['reappeared_any_pixel_count']}/"
                       f"{run['occluded_clips']}")
        if run["reappeared_clips"]:
            found = (f"hidden objects found again {run['reappeared_count']}/"
                     f"{run['reappeared_clips']} ({run['reappeared']:.0%}; {first_pixel})")
        elif run["occluded_clips"]:
            found = f"no hidden object came back as far as the prompts' least share; {first_pixel}"
        else:
            found = "no occlusion measured"
        lines.append(f"{name}: {found}; {run['fps']:.1f} frames/s")
    return lines


def evaluate_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.data.moving_scenes import MIN_OCCLUSION_FRAMES
    from attnvision.files import ensure_dir, write_json
    from attnvision.sam2 import build_sam2
    from attnvision.sam2.synthetic_eval import MIN_SHARE, evaluate_clips, held_out_clips

    clips_n = 50 if args.clips is None else args.clips
    frames = 24 if args.frames is None else args.frames
    size = 256 if args.size is None else args.size
    prompts = ["click", "box"] if args.prompt in (None, "both") else [args.prompt]
    baseline = args.baseline is not False
    if clips_n < 1:
        raise UserError(f"--clips {clips_n}: give 1 or more (figures are meant on 50)")
    if frames < MIN_OCCLUSION_FRAMES:
        raise UserError(f"--frames {frames}: give {MIN_OCCLUSION_FRAMES} or more (an occluded "
                        "clip shows its object, hides it 3 frames, shows it again)")
    if args.out is not None and Path(args.out).is_file():
        raise UserError(f"output folder {args.out} is an existing file: choose another --out")
    weights = _weights(args)
    clips = held_out_clips(clips_n, frames, size)  # a bad --size is one line from here
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _shipped_note(args)
    model = build_sam2(args.config, weights, device=device)
    out = ensure_dir(args.out) if args.out is not None else None  # only now: inputs are good

    shown = {c.seed for c in clips[:SHEET_CLIPS]}
    runs: dict[str, dict[str, Any]] = {}
    kept: dict[str, dict[int, Any]] = {}
    for memory in [True, False] if baseline else [True]:
        for prompt in prompts:
            name = RUN_NAMES[memory, prompt]
            kept[name] = {}

            def keep(clip: Any, labels: Any, store: dict[int, Any] = kept[name]) -> None:
                if clip.seed in shown:
                    store[clip.seed] = labels

            runs[name] = evaluate_clips(model, clips, prompt, memory, progress=not args.quiet,
                                        on_clip=keep)
    model_name = getattr(model, "size_name", None) or args.config
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    head = next(iter(runs.values()))
    report = {"command": "eval sam2", "source": "synthetic", "model": model_name,
              "weights": weights, "clips": clips_n, "frames": frames, "size": size,
              "first_seed": 0, "device": device,
              "protocol": "held-out synthetic clips, half with an object hidden 3+ frames; "
                          f"every object showing >= {MIN_SHARE:.4g} of frame 0 prompted there "
                          "(a click at its most interior pixel, or its box), tracked to the "
                          "end; frames 1..T-1 measured (DAVIS J and F, means over objects); "
                          "found again: the hidden object's mean J >= 0.5 on the first 3 "
                          "frames it shows after the hidden run; no memory: each frame "
                          "prompted with the box of the previous mask",
              "J&F": head["jf"], "J": head["j"], "F": head["f"], "objects": head["objects"],
              "sequences": _rows(runs), "summary": _summary(runs), "runs": runs, "files": {}}
    if out is not None:
        files = {"results": str(out / "results.json"),
                 "scores": str(_synthetic_chart(runs, out / "scores.png")),
                 "contact_sheet": str(_synthetic_sheet([c for c in clips if c.seed in shown],
                                                       kept, out / "contact_sheet.png"))}
        report["files"] = files
        write_json(out / "results.json", report)
    return report
