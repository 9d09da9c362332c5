"""``attnvision track``: CoTracker3 tracks points through a video.

The points are a grid over one frame (``--grid N``, N x N, the default 10 x 10), the points
of that grid inside a mask (``--mask``, a grid of :data:`MASK_GRID` x :data:`MASK_GRID`), or
points given one by one (``--point FRAME,X,Y``, each on its own frame). The mask is a PNG of
the video's size (``--mask MASK.png``) or a click (``--mask X,Y``: two numbers, frame
--grid-query-frame's pixels) that a segmenting model turns into the mask: it segments that
frame from the one click and the best-scoring of its three masks is kept, as ``attnvision
segment`` keeps it. The model is the shipped SAM ``sam_tiny`` unless ``--sam-checkpoint`` (a
SAM) or ``--sam2-checkpoint`` (a SAM 2, through its image predictor) names another; the
default is sam_tiny, not the shipped sam2_tiny, because on single clicks it segments the
moving scenes' objects better (87 objects of 40 test clips, 240x320, each clicked at its
pixel nearest its centroid: IoU 0.78 against 0.70, share of the mask on the object 0.87
against 0.81), for 0.27 s a frame against 0.06 s on one CPU core.
Offline (the default) the whole video is tracked at once by
:class:`~attnvision.cotracker.CoTrackerPredictor` (``--backward`` also tracks each point
back from its frame); ``--online`` runs :class:`~attnvision.cotracker.CoTrackerOnlinePredictor`
over the video decoded frame by frame, in the official chunks, holding one window of frames.
Grids are the predictors' own (laid out at the model's resolution, as the official ones
are); masked grids and given points are tracked with the predictors' 6 x 6 support grid.

Writes, in ``--out``: ``tracks.npz`` (tracks (T, N, 2) float32 (x, y) video pixels,
visibility (T, N) bool, queries (N, 3) (t, x, y)), ``tracks.json`` (per track its query and
per frame x, y, visible; positions to 1/1000 pixel), ``tracks.csv`` (track, frame, x, y,
visible as 1/0), ``overlay.mp4`` (each point with a trail fading over its last 10 frames,
coloured per track, drawn from its query frame on), ``trajectories.png`` (the first frame
dimmed, every track's path on it, and the outline of a ``--mask``) and, for a click,
``mask.png`` (the mask the click gave, white on black; its click, model, score, area and box
are in the results under "mask"). Every option, the video, the mask (for a click: the click
on the frame, the segmenting weights, a mask that is not empty) and the weights are checked
before ``--out`` is created, and the folder is made only once tracking has finished, so a
mistake leaves nothing.

The tracker is the shipped ``cotracker_tiny`` (1.8 M parameters, trained here on synthetic
videos at 192 x 256 and run at 240 x 320) unless ``--checkpoint`` names another: the
official ``scaled_offline.pth`` / ``scaled_online.pth``, or ours as safetensors with the same
keys. ``--model-resolution`` defaults to the one the file records, else the released models'
384 x 512.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from attnvision.commands.options import (
    add_command,
    check_on_frame,
    check_out_dir,
    common,
    frame_numbers,
)
from attnvision.errors import UserError

DEFAULT_GRID = 10  # the official demo's grid
MASK_GRID = 30  # the grid a --mask keeps the points of
MODEL_RESOLUTION = (384, 512)  # the released models'
OFFICIAL_WEIGHTS = "https://huggingface.co/facebook/cotracker3"


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "track", "CoTracker3: track points through a video (a grid, "
                                       "the grid inside a mask, or given points)")
    p.add_argument("video", metavar="VIDEO", help="a video file (mp4, webm, mov, mkv, avi) or a "
                                                  "folder of JPEG/PNG frames")
    p.add_argument("--grid", type=int, metavar="N",
                   help=f"track an N x N grid of points of frame --grid-query-frame (default: "
                        f"{DEFAULT_GRID} when neither --point nor --mask is given)")
    p.add_argument("--point", action="append", metavar="FRAME,X,Y",
                   help="track the point (X, Y) of frame FRAME (0 = first), in pixels; "
                        "repeatable")
    p.add_argument("--mask", metavar="MASK.png|X,Y",
                   help=f"track the points of a {MASK_GRID} x {MASK_GRID} grid that fall inside "
                        "a mask on frame --grid-query-frame: a PNG (non-black pixels; the "
                        "video's size), or a click X,Y in pixels on that frame that SAM turns "
                        "into the mask (written as mask.png)")
    p.add_argument("--grid-query-frame", type=int, metavar="F",
                   help="with --grid or --mask: the frame the points are placed on (default: 0)")
    p.add_argument("--online", action="store_true",
                   help="the online model, over the video in chunks of half its window, "
                        "decoded frame by frame (use scaled_online.pth)")
    p.add_argument("--backward", action="store_true",
                   help="offline: also track each point back from its frame to the first "
                        "(otherwise frames before a point's own are not drawn)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="CoTracker3 weights: the official scaled_offline.pth / "
                        f"scaled_online.pth ({OFFICIAL_WEIGHTS}) or ours (.safetensors)")
    p.add_argument("--sam-checkpoint", metavar="FILE",
                   help="with --mask X,Y: the SAM that segments the click, an official "
                        "sam_vit_*.pth or ours (default: the shipped sam_tiny)")
    p.add_argument("--sam2-checkpoint", metavar="FILE",
                   help="with --mask X,Y: segment the click with this SAM 2 instead, through "
                        "its image predictor (an official sam2.1_hiera_*.pt or ours)")
    p.add_argument("--model-resolution", metavar="H,W",
                   help="the size frames are resized to for the model (default: 384,512, the "
                        "released models'); multiples of 4")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for tracks.npz, tracks.json, tracks.csv, overlay.mp4, "
                        "trajectories.png and, for --mask X,Y, mask.png")
    common(p, track)


# -- checking the options ----------------------------------------------------------------------

def query_mode(args: argparse.Namespace) -> str:
    """"grid", "points" or "mask": which one of --grid / --point / --mask was given."""
    given = [name for name, value in (("--grid", args.grid), ("--point", args.point),
                                      ("--mask", args.mask)) if value is not None]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} were given together: choose one of --grid N, "
                        "--point FRAME,X,Y (repeatable) or --mask MASK.png")
    if args.grid is not None and args.grid < 1:
        raise UserError(f"--grid {args.grid}: give 1 or more points a side (e.g. --grid 10)")
    if args.grid_query_frame is not None and args.grid_query_frame < 0:
        raise UserError(f"--grid-query-frame {args.grid_query_frame}: give a frame, 0 or more "
                        "(0 = first)")
    if args.point is not None and args.grid_query_frame is not None:
        raise UserError("--grid-query-frame goes with --grid or --mask; each --point names its "
                        "own frame: drop --grid-query-frame")
    if args.online and args.backward:
        raise UserError("--backward needs the whole video at once: drop --online (the online "
                        "model tracks forwards only)")
    return {"--point": "points", "--mask": "mask"}.get(given[0] if given else "", "grid")


def parse_click(text: str) -> tuple[float, float] | None:
    """--mask as a click (x, y) when it is two numbers, else None (a mask file). Other lists
    of numbers are refused in one line, unless a file has that name."""
    import math
    from pathlib import Path

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    if len(values) == 2 and all(math.isfinite(v) for v in values):
        return values[0], values[1]
    if len(values) != 2 and Path(text).exists():
        return None
    raise UserError(f"--mask {text!r} is neither a click X,Y in pixels (e.g. --mask 120,80) nor "
                    "a mask file (e.g. --mask MASK.png)")


def check_segmenter(args: argparse.Namespace, click: tuple[float, float] | None) -> None:
    """--sam-checkpoint / --sam2-checkpoint: one of them at most, and only for a click."""
    given = [name for name, value in (("--sam-checkpoint", args.sam_checkpoint),
                                      ("--sam2-checkpoint", args.sam2_checkpoint))
             if value is not None]
    if given and click is None:
        raise UserError(f"{given[0]} segments a click: give --mask X,Y (or drop {given[0]})")
    if len(given) > 1:
        raise UserError("--sam-checkpoint and --sam2-checkpoint were given together: choose "
                        "the one model that segments the click")


def parse_points(texts: list[str]) -> list[tuple[int, float, float]]:
    """--point FRAME,X,Y options as (frame, x, y)."""
    points = []
    for text in texts:
        frame, x, y = frame_numbers("point", text, (3,), "FRAME,X,Y", "--point 0,120,80")
        if frame < 0:
            raise UserError(f"--point {text!r}: the frame must be 0 or more (0 = first)")
        points.append((int(frame), x, y))
    return points


def resolution_value(text: str, option: str = "--model-resolution",
                     example: str = "384,512") -> tuple[int, int]:
    """An H,W model resolution given as ``option``: whole numbers, 32 or more, multiples of
    the stride 4; one line naming the option otherwise."""
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        h = w = 0
    if h < 32 or w < 32 or h % 4 or w % 4:
        raise UserError(f"{option} {text!r} is not H,W: two whole numbers, 32 or more and "
                        f"multiples of 4 (e.g. {option} {example})")
    return h, w


def parse_resolution(text: str | None, weights: str | None = None,
                     option: str = "--model-resolution") -> tuple[int, int]:
    """--model-resolution H,W; without it, the resolution ``weights`` record (ours), else the
    released models' 384 x 512."""
    if text is None:
        from attnvision.cotracker.checkpoints import stored_resolution

        return (None if weights is None else stored_resolution(weights)) or MODEL_RESOLUTION
    return resolution_value(text, option)


