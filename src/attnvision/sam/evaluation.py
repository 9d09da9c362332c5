"""How well a SAM segments: mIoU on held-out synthetic scenes and on two real photos.

Every measure goes through :class:`~attnvision.sam.predictor.SamPredictor`, as a user's
clicks do (resize, encode, decode, upscale to the original size), and clicks where a person
would: the pixel of the object farthest from its boundary.

- ``point``: one click, the predictor's three masks, the one of highest predicted IoU kept;
- ``points3``: that click, then two more, each at the interior-most pixel of the larger error
  (missed object: positive; spill-over: negative), with the previous low-res logits fed back
  and the single-mask output, as an interactive session goes;
- ``box``: the object's tight box, single-mask output;
- ``box_zoom``: the same box, segmented again in a window around it at the model's full
  resolution (:mod:`attnvision.sam.zoom`; one more encoding per box).

Real photos (scikit-image, offline): ``coins``, a click at the centre of each coin, against
the coin's mask from a threshold-and-label ground truth (Sobel edges flooded from markers
where the photo is darker than 30 or brighter than 150, holes filled, components of at least
100 pixels: the 24 coins); ``horse``, one click at each of :data:`HORSE_CLICKS` pixels spread
over the silhouette, every one at least :data:`HORSE_MARGIN` pixels inside it (a user's
first click on a large object falls anywhere in it, not at its most interior pixel).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from attnvision.errors import UserError
from attnvision.sam.masks import masks_to_boxes
from attnvision.sam.model import Sam
from attnvision.sam.predictor import SamPredictor
from attnvision.sam.zoom import predict_zoomed

MODES = ("point", "points3", "box", "box_zoom")
HORSE_CLICKS = 8
HORSE_MARGIN = 15  # pixels from the silhouette's outline


def _ndimage():
    try:
        from scipy import ndimage
    except ImportError:
        raise UserError("measuring SAM needs scipy: pip install 'attnvision[data]'") from None
    return ndimage


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its boundary (the image edge counts)."""
    ndimage = _ndimage()
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), mask.shape)
    return int(x), int(y)


def spread_clicks(mask: np.ndarray, n: int, margin: float) -> np.ndarray:
    """(n, 2) x, y of pixels at least ``margin`` inside ``mask``, spread over it: the
    interior-most pixel first, then each next the farthest from those already chosen."""
    ndimage = _ndimage()
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(distance >= margin)
    if len(xs) < n:
        raise ValueError(f"the mask has {len(xs)} pixels {margin} px inside it, fewer than {n}")
    candidates = np.stack([xs, ys], axis=1).astype(float)
    chosen = [int(np.argmax(distance[ys, xs]))]
    gap = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    while len(chosen) < n:
        chosen.append(int(np.argmax(gap)))
        gap = np.minimum(gap, np.linalg.norm(candidates - candidates[chosen[-1]], axis=1))
    return candidates[chosen]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def tight_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box of a non-empty (H, W) mask, x1 and y1 its last pixels, as float."""
    return masks_to_boxes(torch.from_numpy(np.asarray(mask, dtype=bool))).numpy().astype(float)


def click_masks(predictor: SamPredictor, click) -> tuple[np.ndarray, int, np.ndarray]:
    """The three masks (3, H, W) of one positive click (x, y), the index of the one a user
    sees (the highest predicted IoU) and their low-res logits (3, 4g, 4g)."""
    masks, scores, logits = predictor.predict(point_coords=np.asarray(click, float)[None],
                                              point_labels=np.array([1]), multimask_output=True)
    return masks, int(np.argmax(scores)), logits


def segment_click(predictor: SamPredictor, click: np.ndarray, with_logits: bool = False):
    """The mask of one positive click (x, y): the best of the three by predicted IoU, as a
    user sees it; with its low-res logits (1, 4g, 4g) if ``with_logits``."""
    masks, best, logits = click_masks(predictor, click)
    return (masks[best], logits[best:best + 1]) if with_logits else masks[best]


@dataclass
class Answer:
    mask: np.ndarray  # (H, W) bool
    iou: float


def segment_object(predictor: SamPredictor, truth: np.ndarray, mode: str) -> Answer:
    """The predictor's mask for one object of the current image under one prompt mode."""
    if mode == "box":
        masks, _, _ = predictor.predict(box=tight_box(truth), multimask_output=False)
        return Answer(masks[0], iou(masks[0], truth))
    if mode == "box_zoom":
        mask, _, _ = predict_zoomed(predictor, tight_box(truth))
        return Answer(mask, iou(mask, truth))
    point = np.array([interior_point(truth)], dtype=float)
    mask, low = segment_click(predictor, point[0], with_logits=True)
    if mode == "point":
        return Answer(mask, iou(mask, truth))
    if mode != "points3":
        raise ValueError(f"unknown mode {mode!r}: choose one of {MODES}")
    points, labels = [point[0]], [1]
    for _ in range(2):
        missed, spilled = truth & ~mask, mask & ~truth
        if not (missed.any() or spilled.any()):
            break
        positive = missed.sum() >= spilled.sum()
        points.append(np.array(interior_point(missed if positive else spilled), dtype=float))
        labels.append(int(positive))
        masks, _, low = predictor.predict(point_coords=np.stack(points),
                                          point_labels=np.array(labels), mask_input=low,
                                          multimask_output=False)
        mask = masks[0]
    return Answer(mask, iou(mask, truth))


