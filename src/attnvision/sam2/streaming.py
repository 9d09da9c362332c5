"""SAM 2 tracking on a stream of frames, in bounded memory.

    stream = SAM2StreamPredictor(model)
    stream.add_prompt(frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])
    for frame_idx, obj_ids, masks in stream.track(open_video("video.mp4")):  # or a camera
        ...  # masks: (objects, 1, H, W) logits at the frame's size; > 0 is the object

Frames are read one at a time and none is kept. On each frame the prompts registered for it
are applied (the frame becomes a conditioning frame of that object: a new object starts
there, an object already tracked starts afresh there, as the video predictor does on a frame
it has not tracked), then every object is tracked, and each object's :class:`MemoryBank` is
pruned (:meth:`MemoryBank.prune`) to what the next frame reads: its conditioning frames, the
spatial memories (bfloat16) of the last ``num_maskmem - 1`` frames and the pointers of the
last ``max_obj_ptrs - 1``. Pruning drops nothing a later frame would read, so the masks are
the video predictor's (forward propagation from the first prompted frame, prompts all given
before tracking); where the stream's length is known (a file, a folder, an array) it is used
as the video predictor uses it (the span of the pointers' time codes in short videos).

Prompts may be added before tracking or between frames, for any frame not yet read; a second
prompt for the same object and frame replaces the first. What grows with time: nothing but the
conditioning frames the user prompts.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attnvision.data.video import Video, open_video
from attnvision.errors import UserError
from attnvision.sam2.model import SAM2
from attnvision.sam2.tracking import (
    FrameFeatures,
    FrameMemory,
    MemoryBank,
    frame_features,
    prompted_memory,
    track_step,
)
from attnvision.sam2.video_frames import frame_to_input
from attnvision.sam2.video_outputs import fill_holes, non_overlapping
from attnvision.sam2.video_prompts import prompt_mask, prompt_points

Output = tuple[int, list[Hashable], Tensor]  # frame, object ids, (objects, 1, H, W) logits


@dataclass
class _Prompt:
    """A prompt waiting for its frame: as given (checked against the frame when it comes)."""

    points: Any
    labels: Any
    box: Any
    mask: Any
    normalize_coords: bool


class SAM2StreamPredictor:
    """Prompt objects on frames of a stream and track them, keeping only what is read next."""

    def __init__(self, model: SAM2, fill_hole_area: int = 8, non_overlap_masks: bool = False,
                 memory_dtype: torch.dtype = torch.bfloat16) -> None:
        self.model = model.eval()
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.memory_dtype = memory_dtype
        self.banks: dict[Hashable, MemoryBank] = {}  # tracked objects, in order of starting
        self._prompts: dict[int, dict[Hashable, _Prompt]] = {}  # frames not yet read
        self.next_frame = 0  # the index of the next frame to arrive
        self.frame_size: tuple[int, int] | None = None  # (H, W), once a frame has come

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def obj_ids(self) -> list[Hashable]:
        return list(self.banks)

    # -- prompts -------------------------------------------------------------------------

    def add_prompt(self, frame_idx: int, obj_id: Hashable, points: Any = None,
                   labels: Any = None, box: Any = None, mask: Any = None,
                   normalize_coords: bool = True) -> None:
        """Clicks (label 1 object, 0 background) and / or a box (x0, y0, x1, y1), or an
        (H, W) mask, for ``obj_id`` on frame ``frame_idx`` (not yet read). Checked now as
        far as possible; coordinates against the frame's size once it is known."""
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise UserError(f"frame_idx must be an integer frame number, not {frame_idx!r}")
        frame_idx = int(frame_idx)
        if frame_idx < self.next_frame:
            raise UserError(f"frame {frame_idx} is in the past: the stream is at frame "
                            f"{self.next_frame}; prompt frame {self.next_frame} or later")
        try:
            hash(obj_id)
        except TypeError:
            raise UserError(f"obj_id must be hashable (an int or str), not "
                            f"{type(obj_id).__name__}") from None
        prompt = _Prompt(points, labels, box, mask, normalize_coords)
        if mask is not None:
            if points is not None or labels is not None or box is not None:
                raise UserError("a mask is the frame's output: give it without points or a "
                                "box")
            prompt_mask(mask, self.image_size, torch.device("cpu"))
        else:
            # Before the first frame only the form and the sign can be checked.
            hw = self.frame_size or (float("inf"), float("inf"))
            self._points(prompt, hw)  # type: ignore[arg-type]
        self._prompts.setdefault(frame_idx, {})[obj_id] = prompt

    def remove_object(self, obj_id: Hashable) -> None:
        """Stop tracking ``obj_id`` and forget its prompts still to come."""
        waiting = any(obj_id in p for p in self._prompts.values())
        if obj_id not in self.banks and not waiting:
            known = sorted({*self.banks, *(o for p in self._prompts.values() for o in p)},
                           key=repr)
            raise UserError(f"no object with id {obj_id!r}: the objects are "
                            f"{known or 'none yet'}")
        self.banks.pop(obj_id, None)
        for prompts in self._prompts.values():
            prompts.pop(obj_id, None)

    # -- tracking ------------------------------------------------------------------------

    @torch.inference_mode()
    def track(self, frames: Iterable[np.ndarray] | Video) -> Iterator[Output]:
        """Read ``frames`` ((H, W, 3) uint8: ``open_video(...)``, a generator ...) and yield
        (frame_idx, obj_ids, (objects, 1, H, W) logits) for each, numbered from
        ``self.next_frame`` (a second call continues the numbering)."""
        video = frames if isinstance(frames, Video) else open_video(frames)
        num_frames = None if video.length is None else self.next_frame + video.length
        for frame in video:
            t = self.next_frame
            self.frame_size = (frame.shape[0], frame.shape[1])
            out = self._step(t, frame, num_frames)
            self.next_frame = t + 1  # prompts given while this frame is shown are for later
            yield out

    def _step(self, t: int, frame: np.ndarray, num_frames: int | None) -> Output:
        prompts = self._prompts.get(t, {})
        assert self.frame_size is not None
        # Every prompt is checked before any object changes.
        checked = {o: self._prompt_input(p) for o, p in prompts.items()}
        self._prompts.pop(t, None)
        features = frame_features(self.model,
                                  frame_to_input(frame, self.image_size, self.device))
        logits = []
        for obj_id in [*self.banks, *(o for o in checked if o not in self.banks)]:
            if obj_id in checked:
                low = self._prompted(t, obj_id, features, checked[obj_id], num_frames)
            else:
                bank = self.banks[obj_id]
                out = track_step(self.model, t, features, bank, num_frames=num_frames,
                                 storage_dtype=self.memory_dtype)
                bank.add(t, out.memory, conditioning=False)
                low = fill_holes(out.low_res_masks, self.fill_hole_area)
            self.banks[obj_id].prune(t + 1, self.model.config.video.num_maskmem,
                                     self.model.config.video.max_obj_ptrs)
            logits.append(low)
        h, w = self.frame_size
        if not logits:
            return t, [], torch.empty(0, 1, h, w, device=self.device)
        masks = F.interpolate(torch.cat(logits).float(), size=(h, w), mode="bilinear",
                              align_corners=False)
        return t, self.obj_ids, non_overlapping(masks) if self.non_overlap_masks else masks

    def _prompted(self, t: int, obj_id: Hashable, features: FrameFeatures,
                  prompt: dict[str, Any], num_frames: int | None) -> Tensor:
        """A conditioning frame, as the video predictor: segmented from the prompts with no
        memory read, its memory encoded from the hole-filled mask the user sees."""
        bank = self.banks.setdefault(obj_id, MemoryBank())
        out = track_step(self.model, t, features, bank, is_init_cond_frame=True,
                         num_frames=num_frames, run_memory_encoder=False, **prompt)
        low = fill_holes(out.low_res_masks, self.fill_hole_area)
        maskmem = prompted_memory(self.model, features.vision, low, out.object_score_logits)
        bank.add(t, FrameMemory(maskmem.to(dtype=self.memory_dtype), out.obj_ptr),
                 conditioning=True)
        return low

    def _points(self, prompt: _Prompt, hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        return prompt_points(prompt.points, prompt.labels, prompt.box, True, hw,
                             self.image_size, prompt.normalize_coords)

    def _prompt_input(self, prompt: _Prompt) -> dict[str, Any]:
        device = self.device
        if prompt.mask is not None:
            return {"mask": prompt_mask(prompt.mask, self.image_size, device)}
        assert self.frame_size is not None
        xy, labels = self._points(prompt, self.frame_size)
        return {"points": (xy.to(device), labels.to(device))}