def weights_file(checkpoint: str | None, online: bool) -> str:
    """--checkpoint, else the shipped cotracker_tiny; one line saying where the official
    files are when neither is there."""
    if checkpoint is None:
        from attnvision.cotracker.pretrained import has_shipped, shipped_checkpoint

        if has_shipped():
            return str(shipped_checkpoint())
        first, other = (("scaled_online.pth", "scaled_offline.pth without --online") if online
                        else ("scaled_offline.pth", "scaled_online.pth for --online"))
        raise UserError(f"this install ships no CoTracker3: pass --checkpoint FILE (the "
                        f"official weights: {OFFICIAL_WEIGHTS} : {first}, or {other})")
    return checkpoint


def check_points(points: list[tuple[int, float, float]], num_frames: int | None,
                 height: int, width: int) -> None:
    """Each point on the frame, and on a frame of the video where its length is known (a
    stream's is checked once it has been read)."""
    for frame, x, y in points:
        check_on_frame(f"--point {frame},{x:g},{y:g}", frame, [x], [y],
                       frame + 1 if num_frames is None else num_frames, height, width)


def check_query_frame(frame: int, num_frames: int) -> None:
    if not 0 <= frame < num_frames:
        raise UserError(f"--grid-query-frame {frame} is out of range: the video has "
                        f"{num_frames} frames (0 to {num_frames - 1})")


