"""How well a SAM 2 tracks on held-out synthetic videos: J&F from one click or a box, the
share of occluded objects found again, the same model without memory, and frames per second.

The clips (:func:`held_out_clips`) are the test split of :mod:`attnvision.data.moving_scenes`
(backgrounds and textures training never sees), 1 to 3 objects each, look-alike distractors
as the generator draws them (one clip in three). Clips alternate: the first, third, ... have
a forced occlusion (an object wholly hidden by a larger one for at least
:data:`~attnvision.data.moving_scenes.HIDDEN_RUN` frames, visible before and after), the
others none at all (``occlusion=False``, not left to chance), so "occluded clips" are exactly
half of them and the other half measure plain tracking.

The protocol (:func:`evaluate_clips`), as a user meets the model:

- *Prompts.* Every object that shows at least :data:`MIN_SHARE` of the frame (64 px of a
  256 x 256 frame, a quarter of one 16-px patch of the image encoder) on frame 0 is prompted
  there, all objects of a clip in one session: ``click`` is one positive click at the
  object's most interior pixel (the maximum of the distance transform of its frame-0 mask,
  the first in raster order on ties: deterministic; :func:`attnvision.sam.evaluation.
  interior_point`, the click SAM's own evaluation uses), ``box`` its frame-0 mask's tight box
  (last pixels inclusive, as there). Smaller slivers (an object mostly outside the frame)
  are what nobody would click, and the encoder barely sees them; they are listed per clip as
  ``unprompted`` and not scored, nor are objects that first enter later (nobody pointed at
  them; DAVIS likewise scores only objects given on the first frame).
- *Tracking.* :class:`~attnvision.sam2.video_predictor.SAM2VideoPredictor` propagates from
  frame 0 to the end. Where objects overlap, a pixel goes to the highest logit
  (:func:`attnvision.sam2.evaluation.label_map`, the rule the DAVIS evaluation here uses).
- *Scores.* Frames 1 .. T-1, every frame after the prompted one (the last included: unlike a
  DAVIS annotation, nothing is special about a synthetic clip's last frame), through
  :func:`attnvision.sam2.metrics.sequence_scores`: each object's J and F averaged over the
  frames, then over the objects of all clips (as DAVIS reports, a clip with three objects
  weighs three times one with one). A frame where the object is absent from the truth (out
  of the frame, or hidden) scores J = F = 1 if nothing is predicted and 0 otherwise, as
  :mod:`~attnvision.sam2.metrics` and DAVIS count it: predicting nothing while the object
  is hidden is right.
- *Found again.* On a clip with an occlusion whose target was prompted, the target is found
  again when its mean J over the first :data:`REAPPEAR_FRAMES` (3) frames after the hidden
  run *on which it shows at least* :data:`MIN_SHARE` *of the frame* (it has come back as
  far as an object must show on frame 0 to be prompted) is at least :data:`FOUND` (0.5);
  fewer frames are averaged where the clip ends sooner. Frames where it is still absent (it
  may leave the frame behind the occluder) are skipped because an empty prediction scores 1
  there and would count a lost object as found. ``reappeared`` is the share of such clips,
  ``reappeared_count`` how many, ``reappeared_clips`` of how many (an occluded clip whose
  target never shows that much again is not counted). The stricter figure of the first
  three frames that show *any* pixel of it, where the first is often a sliver of a few
  pixels at the occluder's edge that scores J = 0 if missed, is kept beside it as
  ``reappeared_any_pixel`` (and ``_count``) over all ``occluded_clips``.
- *Without memory* (``memory=False``): the same model frame by frame through
  :class:`~attnvision.sam2.image_predictor.SAM2ImagePredictor`, no memory at all. Frame 0 is
  prompted as above (a click takes the best of the three masks by predicted IoU, as the video
  predictor does for one click); every later frame is prompted with the tight box of the
  object's own previous predicted mask (before overlaps are resolved, as each object's
  memory holds its own mask); once that mask is empty the object is lost and predicted
  empty to the end. Scored the same way, so ``jf_occluded`` of both runs compares memory
  with none where memory should matter most.
- *Speed.* ``fps``: frames tracked over the wall time of tracking: with memory, the time of
  iterating ``propagate_in_video`` (frame encoding, memory attention, decoding, memory
  encoding, logits to the CPU) over every frame of every clip, frame 0 included; without
  memory, the time of ``set_image`` and the prompts over every frame. Reading the clips into
  the predictor and scoring are left out.

The model is put in eval mode and run under ``torch.inference_mode``; every module's training
flag is restored afterwards, so a trainer can call this between epochs. The predictors are
parameters (factories of the model, defaulting to the real ones), so the protocol is tested
with fakes whose scores are known.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from attnvision.data.moving_scenes import MIN_OCCLUSION_FRAMES, Clip, make_clip
from attnvision.errors import UserError
from attnvision.sam.evaluation import interior_point, tight_box
from attnvision.sam2.evaluation import label_map, numpy_logits
from attnvision.sam2.image_predictor import SAM2ImagePredictor
from attnvision.sam2.metrics import region_similarity, sequence_scores
from attnvision.sam2.model import SAM2
from attnvision.sam2.video_predictor import SAM2VideoPredictor

PROMPTS = ("click", "box")
MIN_SHARE = 1 / 1024  # of the frame's pixels: the least an object shows on frame 0 to be prompted
REAPPEAR_FRAMES = 3  # frames (showing the target) after the hidden run that decide "found"
FOUND = 0.5  # the target's mean J over those frames for it to count as found again
N_OBJECTS = (1, 3)


class VideoPredictor(Protocol):
    """What the memory run calls: the official SAM2VideoPredictor's names."""

    def init_state(self, video: Any) -> Any: ...

    def add_new_points_or_box(self, inference_state: Any, frame_idx: int, obj_id: Hashable,
                              points: Any = None, labels: Any = None,
                              box: Any = None) -> Any: ...

    def propagate_in_video(self, inference_state: Any
                           ) -> Iterable[tuple[int, list[Hashable], Any]]: ...


