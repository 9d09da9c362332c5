"""How well a video predictor tracks: J, F and J&F on DAVIS-format sequences.

The semi-supervised protocol of DAVIS 2017 (the one SAM 2's paper reports): each object's true
mask is given on the first frame where it is annotated (frame 0 in DAVIS) with
``add_new_mask``, the predictor propagates forward to the end, and every annotated frame
between the first and the last is measured with :mod:`attnvision.sam2.metrics` (void pixels
left out). A sequence scores the mean over its objects of each object's mean over the frames;
the overall figures are the mean over every object of every sequence, as DAVIS' own
evaluation reports them (a sequence with five objects weighs five times one with one).

Two choices make the predictions what a DAVIS results folder holds, one id per pixel:

- where objects overlap, a pixel goes to the object with the highest logit (the official
  predictor's ``non_overlap_masks`` rule), not to whichever object is painted last;
- an object is predicted only from its first mask on: before it, nobody has pointed at it.
  Objects that first appear on a later frame are tracked in a pass of their own from there
  (the official evaluation tracks each object apart for such datasets, YouTube-VOS, LVOS),
  so their memories never hold frames from before they existed. Objects that start on the
  same frame share a pass: with DAVIS 2017, every object on frame 0, that is one pass.

The predictor is a parameter (anything with the official ``init_state``, ``add_new_mask``,
``propagate_in_video`` and ``reset_state``), so the protocol is tested with fakes whose scores
are known.
Everything a folder could get wrong is checked by :func:`plan_sequences` before any tracking.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from attnvision.data.davis import VOID, davis_sequences, write_indexed_png
from attnvision.data.davis import Sequence as DavisSequence
from attnvision.data.images import load_image
from attnvision.errors import UserError
from attnvision.sam2.metrics import sequence_scores

MIN_FRAMES = 3  # DAVIS leaves out the first and last frames: three leave one to measure


class VideoPredictor(Protocol):
    """What the protocol calls: the official SAM2VideoPredictor's names."""

    def init_state(self, video: Iterable[np.ndarray]) -> Any: ...

    def add_new_mask(self, inference_state: Any, frame_idx: int, obj_id: int,
                     mask: np.ndarray) -> Any: ...

    def propagate_in_video(self, inference_state: Any
                           ) -> Iterable[tuple[int, list[Hashable], Any]]: ...

    def reset_state(self, inference_state: Any) -> None: ...


@dataclass(frozen=True)
class SequencePlan:
    """One sequence as it will be measured, checked before any tracking."""

    sequence: DavisSequence
    num_frames: int  # tracked: the first ``max_frames`` frames, or all
    size: tuple[int, int]  # (H, W) of its frames and masks
    starts: dict[int, int]  # object id -> the first frame with its mask, given to the model
    measured: tuple[int, ...]  # the annotated frames scored

    @property
    def name(self) -> str:
        return self.sequence.name

    @property
    def steps(self) -> int:
        """Frames tracked: one pass from each frame where objects first appear."""
        return sum(self.num_frames - s for s in set(self.starts.values()))


@dataclass
class SequenceResult:
    name: str
    frames: int
    measured_frames: int
    J: float
    F: float
    objects: dict[int, dict[str, float]]  # id -> "J", "F", "J_recall" over the frames

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"J": self.J, "F": self.F, "J&F": self.JF, "frames": self.frames,
                "measured_frames": self.measured_frames,
                "objects": {str(k): v for k, v in self.objects.items()}}


@dataclass
class DavisResult:
    sequences: list[SequenceResult] = field(default_factory=list)

    def _mean(self, key: str) -> float:
        values = [o[key] for s in self.sequences for o in s.objects.values()]
        return float(np.mean(values)) if values else 0.0

    @property
    def J(self) -> float:
        return self._mean("J")

    @property
    def F(self) -> float:
        return self._mean("F")

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2

    def to_dict(self) -> dict[str, Any]:
        """The overall figures, then each sequence's: what ``results.json`` holds."""
        return {"J&F": self.JF, "J": self.J, "F": self.F, "J_recall": self._mean("J_recall"),
                "objects": sum(len(s.objects) for s in self.sequences),
                "sequences": {s.name: s.to_dict() for s in self.sequences}}