def read_mask(path: str, size: tuple[int, int]) -> Any:
    """(H, W) bool: the non-black pixels of the mask image, which must have the video's
    size and at least one such pixel."""
    from attnvision.data.images import load_image

    pixels = load_image(path)  # not found, not an image: one line
    if pixels.shape[:2] != size:
        raise UserError(f"--mask {path} is {pixels.shape[1]}x{pixels.shape[0]}, the video "
                        f"{size[1]}x{size[0]}: give a mask of the video's size")
    mask = pixels.max(axis=2) > 0
    if not mask.any():
        raise UserError(f"--mask {path} is empty (every pixel black): mark the region to "
                        "track in white (or any colour) on black")
    return mask


def load_segmenter(sam_checkpoint: str | None, sam2_checkpoint: str | None, device: str
                   ) -> tuple[Any, dict[str, Any], str | None]:
    """The predictor that turns a click into a mask: SAM 2's image predictor for
    ``sam2_checkpoint``, else SAM's for ``sam_checkpoint``, else the shipped sam_tiny's (which
    segments single clicks better than the shipped sam2_tiny); what it is for the results;
    the note to say on stderr when the shipped model is used (one-line errors for a file that
    is missing or not a SAM / SAM 2)."""
    from attnvision.sam import SamPredictor

    if sam2_checkpoint is not None:
        from attnvision.sam2 import SAM2ImagePredictor, build_sam2

        sam2 = build_sam2(None, sam2_checkpoint, device=device)
        return SAM2ImagePredictor(sam2), {"model": sam2.size_name, "family": "SAM 2",
                                          "weights": sam2_checkpoint}, None
    if sam_checkpoint is not None:
        from attnvision.commands.sam import load_sam

        sam = load_sam(sam_checkpoint, None).to(device)
        return SamPredictor(sam), {"model": sam.size_name, "family": "SAM",
                                   "weights": sam_checkpoint}, None
    from attnvision.sam.pretrained import load_shipped, shipped_checkpoint

    sam = load_shipped().to(device)
    return SamPredictor(sam), {"model": sam.size_name, "family": "SAM",
                               "weights": str(shipped_checkpoint())}, (
        "attnvision: the click is segmented by the shipped sam_tiny (trained on synthetic "
        "scenes); pass --sam-checkpoint or --sam2-checkpoint for another model")


