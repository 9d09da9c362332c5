"""``attnvision segment-video``: SAM 2 tracks prompted objects through a video.

Writes, in ``--out``: ``masks/00000.png``... (DAVIS indexed PNGs, object ids as palette
indices), ``masks.json`` (per frame, per object: COCO RLE, area, box), ``overlay.mp4`` and
``contact_sheet.png``. Every prompt, the video and the weights are checked before ``--out`` is
created, and the folder is made only once tracking has finished, so a mistake leaves nothing.
Without ``--checkpoint`` the shipped ``sam2_tiny`` tracks (:mod:`attnvision.sam2.pretrained`).

``--stream`` tracks forward only, in one pass over the video decoded frame by frame, with
:class:`~attnvision.sam2.SAM2StreamPredictor`: memory stays bounded however long the video.
Each object starts on its first prompted frame; frames before any prompt have no objects.
The masks are then written as the frames come (each file whole), overlay.mp4 and masks.json
when the video ends.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import (
    add_command,
    check_on_frame,
    check_out_dir,
    common,
    frame_numbers,
    precision_option,
)
from attnvision.errors import UserError

# Said on stderr when the shipped model runs, once every input has been checked.
SHIPPED_NOTE = ("attnvision: using the shipped sam2_tiny; pass --checkpoint for an official "
                "SAM 2")
DEFAULT_OBJ = 1
MAX_OBJ = 254  # palette indices of the PNGs; 255 is DAVIS's "void"


class _ObjAction(argparse.Action):
    """``--obj ID``: the object the following --point / --box options prompt."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        namespace.obj = values
        namespace.objs_named = [*(getattr(namespace, "objs_named", None) or []), values]