def _select(sequences: list[DavisSequence], names: Iterable[str] | None
            ) -> list[DavisSequence]:
    if names is None:
        return sequences
    wanted = list(dict.fromkeys(names))
    by_name = {s.name: s for s in sequences}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        shown = ", ".join(list(by_name)[:8]) + (", ..." if len(by_name) > 8 else "")
        raise UserError(f"no sequence named {', '.join(unknown)} in the folder; it holds "
                        f"{shown}")
    if not wanted:
        raise UserError("no sequence chosen: name at least one")
    return [by_name[n] for n in wanted]


def plan_sequence(sequence: DavisSequence, max_frames: int | None = None) -> SequencePlan:
    """Check one sequence and work out what is given and what is measured."""
    name = sequence.name
    n = len(sequence.frames) if max_frames is None else min(max_frames, len(sequence.frames))
    if 0 not in sequence.masks:
        raise UserError(f"sequence {name} has no mask for its first frame "
                        f"({sequence.frames[0].stem}.png beside {sequence.frames[0].name}): "
                        "the semi-supervised protocol starts from the first frame's true mask")
    height, width = load_image(sequence.frames[0]).shape[:2]
    starts: dict[int, int] = {}
    annotated = [t for t in sequence.masks if t < n]
    for t in annotated:
        labels = sequence.mask(t, (height, width))  # every frame is frame 0's size
        for obj in np.unique(labels).tolist():
            if obj not in (0, VOID):
                starts.setdefault(int(obj), t)
    if not any(start == 0 for start in starts.values()):
        raise UserError(f"sequence {name}: the first frame's mask {sequence.masks[0]} marks no "
                        "object (all background or void): there is nothing to track")
    # DAVIS scores the frames between the first and the last (all of a shorter clip).
    inner = [t for t in annotated if 0 < t < n - 1] if n > 2 else annotated
    if not inner:
        raise UserError(f"sequence {name} has true masks only on its first and last frames "
                        f"(of {n}): there is nothing to measure; a test split, whose masks "
                        "are kept back, cannot be scored here")
    return SequencePlan(sequence, n, (height, width), dict(sorted(starts.items())),
                        tuple(inner))


def plan_sequences(root: str | os.PathLike[str], names: Iterable[str] | None = None,
                   max_frames: int | None = None) -> list[SequencePlan]:
    """Every (or each named) sequence of a DAVIS-format folder, checked: one-line
    :class:`UserError` for a missing folder, an unknown name, a sequence without a
    first-frame mask or without a later one to measure."""
    if max_frames is not None and max_frames < MIN_FRAMES:
        raise UserError(f"max_frames must be {MIN_FRAMES} or more, not {max_frames}: DAVIS "
                        "measures the frames between the first and the last")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"annotations folder not found: {root} (check the path)")
    chosen = _select(davis_sequences(root), names)
    return [plan_sequence(s, max_frames) for s in chosen]