class Examples(Protocol):
    """A dataset with objects: ``raw(i)`` -> (image (H, W, 3) uint8, [(mask, kind), ...])."""

    def __len__(self) -> int: ...

    def raw(self, index: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]: ...


@torch.no_grad()
def dataset_miou(sam: Sam, dataset: Examples, modes: Iterable[str] = MODES,
                 progress: bool = False) -> dict:
    """mIoU per prompt mode over every object of ``dataset``, and per kind of object (the
    shape of a synthetic object). ``miou`` is the mean over the modes."""
    from tqdm import tqdm

    modes = tuple(modes)
    predictor = SamPredictor(sam)
    ious: dict[str, list[float]] = {m: [] for m in modes}
    kinds: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    for i in tqdm(range(len(dataset)), desc="evaluating", leave=False, disable=not progress):
        image, objects = dataset.raw(i)
        predictor.set_image(image)
        for mask, kind in objects:
            for m in modes:
                value = segment_object(predictor, mask, m).iou
                ious[m].append(value)
                kinds[m].setdefault(kind, []).append(value)
    means = {f"miou_{m}": round(float(np.mean(v)), 4) if v else None for m, v in ious.items()}
    found = [v for v in means.values() if v is not None]
    return {"images": len(dataset), "objects": len(ious[modes[0]]), **means,
            "miou": round(float(np.mean(found)), 4) if found else None,
            "per_kind": {m: {k: round(float(np.mean(v)), 4) for k, v in sorted(d.items())}
                         for m, d in kinds.items()}}


def synthetic_miou(sam: Sam, scenes: int = 100, first: int = 0,
                   modes: Iterable[str] = MODES, progress: bool = False,
                   style: str = "standard") -> dict:
    """:func:`dataset_miou` over test-split scenes ``first..first+scenes-1``, whose
    backgrounds and textures training never sees, drawn in a scene ``style`` (standard, or
    e.g. "packed": trays of nearly touching look-alikes)."""
    from attnvision.sam.training_data import SceneDataset

    return dataset_miou(sam, SceneDataset("test", sam.img_size, scenes, first, style=style),
                        modes, progress)