class _PromptAction(argparse.Action):
    """``--point`` / ``--box``: kept in order with the object they belong to."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        prompts = list(getattr(namespace, "prompts", None) or [])
        prompts.append((self.dest, values, getattr(namespace, "obj", None)))
        namespace.prompts = prompts


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "segment-video",
                    "SAM 2: track objects through a video from point and box prompts")
    p.add_argument("video", metavar="VIDEO", help="a video file (mp4, webm, mov, mkv, avi) or a "
                                                  "folder of JPEG/PNG frames")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="SAM 2 weights: an official sam2.1_hiera_*.pt or ours (default: the "
                        "shipped sam2_tiny)")
    p.add_argument("--model", metavar="NAME",
                   help="SAM 2 model, e.g. sam2.1_hiera_tiny, which needs its --checkpoint "
                        "(default: read from the checkpoint, or the shipped sam2_tiny)")
    p.add_argument("--point", dest="point", action=_PromptAction, metavar="FRAME,X,Y[,LABEL]",
                   help="a click on frame FRAME (0 = first) in pixels; LABEL 1 = object "
                        "(default), 0 = background; repeatable")
    p.add_argument("--box", dest="box", action=_PromptAction, metavar="FRAME,X0,Y0,X1,Y1",
                   help="a box around the object on frame FRAME, in pixels; at most one per "
                        "object and frame; repeatable")
    p.add_argument("--obj", type=int, action=_ObjAction, metavar="ID",
                   help=f"the object (1 to {MAX_OBJ}; its id and colour in the masks) that the "
                        "--point and --box options after it prompt, up to the next --obj; "
                        f"those before any --obj prompt object {DEFAULT_OBJ}. E.g. --point "
                        "0,50,40 --obj 2 --box 0,100,20,160,90 prompts objects 1 and 2")
    p.add_argument("--out", required=True,
                   help="folder for masks/*.png, masks.json, overlay.mp4 and contact_sheet.png")
    p.add_argument("--stream", action="store_true",
                   help="one forward pass, frames decoded one at a time and none kept: memory "
                        "stays bounded for long videos (objects start on their first prompted "
                        "frame; no tracking backwards)")
    precision_option(p)
    common(p, segment_video)
    p.set_defaults(prompts=[], obj=None, objs_named=[])


def _numbers(option: str, text: str, count: tuple[int, ...], form: str) -> list[float]:
    return frame_numbers(option, text, count, form,
                         "--point 0,120,80 or --box 0,10,20,200,180")


def parse_prompts(prompts: list[tuple[str, str, int | None]], objs_named: list[int]
                  ) -> list[dict[str, Any]]:
    """The --point / --box options as {"obj", "frame", "point" + "label" | "box"}."""
    for obj in objs_named:
        if not 1 <= obj <= MAX_OBJ:
            raise UserError(f"--obj {obj}: object ids run from 1 to {MAX_OBJ} (they are the "
                            "masks' palette indices; 0 is the background)")
    parsed = []
    for kind, text, obj in prompts:
        obj = DEFAULT_OBJ if obj is None else obj
        if kind == "point":
            v = _numbers("point", text, (3, 4), "FRAME,X,Y or FRAME,X,Y,LABEL")
            label = v[3] if len(v) == 4 else 1
            if label not in (0, 1):
                raise UserError(f"--point {text!r}: the label must be 1 (object) or 0 "
                                "(background)")
            parsed.append({"obj": obj, "frame": int(v[0]), "point": v[1:3], "label": int(label)})
        else:
            v = _numbers("box", text, (5,), "FRAME,X0,Y0,X1,Y1")
            if v[3] <= v[1] or v[4] <= v[2]:
                raise UserError(f"--box {text!r}: X1 must exceed X0 and Y1 exceed Y0")
            parsed.append({"obj": obj, "frame": int(v[0]), "box": v[1:]})
    if not parsed:
        raise UserError("give a prompt: --point FRAME,X,Y[,LABEL] and/or --box "
                        "FRAME,X0,Y0,X1,Y1 (repeatable; --obj ID before them for more objects)")
    prompted = {p["obj"] for p in parsed}
    for obj in objs_named:
        if obj not in prompted:
            raise UserError(f"--obj {obj} has no --point or --box after it: give the object a "
                            "prompt, or drop the --obj")
    return parsed


def check_prompts(prompts: list[dict[str, Any]], num_frames: int, height: int,
                  width: int) -> None:
    """Frames in range and coordinates on the frame, each mistake named by its option."""
    for p in prompts:
        what = (f"--point {p['frame']},{','.join(f'{c:g}' for c in p['point'])}"
                if "point" in p else
                f"--box {p['frame']},{','.join(f'{c:g}' for c in p['box'])}")
        if p["obj"] != DEFAULT_OBJ:
            what += f" (object {p['obj']})"
        coords = p["point"] if "point" in p else p["box"]
        check_on_frame(what, p["frame"], coords[0::2], coords[1::2], num_frames, height, width)
    seen = set()
    for p in prompts:
        if "box" in p:
            key = (p["obj"], p["frame"])
            if key in seen:
                raise UserError(f"object {p['obj']} has two --box on frame {p['frame']}: give "
                                "one box per object and frame (add --point clicks to refine)")
            seen.add(key)


def sam2_weights(command: str, model: str | None, checkpoint: str | None) -> str:
    """The weights file to load: --checkpoint, or the shipped sam2_tiny when none is given
    and --model is unset or names the shipped file's model. A --model that names another
    model needs its file: one line saying where to get it, as does an unknown name."""
    from attnvision.sam2.checkpoints import where_to_get
    from attnvision.sam2.configs import SAM2_CONFIGS, resolve_name
    from attnvision.sam2.pretrained import shipped_checkpoint, shipped_model

    name = None if model is None else resolve_name(model)
    if model is not None and name is None:
        raise UserError(f"unknown SAM 2 model {model!r}: choose one of "
                        f"{', '.join(SAM2_CONFIGS)}")
    if checkpoint is not None:
        return checkpoint
    shipped = None if name is None else shipped_model()
    if shipped is not None and name != shipped:
        raise UserError(f"{command} --model {model} needs SAM 2 weights: pass --checkpoint "
                        f"FILE (or drop --model for the shipped model, {shipped}); "
                        f"{where_to_get(name)}")
    return str(shipped_checkpoint())


def segment_video(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    import torch

    from attnvision.data.video import open_video
    from attnvision.precision import autocast
    from attnvision.sam2 import build_sam2

    prompts = parse_prompts(args.prompts, args.objs_named)
    weights = sam2_weights("segment-video", args.model, args.checkpoint)
    if importlib.util.find_spec("av") is None:
        raise UserError("writing overlay.mp4 needs PyAV: pip install 'attnvision[video]'")
    check_out_dir(args.out)
    opened = open_video(args.video)  # not found, unreadable, empty: one line, before the model
    height, width = opened.size
    fps, length = opened.fps, opened.length
    if length is not None:
        check_prompts(prompts, length, height, width)
    del opened

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.checkpoint is None:
        print(SHIPPED_NOTE, file=sys.stderr)
    # As build_sam2_video_predictor: clicked masks enter the memory thresholded.
    model = build_sam2(args.model, weights, device=device, apply_postprocessing=True)
    model_name = getattr(model, "size_name", None) or args.model
    with autocast(args.precision, model.device):
        if args.stream:
            written = _stream(args, model, prompts, (height, width), fps, length)
        else:
            written = _whole(args, model, prompts, (height, width), fps)
    n, objects, files, mask_files = written
    return {"command": "segment-video", "video": args.video, "size": [width, height],
            "frames": n, "objects": objects, "prompts": prompts,
            "model": model_name, "precision": args.precision, "stream": args.stream,
            "weights": weights, "files": files, "mask_files": mask_files}


def _frame_labels(obj_ids: list[int], logits: Any, size: tuple[int, int]
                  ) -> tuple[Any, list[dict[str, Any]]]:
    """One frame's (H, W) uint8 object ids and its masks.json records."""
    import numpy as np

    from attnvision.commands.sam import bbox_xywh
    from attnvision.data.rle import masks_to_rle, rle_to_coco

    masks = (logits[:, 0] > 0).cpu()
    label = np.zeros(size, np.uint8)
    records = []
    for obj_id, mask, rle in zip(obj_ids, masks, masks_to_rle(masks), strict=True):
        m = mask.numpy()
        label[m] = obj_id  # later objects on top where they overlap
        records.append({"id": int(obj_id), "segmentation": rle_to_coco(rle),
                        "area": int(m.sum()), "bbox": bbox_xywh(m)})
    return label, records