def numpy_logits(x: Any) -> np.ndarray:
    """Logits as float32 numpy, from a torch tensor on any device or an array."""
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def best_object(obj_ids: list[Hashable], logits: Any, active: list[bool]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of (N, 1, H, W) logits: the highest logit of an active object (-inf where
    none is) and that object's id, as (H, W) float32 and uint8."""
    scores = numpy_logits(logits)[:, 0]
    scores[~np.asarray(active, bool)] = -np.inf
    best = scores.argmax(0)
    ids = np.asarray(obj_ids, np.uint8)[best]
    return np.take_along_axis(scores, best[None], 0)[0], ids


def label_map(obj_ids: list[Hashable], logits: Any, active: list[bool]) -> np.ndarray:
    """(H, W) uint8 ids from (N, 1, H, W) logits: each pixel to the active object with the
    highest logit where that logit is positive, else background."""
    score, ids = best_object(obj_ids, logits, active)
    return np.where(score > 0, ids, 0).astype(np.uint8)


def _frames(plan: SequencePlan) -> Iterator[np.ndarray]:
    for path in plan.sequence.frames[:plan.num_frames]:
        yield load_image(path)  # one at a time: the predictor keeps what it needs


def evaluate_sequence(predictor: VideoPredictor, plan: SequencePlan,
                      masks_dir: str | os.PathLike[str] | None = None,
                      on_frame: Callable[[], None] | None = None) -> SequenceResult:
    """Track one planned sequence from its given masks and score it; with ``masks_dir``,
    each frame's prediction is written as ``masks_dir/SEQ/00000.png`` (a DAVIS results
    folder). ``on_frame`` is called after each tracked frame (``plan.steps`` in all)."""
    seq = plan.sequence
    out = Path(masks_dir) / seq.name if masks_dir is not None else None
    measured = set(plan.measured)
    predicted: dict[int, np.ndarray] = {}
    seen: set[int] = set()

    def finish(t: int, score: np.ndarray, ids: np.ndarray) -> None:
        labels = np.where(score > 0, ids, 0).astype(np.uint8)
        if labels.shape != plan.size:
            raise ValueError(f"the predictor gave {labels.shape} masks on frame {t} of "
                             f"{seq.name}, whose frames are {plan.size}")
        if t in measured:
            predicted[t] = labels
        if out is not None:
            write_indexed_png(out / f"{seq.frames[t].stem}.png", labels)
        seen.add(t)

    # One pass per frame where objects first appear (module doc). Each pass but the last
    # keeps its per-pixel best (logit, id) until the last pass completes the frame, so a
    # DAVIS sequence (one pass) holds nothing back.
    groups = sorted({start for start in plan.starts.values()})
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    state = predictor.init_state(_frames(plan))
    for k, start in enumerate(groups):
        if k:
            predictor.reset_state(state)
        labels = seq.mask(start)
        for obj, first in plan.starts.items():
            if first == start:
                predictor.add_new_mask(state, start, obj, labels == obj)
        last = k == len(groups) - 1
        for t, obj_ids, logits in predictor.propagate_in_video(state):
            # Nobody has pointed at an object before its first mask (nor at an unknown id).
            active = [plan.starts.get(o, plan.num_frames) <= t for o in obj_ids]
            score, ids = best_object(obj_ids, logits, active)
            if t in kept:
                before, before_ids = kept.pop(t)
                better = before >= score
                score, ids = np.where(better, before, score), np.where(better, before_ids, ids)
            if last:
                finish(t, score, ids)
            else:
                kept[t] = (score, ids)
            if on_frame is not None:
                on_frame()
    for t, (score, ids) in kept.items():  # frames before the last pass's start
        finish(t, score, ids)
    del state  # the next sequence's frames and memories take its place
    if seen != set(range(plan.num_frames)):
        missing = sorted(set(range(plan.num_frames)) - seen)
        raise ValueError(f"the predictor gave no masks for frames {missing[:5]} of {seq.name}")
    scores = sequence_scores([predicted[t] for t in plan.measured],
                             [seq.mask(t) for t in plan.measured], list(plan.starts),
                             skip_first_and_last=False)  # plan.measured leaves them out
    return SequenceResult(seq.name, plan.num_frames, len(plan.measured), float(scores["J"]),
                          float(scores["F"]), scores["objects"])


def evaluate_davis(predictor: VideoPredictor, plans: Iterable[SequencePlan],
                   masks_dir: str | os.PathLike[str] | None = None,
                   on_frame: Callable[[], None] | None = None) -> DavisResult:
    """Every planned sequence (:func:`plan_sequences`) tracked and scored, in order."""
    return DavisResult([evaluate_sequence(predictor, plan, masks_dir, on_frame)
                        for plan in plans])