def click_mask(predictor: Any, frame: Any, click: tuple[float, float]) -> tuple[Any, float]:
    """(H, W) bool: the best-scoring of the three masks a lone click gives on ``frame``
    (as ``attnvision segment``, the official notebooks and the web page keep), and its
    predicted IoU."""
    import numpy as np

    predictor.set_image(frame)
    masks, scores, _ = predictor.predict(point_coords=np.array([click], np.float64),
                                         point_labels=np.array([1]), multimask_output=True)
    best = int(np.argsort(-scores, kind="stable")[0])
    return np.asarray(masks[best]) > 0, float(scores[best])


def segment_click(args: argparse.Namespace, click: tuple[float, float], frame: Any,
                  query_frame: int, device: str) -> tuple[Any, dict[str, Any], str | None]:
    """The mask of ``--mask X,Y`` on ``frame`` (frame ``query_frame``), what the results say
    of it, and the note for stderr when the shipped model segmented it (to say once every
    input is checked); one line when the mask comes out empty."""
    import torch

    from attnvision.commands.sam import bbox_xywh

    predictor, model, note = load_segmenter(args.sam_checkpoint, args.sam2_checkpoint, device)
    with torch.inference_mode():
        mask, score = click_mask(predictor, frame, click)
    del predictor
    x, y = click
    if not mask.any():
        raise UserError(f"--mask {x:g},{y:g}: {model['model']} found nothing at the click on "
                        f"frame {query_frame} (an empty mask): click inside the object, or "
                        "pass a mask PNG (--mask MASK.png)")
    return mask, {"click": [x, y], **model, "score": round(score, 6), "area": int(mask.sum()),
                  "bbox": bbox_xywh(mask)}, note


def frame_of(video: str, index: int) -> Any:
    """Frame ``index`` of the video, decoded up to it; one line when the video is shorter
    (a stream, whose length is not known beforehand)."""
    from attnvision.data.video import open_video

    count = 0
    for count, frame in enumerate(open_video(video), 1):
        if count > index:
            return frame
    check_query_frame(index, count)  # the video is shorter: one line
    raise AssertionError("not reached")