def _progress(args: argparse.Namespace, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="segment-video", unit="frame", file=sys.stderr,
                disable=args.quiet)


def _finish(args: argparse.Namespace, out: Path, n: int, objects: list[int],
            size: tuple[int, int], records: list[list[dict[str, Any]]],
            thumbs: dict[int, Any]) -> dict[str, str]:
    """masks.json and the contact sheet, once every frame is done."""
    from attnvision.files import write_json
    from attnvision.viz.overlays import save_png
    from attnvision.viz.video import contact_sheet

    height, width = size
    masks_json = write_json(out / "masks.json", {
        "video": args.video, "size": [width, height], "frames": n, "objects": objects,
        "bbox_format": "xywh",
        "annotations": [{"frame": t, "objects": records[t]} for t in range(n)]})
    order = sorted(thumbs)
    sheet = save_png(contact_sheet([thumbs[t] for t in order], [f"frame {t}" for t in order]),
                     out / "contact_sheet.png")
    return {"masks": str(out / "masks"), "masks_json": str(masks_json),
            "overlay": str(out / "overlay.mp4"), "contact_sheet": str(sheet)}


def _add_prompts(add: Any, prompts: list[dict[str, Any]]) -> list[int]:
    """Each object's prompts, one call per object and frame; the objects in command-line
    order."""
    objects = list(dict.fromkeys(p["obj"] for p in prompts))
    for obj in objects:
        for frame in sorted({p["frame"] for p in prompts if p["obj"] == obj}):
            here = [p for p in prompts if p["obj"] == obj and p["frame"] == frame]
            points = [p["point"] for p in here if "point" in p]
            labels = [p["label"] for p in here if "point" in p]
            box = next((p["box"] for p in here if "box" in p), None)
            add(frame, obj, points=points or None, labels=labels or None, box=box)
    return objects