class ImagePredictor(Protocol):
    """What the no-memory run calls: the official SAM2ImagePredictor's names."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                multimask_output: bool = True, return_logits: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def held_out_clips(count: int = 50, frames: int = 24, size: int = 256, first_seed: int = 0,
                   split: str = "test") -> list[Clip]:
    """``count`` clips of ``split`` (the test split's photos are never trained on; a trainer
    picks its epochs on unseen seeds of the train split instead, so the test split stays for
    the figures reported), seeds ``first_seed``, ``first_seed + 1``, ...:
    ``frames`` frames of ``size`` x ``size``, 1 to 3 objects (an occluded clip: 2 or 3, one
    of them the occluder; one clip in three adds a look-alike); the first, third, ... with a
    forced occlusion, the others with none (module doc). Deterministic: the same arguments
    give the same pixels. About 0.15 s a 24-frame 256 px clip on one CPU thread."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"the number of clips must be 1 or more, not {count!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < MIN_OCCLUSION_FRAMES:
        raise UserError(f"held-out clips need {MIN_OCCLUSION_FRAMES} frames or more (visible, "
                        f"hidden 3 frames, visible again), not {frames!r}")
    return [make_clip(first_seed + k, split=split, size=size, frames=frames,
                      n_objects=N_OBJECTS, occlusion=k % 2 == 0) for k in range(count)]


# ---------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class Prompt:
    """One object's prompt on frame 0, in frame pixels: a click (x, y) or a box XYXY."""

    point: np.ndarray | None = None  # (2,) float
    box: np.ndarray | None = None  # (4,) float, x1 and y1 the last pixels

    def video_kwargs(self) -> dict[str, Any]:
        """The arguments of ``add_new_points_or_box``."""
        if self.point is not None:
            return {"points": self.point[None], "labels": np.array([1], np.int32)}
        return {"box": self.box}


def first_frame_prompts(clip: Clip, prompt: str = "click", min_share: float = MIN_SHARE
                        ) -> tuple[dict[int, Prompt], list[int]]:
    """The prompt of every object showing at least ``min_share`` of frame 0, by id, and
    the ids of the other objects (module doc)."""
    if prompt not in PROMPTS:
        raise UserError(f"prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    first = clip.masks[0]
    least = min_share * first.size
    prompts: dict[int, Prompt] = {}
    unprompted: list[int] = []
    for obj in clip.objects:
        mask = first == obj.id
        if mask.sum() < max(least, 1):
            unprompted.append(obj.id)
        elif prompt == "click":
            prompts[obj.id] = Prompt(point=np.asarray(interior_point(mask), np.float64))
        else:
            prompts[obj.id] = Prompt(box=tight_box(mask))
    return prompts, unprompted


# ---------------------------------------------------------------------------------------------
# Tracking: (T, H, W) uint8 label maps and the seconds spent


def track_with_memory(predictor: VideoPredictor, clip: Clip, prompts: dict[int, Prompt]
                      ) -> tuple[np.ndarray, float]:
    """Every object prompted on frame 0 in one session, tracked to the end: the (T, H, W)
    uint8 labels and the seconds of ``propagate_in_video``."""
    t_count, height, width = clip.masks.shape
    labels = np.zeros((t_count, height, width), np.uint8)
    state = predictor.init_state(clip.frames)
    for obj, p in prompts.items():
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj, **p.video_kwargs())
    outputs: list[tuple[int, list[Hashable], np.ndarray]] = []
    start = time.perf_counter()
    # Timed: the tracking and the logits' way to the CPU (a GPU sync), not the scoring.
    for t, obj_ids, logits in predictor.propagate_in_video(state):
        outputs.append((t, list(obj_ids), numpy_logits(logits)))
    seconds = time.perf_counter() - start
    del state
    done = set()
    for t, obj_ids, logits in outputs:
        labels[t] = label_map(obj_ids, logits, [o in prompts for o in obj_ids])
        done.add(t)
    if done != set(range(t_count)):
        raise ValueError(f"the predictor gave no masks for frames "
                         f"{sorted(set(range(t_count)) - done)[:5]} of clip {clip.seed}")
    return labels, seconds


def track_without_memory(predictor: ImagePredictor, clip: Clip, prompts: dict[int, Prompt]
                         ) -> tuple[np.ndarray, float]:
    """Frame by frame without memory (module doc): frame 0 from the prompts, every later
    frame from the box of the object's previous mask; an empty mask loses the object."""
    t_count, height, width = clip.masks.shape
    labels = np.zeros((t_count, height, width), np.uint8)
    ids = list(prompts)
    previous: dict[int, np.ndarray] = {}
    absent = np.full((height, width), -1.0, np.float32)  # a lost object: empty logits
    seconds = 0.0
    for t in range(t_count):
        start = time.perf_counter()
        predictor.set_image(clip.frames[t])
        logits = []
        for obj in ids:
            p = prompts[obj]
            if t == 0 and p.point is not None:
                # One click is ambiguous: the best of three by predicted IoU, as a user sees.
                masks, scores, _ = predictor.predict(point_coords=p.point[None],
                                                     point_labels=np.array([1]),
                                                     multimask_output=True, return_logits=True)
                logit = masks[int(np.argmax(scores))]
            elif t == 0 or previous[obj].any():
                box = p.box if t == 0 else tight_box(previous[obj])
                masks, _, _ = predictor.predict(box=box, multimask_output=False,
                                                return_logits=True)
                logit = masks[0]
            else:
                logit = absent
            logit = np.asarray(logit, np.float32)
            previous[obj] = logit > 0
            logits.append(logit)
        seconds += time.perf_counter() - start
        if ids:
            labels[t] = label_map(ids, np.stack(logits)[:, None], [True] * len(ids))
    return labels, seconds


# ---------------------------------------------------------------------------------------------
# Scores


def _after_run(clip: Clip, target: int, least: int = 1) -> list[int]:
    """The first REAPPEAR_FRAMES frames after the hidden run where the target shows at least
    ``least`` pixels."""
    assert clip.occlusion is not None
    last = max(clip.occlusion.frames)
    shows = [t for t in range(last + 1, len(clip.masks))
             if np.count_nonzero(clip.masks[t] == target) >= least]
    return shows[:REAPPEAR_FRAMES]


def _j_after(clip: Clip, labels: np.ndarray, target: int, frames: list[int]) -> float:
    return float(np.mean([region_similarity(labels[t] == target, clip.masks[t] == target)
                          for t in frames]))


def score_clip(clip: Clip, labels: np.ndarray, objects: Sequence[int],
               min_share: float = MIN_SHARE) -> dict[str, Any]:
    """One clip's scores: each prompted object's J, F and J recall over frames 1..T-1, their
    means, and the occlusion's target J after its hidden run (module doc)."""
    scored = range(1, len(clip.masks))
    scores = sequence_scores([labels[t] for t in scored], [clip.masks[t] for t in scored],
                             list(objects), skip_first_and_last=False)
    per_object = scores["objects"]
    record: dict[str, Any] = {
        "seed": clip.seed, "occluded": clip.occlusion is not None,
        "objects": {str(k): v for k, v in per_object.items()},
        "J": scores["J"] if per_object else None, "F": scores["F"] if per_object else None,
        "J&F": scores["J&F"] if per_object else None, "occlusion": None}
    if clip.occlusion is not None:
        target = clip.occlusion.target
        occlusion: dict[str, Any] = {"target": target, "hidden": list(clip.occlusion.frames),
                                     "prompted": target in per_object, "after": [],
                                     "J_after": None, "reappeared": None,
                                     "after_any_pixel": [], "J_after_any_pixel": None,
                                     "reappeared_any_pixel": None}
        least = max(int(np.ceil(min_share * clip.masks[0].size)), 1)
        after = _after_run(clip, target, least)
        if target in per_object and after:
            j_after = _j_after(clip, labels, target, after)
            occlusion.update(after=after, J_after=j_after, reappeared=j_after >= FOUND)
        after = _after_run(clip, target)
        if target in per_object and after:
            j_after = _j_after(clip, labels, target, after)
            occlusion.update(after_any_pixel=after, J_after_any_pixel=j_after,
                             reappeared_any_pixel=j_after >= FOUND)
        record["occlusion"] = occlusion
    return record


def _means(records: Iterable[dict[str, Any]], only: Callable[[str, dict[str, Any]], bool]
           = lambda obj, record: True) -> tuple[float | None, float | None, float | None, int]:
    """J&F, J, F over the objects of ``records`` that ``only`` keeps, and their count."""
    chosen = [v for r in records for k, v in r["objects"].items() if only(k, r)]
    if not chosen:
        return None, None, None, 0
    j = float(np.mean([v["J"] for v in chosen]))
    f = float(np.mean([v["F"] for v in chosen]))
    return (j + f) / 2, j, f, len(chosen)


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures over every clip's :func:`score_clip` record (module doc)."""
    jf, j, f, objects = _means(records)
    occluded = [r for r in records if r["occlusion"] is not None
                and r["occlusion"]["reappeared_any_pixel"] is not None]
    jf_o, j_o, f_o, objects_o = _means(occluded)
    jf_t, _, _, _ = _means(occluded, lambda k, r: int(k) == r["occlusion"]["target"])
    back = [r for r in occluded if r["occlusion"]["reappeared"] is not None]
    found = sum(bool(r["occlusion"]["reappeared"]) for r in back)
    found_any = sum(bool(r["occlusion"]["reappeared_any_pixel"]) for r in occluded)
    recall = [v["J_recall"] for r in records for v in r["objects"].values()]
    return {"jf": jf if jf is not None else 0.0, "j": j if j is not None else 0.0,
            "f": f if f is not None else 0.0,
            "j_recall": float(np.mean(recall)) if recall else 0.0, "objects": objects,
            "clips": len(records),
            "unprompted_objects": sum(len(r.get("unprompted", [])) for r in records),
            "jf_occluded": jf_o, "j_occluded": j_o, "f_occluded": f_o,
            "objects_occluded": objects_o, "jf_targets": jf_t,
            "occluded_clips": len(occluded), "reappeared_count": found,
            "reappeared_clips": len(back), "reappeared": found / len(back) if back else None,
            "reappeared_any_pixel_count": found_any,
            "reappeared_any_pixel": found_any / len(occluded) if occluded else None}


# ---------------------------------------------------------------------------------------------
# The evaluation


@contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """Eval mode and inference mode while inside; every module's training flag as it was
    after (a trainer may hold parts frozen in eval mode while the rest trains)."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [m.training for m in modules]
    try:
        if isinstance(model, torch.nn.Module):
            model.eval()
        with torch.inference_mode():
            yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode


def evaluate_clips(model: SAM2, clips: Sequence[Clip], prompt: str = "click",
                   memory: bool = True, progress: bool = False, *,
                   video_predictor: Callable[[Any], VideoPredictor] = SAM2VideoPredictor,
                   image_predictor: Callable[[Any], ImagePredictor] = SAM2ImagePredictor,
                   min_share: float = MIN_SHARE,
                   on_clip: Callable[[Clip, np.ndarray], None] | None = None
                   ) -> dict[str, Any]:
    """Prompt every object of each clip on frame 0 (``prompt`` "click" or "box"), track it
    with memory (the video predictor) or without (``memory=False``: the image predictor,
    re-prompted with the previous box) and score it (module doc).

    Returns "jf", "j", "f", "j_recall" (means over objects), "objects", "clips",
    "unprompted_objects"; over the occluded clips "jf_occluded", "j_occluded", "f_occluded",
    "objects_occluded", "jf_targets" (the hidden objects alone), "occluded_clips",
    "reappeared_count", "reappeared_clips" and "reappeared" (a share; None when no clip has
    a measured occlusion, as are the other occluded figures), "reappeared_any_pixel_count" and
    "reappeared_any_pixel" (the stricter count, module doc); "fps", "seconds" (of tracking),
    "tracked_frames", "prompt", "memory" and "per_clip" (each clip's :func:`score_clip`
    record with its "unprompted" ids). ``on_clip(clip, labels)`` sees each clip's (T, H, W)
    uint8 predictions (pictures). ``video_predictor`` / ``image_predictor`` make the
    predictors from ``model`` (fakes in tests)."""
    if prompt not in PROMPTS:
        raise UserError(f"prompt must be one of {', '.join(PROMPTS)}, not {prompt!r}")
    for clip in clips:
        if len(clip.masks) < 2:
            raise UserError(f"clip {clip.seed} has {len(clip.masks)} frame: tracking is "
                            "measured on the frames after the prompted one, give 2 or more")
    records: list[dict[str, Any]] = []
    seconds, tracked = 0.0, 0
    with _evaluating(model):
        predictor: Any = video_predictor(model) if memory else image_predictor(model)
        for clip in tqdm(clips, desc=f"{prompt}{'' if memory else ', no memory'}",
                         unit="clip", file=sys.stderr, disable=not progress):
            prompts, unprompted = first_frame_prompts(clip, prompt, min_share)
            if prompts:
                track = track_with_memory if memory else track_without_memory
                labels, spent = track(predictor, clip, prompts)
                seconds += spent
                tracked += len(clip.masks)
            else:  # nothing to prompt: nothing predicted, nothing scored
                labels = np.zeros_like(clip.masks)
            record = score_clip(clip, labels, list(prompts), min_share)
            record["unprompted"] = unprompted
            records.append(record)
            if on_clip is not None:
                on_clip(clip, labels)
        del predictor
    return {"prompt": prompt, "memory": memory, **summarise(records),
            "fps": tracked / seconds if seconds > 0 else 0.0, "seconds": seconds,
            "tracked_frames": tracked, "per_clip": records}