def grid_queries(grid: int, frame: int, size: tuple[int, int],
                 resolution: tuple[int, int], mask: Any = None) -> Any:
    """(N, 3) float32 (t, x, y) video pixels of the predictors' grid: ``grid`` x ``grid``
    points laid out at the model's ``resolution`` and scaled to the video's ``size`` (corners
    aligned, as the predictors scale), only those inside ``mask`` (read at the model's
    resolution, nearest pixel, as the offline predictor reads a segmentation mask)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from attnvision.cotracker.predictor import get_points_on_a_grid

    points = get_points_on_a_grid(grid, resolution)[0]  # (N, 2) at the model's resolution
    if mask is not None:
        small = F.interpolate(torch.from_numpy(mask).float()[None, None], resolution,
                              mode="nearest")[0, 0]
        inside = small[points[:, 1].round().long(), points[:, 0].round().long()] > 0
        points = points[inside]
    (h, w), (rh, rw) = size, resolution
    scale = torch.tensor([(w - 1) / (rw - 1), (h - 1) / (rh - 1)])
    xy = (points * scale).numpy().astype(np.float32)
    return np.concatenate([np.full((len(xy), 1), frame, np.float32), xy], axis=1)


# -- the command ---------------------------------------------------------------------------------

def track(args: argparse.Namespace) -> dict[str, Any]:
    import importlib.util

    import numpy as np
    import torch

    from attnvision.cotracker import build_cotracker
    from attnvision.data.video import open_video, read_frames

    mode = query_mode(args)
    click = parse_click(args.mask) if mode == "mask" else None
    check_segmenter(args, click)
    points = parse_points(args.point) if mode == "points" else []
    grid = (args.grid or DEFAULT_GRID) if mode == "grid" else MASK_GRID
    query_frame = args.grid_query_frame or 0
    weights = weights_file(args.checkpoint, args.online)
    resolution = parse_resolution(args.model_resolution, weights)
    if importlib.util.find_spec("av") is None:
        raise UserError("writing overlay.mp4 needs PyAV: pip install 'attnvision[video]'")
    check_out_dir(args.out)
    opened = open_video(args.video)  # not found, unreadable, empty: one line, before the model
    size, fps, length = opened.size, opened.fps, opened.length
    del opened
    # Offline reads the whole video now (its length known, a decoding error said before the
    # model loads); online reads it frame by frame while tracking.
    frames = None if args.online else read_frames(args.video)
    if frames is not None:
        length = len(frames)
    _check_frames(mode, points, query_frame, length, size)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mask = segmented = note = None
    if click is not None:
        check_on_frame(f"--mask {click[0]:g},{click[1]:g}", query_frame, [click[0]],
                       [click[1]], query_frame + 1 if length is None else length, *size)
        frame = frames[query_frame] if frames is not None else frame_of(args.video, query_frame)
        mask, segmented, note = segment_click(args, click, frame, query_frame, device)
    elif mode == "mask":
        mask = read_mask(args.mask, size)
    if mode == "points":
        queries = np.array(points, np.float32).reshape(-1, 3)
    else:
        queries = grid_queries(grid, query_frame, size, resolution, mask)
        if len(queries) == 0:
            fix = ("click a larger object or pass a mask PNG" if click is not None
                   else "mark a larger region")
            raise UserError(f"--mask {args.mask}: no point of the {MASK_GRID} x {MASK_GRID} "
                            f"grid falls inside {'its mask' if click else 'it'}: {fix}, or "
                            "give --point FRAME,X,Y")
    if note:  # only now: a mistake above is the one line on stderr
        print(note, file=sys.stderr)

    model = build_cotracker(weights, offline=not args.online, model_resolution=resolution,
                            device=device)
    start = time.perf_counter()
    if frames is None:
        tracks, visible = _online(args, model, mode, grid, query_frame, queries, length)
        _check_frames(mode, points, query_frame, len(tracks), size)  # a stream's length
    else:
        tracks, visible = _offline(args, model, frames, mode, grid, query_frame, queries)
    seconds = time.perf_counter() - start
    # The cut behind "visible": the model file's own, else the official one.
    cut = model.config.online_threshold if args.online else model.config.offline_threshold
    del model, frames
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    files = _write(args, tracks, visible, queries, size, fps, mask, click is not None)
    height, width = size
    mask_info = None
    if mask is not None:  # the PNG's file, area and box, or the click's mask.png and model too
        from attnvision.commands.sam import bbox_xywh

        mask_info = {"file": files.get("mask", args.mask), "frame": query_frame,
                     **(segmented or {"click": None, "area": int(mask.sum()),
                                      "bbox": bbox_xywh(mask)})}
    return {"command": "track", "video": args.video, "frames": len(tracks),
            "size": [width, height], "points": len(queries), "seconds": seconds,
            "queries_from": mode, "mask": mask_info, "online": args.online,
            "backward": args.backward, "model_resolution": list(resolution),
            "weights": weights, "device": device, "visible_threshold": cut,
            "visible": float(visible.mean()) if visible.size else 0.0, "files": files}


def _check_frames(mode: str, points: list[tuple[int, float, float]], query_frame: int,
                  num_frames: int | None, size: tuple[int, int]) -> None:
    if mode == "points":
        check_points(points, num_frames, *size)
    elif num_frames is not None:
        check_query_frame(query_frame, num_frames)


def _progress(args: argparse.Namespace, total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="track", unit="frame", file=sys.stderr, disable=args.quiet)


def _offline(args: argparse.Namespace, model: Any, frames: Any, mode: str, grid: int,
             query_frame: int, queries: Any) -> tuple[Any, Any]:
    """The whole video at once: the predictor's own grid, or the queries with its support
    grid."""
    import torch

    from attnvision.cotracker import CoTrackerPredictor
    from attnvision.cotracker.predictor import video_tensor

    predictor = CoTrackerPredictor(model)
    video = video_tensor(frames, next(model.parameters()).device)
    with _progress(args, len(frames)) as bar:
        if mode == "grid":
            tracks, visible = predictor(video, grid_size=grid, grid_query_frame=query_frame,
                                        backward_tracking=args.backward)
        else:
            q = torch.as_tensor(queries, device=video.device)[None]
            tracks, visible = predictor(video, queries=q, backward_tracking=args.backward)
        bar.update(len(frames))
    return tracks[0].float().cpu().numpy(), visible[0].cpu().numpy().astype(bool)


def _online(args: argparse.Namespace, model: Any, mode: str, grid: int, query_frame: int,
            queries: Any, length: int | None) -> tuple[Any, Any]:
    """The online predictor over the video decoded frame by frame, in the official chunks."""
    from attnvision.cotracker import CoTrackerOnlinePredictor
    from attnvision.cotracker.predictor import track_online
    from attnvision.data.video import open_video

    predictor = CoTrackerOnlinePredictor(model)
    kwargs: dict[str, Any] = (
        {"grid_size": grid, "grid_query_frame": query_frame} if mode == "grid"
        else {"queries": queries, "add_support_grid": True})
    with _progress(args, length) as bar:
        return track_online(predictor, open_video(args.video), on_frames=bar.update, **kwargs)


def _write(args: argparse.Namespace, tracks: Any, visible: Any, queries: Any,
           size: tuple[int, int], fps: float, mask: Any = None,
           save_mask: bool = False) -> dict[str, str]:
    """Every output file, in a folder made only now that tracking has worked; ``mask`` is
    outlined on trajectories.png, and written as mask.png with ``save_mask``."""
    import numpy as np

    from attnvision.data.video import open_video, write_video
    from attnvision.files import atomic_path, ensure_dir, write_json
    from attnvision.viz.overlays import save_png
    from attnvision.viz.tracks import overlay_frames, track_colours, trajectories_picture

    out = ensure_dir(args.out)
    tracks = np.asarray(tracks, np.float32)
    visible = np.asarray(visible, bool)
    queries = np.asarray(queries, np.float32)
    with atomic_path(out / "tracks.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, tracks=tracks, visibility=visible, queries=queries)
    height, width = size
    write_json(out / "tracks.json", {
        "video": args.video, "size": [width, height], "frames": len(tracks),
        "coordinates": "x, y in video pixels, pixel centres at whole numbers",
        "tracks": [{"id": i, "query": {"frame": int(q[0]), "x": round(float(q[1]), 3),
                                       "y": round(float(q[2]), 3)},
                    "frames": [{"frame": t, "x": round(float(tracks[t, i, 0]), 3),
                                "y": round(float(tracks[t, i, 1]), 3),
                                "visible": bool(visible[t, i])} for t in range(len(tracks))]}
                   for i, q in enumerate(queries)]})
    with atomic_path(out / "tracks.csv") as tmp, open(tmp, "w", newline="") as f:
        f.write("track,frame,x,y,visible\n")
        for i in range(tracks.shape[1]):
            for t in range(len(tracks)):
                f.write(f"{i},{t},{tracks[t, i, 0]:.3f},{tracks[t, i, 1]:.3f},"
                        f"{int(visible[t, i])}\n")
    colours = track_colours(queries)
    # Before its query frame a point is a guess, unless tracked backwards too.
    starts = np.zeros(len(queries), np.int64) if args.backward else queries[:, 0].astype(
        np.int64)
    write_video(out / "overlay.mp4", overlay_frames(open_video(args.video), tracks, visible,
                                                    colours, starts), fps=fps)
    first = next(iter(open_video(args.video)))
    picture = save_png(trajectories_picture(first, tracks, visible, colours, starts,
                                            outline=mask), out / "trajectories.png")
    files = {"tracks": str(out / "tracks.npz"), "tracks_json": str(out / "tracks.json"),
             "tracks_csv": str(out / "tracks.csv"), "overlay": str(out / "overlay.mp4"),
             "trajectories": str(picture)}
    if save_mask:
        files["mask"] = str(save_png((np.asarray(mask) * 255).astype(np.uint8),
                                     out / "mask.png"))
    return files