@torch.no_grad()
def text_miou(sam: Sam, scenes: int = 100, first: int = 0, progress: bool = False,
              style: str = "standard") -> dict:
    """Text prompts on test-split scenes: for every object its full description names alone
    ("the small red star on the left"), the mask from the phrase alone, from one click alone
    (best of three, as ``point``), and from the phrase with that click (single mask); also
    from a shorter phrase that still names it ("the red star", drawn with a fixed seed).
    ``text_right`` is the share of phrases whose mask has IoU > 0.5 with their object.
    Objects whose description another object shares (most of a tray's) are left out."""
    from tqdm import tqdm

    from attnvision.data.scenes import make_scene
    from attnvision.text.phrases import attributes, describe, naming_phrases

    sam.prompt_encoder.require_text()
    predictor = SamPredictor(sam)
    rng = np.random.default_rng(first)
    found: dict[str, list[float]] = {"text": [], "point": [], "text_point": [], "short": []}
    for seed in tqdm(range(first, first + scenes), desc="text prompts", leave=False,
                     disable=not progress):
        scene = make_scene(seed, "test", size=sam.img_size, style=style)
        attrs = [attributes(o) for o in scene.objects]
        predictor.set_image(scene.image)
        for i, obj in enumerate(scene.objects):
            phrases = naming_phrases(i, attrs)
            full = describe(attrs[i])
            if full not in phrases:
                continue  # another object has the very same description
            # Shorter phrases name fewer attributes; one is drawn per object.
            short = [p for p in phrases if len(p.split()) < len(full.split())] or [full]
            masks, _, _ = predictor.predict(text=full, multimask_output=False)
            found["text"].append(iou(masks[0], obj.mask))
            masks, _, _ = predictor.predict(text=str(rng.choice(short)),
                                            multimask_output=False)
            found["short"].append(iou(masks[0], obj.mask))
            found["point"].append(segment_object(predictor, obj.mask, "point").iou)
            click = np.array([interior_point(obj.mask)], dtype=float)
            masks, _, _ = predictor.predict(point_coords=click, point_labels=np.array([1]),
                                            text=full, multimask_output=False)
            found["text_point"].append(iou(masks[0], obj.mask))
    n = len(found["text"])
    return {"scenes": scenes, "phrases": n,
            **{f"miou_{k}": round(float(np.mean(v)), 4) if v else None for k, v in found.items()},
            "text_right": round(float(np.mean(np.array(found["text"]) > 0.5)), 4) if n else None}


def coins_truth() -> tuple[np.ndarray, list[np.ndarray]]:
    """scikit-image's coins photo (RGB) and each coin's mask (the module doc's recipe)."""
    from skimage import data, filters, measure, segmentation

    ndimage = _ndimage()
    grey = data.coins()
    markers = np.zeros_like(grey, dtype=np.int32)
    markers[grey < 30], markers[grey > 150] = 1, 2
    coins = segmentation.watershed(filters.sobel(grey), markers) == 2
    labels = measure.label(ndimage.binary_fill_holes(coins))
    masks = [labels == r.label for r in measure.regionprops(labels) if r.area >= 100]
    return np.repeat(grey[..., None], 3, axis=2), masks


def horse_clicks(horse: np.ndarray) -> np.ndarray:
    """The (8, 2) x, y clicks measured on the horse: spread over the silhouette, 15 px in."""
    return spread_clicks(horse, HORSE_CLICKS, HORSE_MARGIN)


def horse_truth() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's horse silhouette as an RGB image (black horse on white) and its mask."""
    from skimage import data

    horse = ~data.horse()  # the file marks the background True
    image = np.where(horse[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    return image, horse


@torch.no_grad()
def photo_ious(sam: Sam) -> dict:
    """Click-at-the-centre IoU on coins (mean over the coins) and horse.

    ``coins_best_of_3`` is the mean of each coin's best mask of the three, as if a user
    picked it: where it is well above ``coins_miou`` the masks are right and the IoU head
    ranks them wrongly (on coins, the "every coin" mask above the clicked one), which
    ``coins_whole_kept`` counts: the coins whose kept mask is more than twice their area.
    ``horse_iou`` is the mean over :func:`horse_clicks`, one click at a time, and
    ``horse_min_iou`` the worst of them."""
    predictor = SamPredictor(sam)
    image, coins = coins_truth()
    predictor.set_image(image)
    kept, best, whole = [], [], 0
    for truth in coins:
        masks, chosen, _ = click_masks(predictor, interior_point(truth))
        ious = [iou(m, truth) for m in masks]
        kept.append(ious[chosen])
        best.append(max(ious))
        whole += int(masks[chosen].sum() > 2 * truth.sum())
    image, horse = horse_truth()
    predictor.set_image(image)
    horse_ious = [iou(segment_click(predictor, click), horse) for click in horse_clicks(horse)]
    return {"coins_miou": round(float(np.mean(kept)), 4), "coins": len(coins),
            "coins_min_iou": round(float(np.min(kept)), 4),
            "coins_best_of_3": round(float(np.mean(best)), 4), "coins_whole_kept": whole,
            "horse_iou": round(float(np.mean(horse_ious)), 4),
            "horse_min_iou": round(float(np.min(horse_ious)), 4)}