def _whole(args: argparse.Namespace, model: Any, prompts: list[dict[str, Any]],
           size: tuple[int, int], fps: float) -> tuple[int, list[int], dict[str, str], list[str]]:
    """The video predictor: forward from the first prompted frame, then back from it."""
    import numpy as np
    import torch

    from attnvision.data.davis import write_indexed_png
    from attnvision.data.video import open_video, write_video
    from attnvision.files import ensure_dir
    from attnvision.sam2 import SAM2VideoPredictor
    from attnvision.viz.overlays import mask_overlay
    from attnvision.viz.video import sample_indices

    predictor = SAM2VideoPredictor(model)
    state = predictor.init_state(args.video)
    n = state.num_frames
    check_prompts(prompts, n, *size)
    objects = _add_prompts(functools.partial(predictor.add_new_points_or_box, state), prompts)
    start = min(p["frame"] for p in prompts)
    total = (n - start) + (start + 1 if start > 0 else 0)
    labels_per_frame: list[Any] = [None] * n
    records: list[Any] = [None] * n
    with _progress(args, total) as bar:
        for reverse in [False, True] if start > 0 else [False]:
            for t, obj_ids, logits in predictor.propagate_in_video(
                    state, start_frame_idx=start, reverse=reverse):
                labels_per_frame[t], records[t] = _frame_labels(obj_ids, logits, size)
                bar.update(1)
    del state, predictor
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    out = ensure_dir(args.out)  # only now: every mistake above leaves no folder
    mask_files = [str(write_indexed_png(out / "masks" / f"{t:05d}.png", labels_per_frame[t]))
                  for t in range(n)]
    sampled = set(sample_indices(n))
    thumbs: dict[int, np.ndarray] = {}

    def overlays():
        for t, frame in enumerate(open_video(args.video)):
            if t >= n:
                break
            picture = np.asarray(mask_overlay(
                frame, [labels_per_frame[t] == obj for obj in objects]))
            if t in sampled:
                thumbs[t] = picture
            yield picture

    write_video(out / "overlay.mp4", overlays(), fps=fps)
    return n, objects, _finish(args, out, n, objects, size, records, thumbs), mask_files


def _stream(args: argparse.Namespace, model: Any, prompts: list[dict[str, Any]],
            size: tuple[int, int], fps: float, length: int | None
            ) -> tuple[int, list[int], dict[str, str], list[str]]:
    """The stream predictor: one forward pass, each frame written as it comes."""
    import numpy as np

    from attnvision.data.davis import write_indexed_png
    from attnvision.data.video import open_video, write_video
    from attnvision.files import ensure_dir
    from attnvision.sam2 import SAM2StreamPredictor
    from attnvision.viz.overlays import mask_overlay
    from attnvision.viz.video import sample_indices

    stream = SAM2StreamPredictor(model)
    objects = _add_prompts(stream.add_prompt, prompts)
    # A video of unknown length is sampled every 50 frames.
    sampled = set(sample_indices(length)) if length else set(range(0, 400, 50))
    out = ensure_dir(args.out)  # every prompt and the video are checked above
    records: list[list[dict[str, Any]]] = []
    mask_files: list[str] = []
    thumbs: dict[int, np.ndarray] = {}

    def overlays():
        with _progress(args, length) as bar:
            # The video is decoded twice, side by side: once for the tracker, which keeps
            # no frame, once for the overlay; decoding costs little beside the model.
            tracked = stream.track(open_video(args.video))
            for (t, obj_ids, logits), frame in zip(tracked, open_video(args.video),
                                                    strict=False):
                label, frame_records = _frame_labels(obj_ids, logits, size)
                records.append(frame_records)
                mask_files.append(str(write_indexed_png(out / "masks" / f"{t:05d}.png",
                                                        label)))
                picture = np.asarray(mask_overlay(frame, [label == obj for obj in objects]))
                if t in sampled:
                    thumbs[t] = picture
                bar.update(1)
                yield picture

    write_video(out / "overlay.mp4", overlays(), fps=fps)
    n = len(records)
    return n, objects, _finish(args, out, n, objects, size, records, thumbs), mask_files
