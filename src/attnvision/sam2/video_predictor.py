"""SAM 2's video predictor, with the official names: switch by changing one import.

    predictor = build_sam2_video_predictor("sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt")
    state = predictor.init_state("video.mp4")  # or a folder of frames, a (T, H, W, 3) array
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]],
                                    labels=[1])
    for frame_idx, obj_ids, masks in predictor.propagate_in_video(state):
        ...  # masks: (objects, 1, H, W) logits; > 0 is the object

Behaviour follows the official ``SAM2VideoPredictor``: objects may be added on any frame, also
after propagation; a prompt on a frame the object was not tracked on starts it afresh there
(a conditioning frame, read by every later frame), a prompt on a tracked frame corrects it
(refining its earlier logits, read as a tracked memory and overwritten by the next
propagation through it); memories of prompted frames are encoded when propagation starts, from
the thresholded masks the user saw; small holes (``fill_hole_area`` low-res pixels) are filled.
What is kept differs (see :mod:`attnvision.sam2.video_state`): frames as uint8, tracked
logits in float16. One difference on purpose: ``remove_object`` of an unknown id is an error.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator
from typing import Any

import torch
from torch import Tensor

from attnvision.data.video import VideoLike
from attnvision.errors import UserError
from attnvision.sam2.build import build_sam2
from attnvision.sam2.model import SAM2
from attnvision.sam2.tracking import (
    FrameFeatures,
    FrameMemory,
    frame_features,
    prompted_memory,
    track_step,
)
from attnvision.sam2.video_frames import VideoFrames
from attnvision.sam2.video_outputs import fill_holes, frame_masks, video_res
from attnvision.sam2.video_prompts import check_frame_index, prompt_mask, prompt_points
from attnvision.sam2.video_state import REFINE_CLAMP, InferenceState, ObjectState, Pending

Output = tuple[int, list[Hashable], Tensor]  # frame, object ids, (objects, 1, H, W) logits


class SAM2VideoPredictor:
    """Prompt objects on frames of a video and track them through it."""

    def __init__(self, sam_model: SAM2, fill_hole_area: int = 8,
                 non_overlap_masks: bool = False,
                 memory_dtype: torch.dtype = torch.bfloat16) -> None:
        self.model = sam_model.eval()
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.memory_dtype = memory_dtype

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- sessions ------------------------------------------------------------------------

    @torch.inference_mode()
    def init_state(self, video: VideoLike, offload_video_to_cpu: bool = False,
                   offload_state_to_cpu: bool = False, async_loading_frames: bool = False
                   ) -> InferenceState:
        """Read the video (file, folder of frames, (T, H, W, 3) uint8 array or iterable).

        Frames are always kept as uint8 on the CPU (``offload_video_to_cpu`` is accepted and
        needs nothing more); ``offload_state_to_cpu`` keeps memories and masks on the CPU.
        ``async_loading_frames`` is accepted for compatibility; frames are read at once."""
        device = self.device
        frames = VideoFrames(video, self.image_size)
        storage = torch.device("cpu") if offload_state_to_cpu else device
        return InferenceState(frames, device, storage)

    def reset_state(self, inference_state: InferenceState) -> None:
        """Forget every object and prompt; the frames stay."""
        inference_state.objects.clear()

    # -- prompts -------------------------------------------------------------------------

    @torch.inference_mode()
    def add_new_points_or_box(self, inference_state: InferenceState, frame_idx: int,
                              obj_id: Hashable, points: Any = None, labels: Any = None,
                              clear_old_points: bool = True, normalize_coords: bool = True,
                              box: Any = None) -> Output:
        """Clicks (label 1 object, 0 background) and / or a box (x0, y0, x1, y1) for
        ``obj_id`` on ``frame_idx``; returns the frame's masks of every object."""
        state = inference_state
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        new = prompt_points(points, labels, box, clear_old_points,
                            (state.video_height, state.video_width), self.image_size,
                            normalize_coords)
        obj = self._object(state, obj_id)
        old = None if clear_old_points else obj.points.get(frame_idx)
        if old is not None:
            new = (torch.cat([old[0], new[0]], dim=1), torch.cat([old[1], new[1]], dim=1))
        obj.points[frame_idx] = new
        obj.mask_frames.discard(frame_idx)
        # The new clicks refine whatever the frame showed last (also with clear_old_points).
        prev = obj.latest_logits(frame_idx)
        if prev is not None:
            prev = prev.to(state.device, torch.float32).clamp(-REFINE_CLAMP, REFINE_CLAMP)
        device_points = (new[0].to(state.device), new[1].to(state.device))
        self._prompt(state, obj, frame_idx, points=device_points, prev_mask_logits=prev)
        return frame_idx, state.obj_ids, frame_masks(state, self.non_overlap_masks, frame_idx)

    def add_new_points(self, *args: Any, **kwargs: Any) -> Output:
        """The official's older name of :meth:`add_new_points_or_box`."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(self, inference_state: InferenceState, frame_idx: int, obj_id: Hashable,
                     mask: Any) -> Output:
        """An (H, W) mask of ``obj_id`` on ``frame_idx`` (any size; resized to the model's)."""
        state = inference_state
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        mask_input = prompt_mask(mask, self.image_size, state.device)
        obj = self._object(state, obj_id)
        obj.points.pop(frame_idx, None)
        obj.mask_frames.add(frame_idx)
        self._prompt(state, obj, frame_idx, mask=mask_input)
        return frame_idx, state.obj_ids, frame_masks(state, self.non_overlap_masks, frame_idx)

    def clear_all_prompts_in_frame(self, inference_state: InferenceState, frame_idx: int,
                                   obj_id: Hashable, need_output: bool = True
                                   ) -> Output | None:
        """Forget ``obj_id``'s prompts on ``frame_idx``: a conditioning frame becomes an
        ordinary tracked one, to be tracked again by the next propagation."""
        state = inference_state
        frame_idx = check_frame_index(frame_idx, state.num_frames)
        obj = self._existing(state, obj_id)
        obj.points.pop(frame_idx, None)
        obj.mask_frames.discard(frame_idx)
        obj.pending.pop(frame_idx, None)
        memory = obj.bank.conditioning.pop(frame_idx, None)
        if memory is not None:
            obj.bank.tracked[frame_idx] = memory
            obj.store_tracked(frame_idx, obj.cond_masks.pop(frame_idx))
            obj.reverse.pop(frame_idx, None)
        if not need_output:
            return None
        return frame_idx, state.obj_ids, frame_masks(state, self.non_overlap_masks, frame_idx)

    def remove_object(self, inference_state: InferenceState, obj_id: Hashable,
                      strict: bool = False, need_output: bool = True
                      ) -> tuple[list[Hashable], list[tuple[int, Tensor]]]:
        """Drop ``obj_id``; returns the remaining ids and the masks of the frames it was
        prompted on. An unknown id is an error whatever ``strict`` says (the official
        ignores it unless strict): a mistyped id should not pass silently."""
        state = inference_state
        obj = self._existing(state, obj_id)
        del state.objects[obj_id]
        frames = sorted(obj.prompted_frames())
        if not need_output or not state.objects:
            return state.obj_ids, []
        return state.obj_ids, [(t, frame_masks(state, self.non_overlap_masks, t)) for t in frames]

    # -- propagation ---------------------------------------------------------------------

    @torch.inference_mode()
    def propagate_in_video(self, inference_state: InferenceState,
                           start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[Output]:
        """Track every object from ``start_frame_idx`` (default: the first prompted frame)
        over ``max_frame_num_to_track`` more frames (default: to the end), forwards or
        backwards; yields (frame_idx, obj_ids, (objects, 1, H, W) logits) per frame."""
        state = inference_state
        if start_frame_idx is not None:
            start_frame_idx = check_frame_index(start_frame_idx, state.num_frames,
                                                "start_frame_idx")
        if max_frame_num_to_track is not None and max_frame_num_to_track < 0:
            raise UserError(f"max_frame_num_to_track must be >= 0, not "
                            f"{max_frame_num_to_track}")
        self._encode_prompted_memories(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.objects.values() for t in o.bank.conditioning)
        span = n if max_frame_num_to_track is None else max_frame_num_to_track
        if reverse:
            # As the official: nothing to do backwards from frame 0.
            order = range(start_frame_idx, max(start_frame_idx - span, 0) - 1, -1) \
                if start_frame_idx > 0 else range(0)
        else:
            order = range(start_frame_idx, min(start_frame_idx + span, n - 1) + 1)
        obj_ids = state.obj_ids
        for t in order:
            logits = [self._track(state, obj, t, reverse) for obj in state.objects.values()]
            yield t, obj_ids, video_res(state, self.non_overlap_masks, torch.cat(logits))

    # -- internals -----------------------------------------------------------------------

    def _object(self, state: InferenceState, obj_id: Hashable) -> ObjectState:
        if obj_id not in state.objects:  # any frame, also after propagation
            state.objects[obj_id] = ObjectState(obj_id)
        return state.objects[obj_id]

    def _existing(self, state: InferenceState, obj_id: Hashable) -> ObjectState:
        if obj_id not in state.objects:
            raise UserError(f"no object with id {obj_id!r}: the objects are "
                            f"{state.obj_ids or 'none yet'}")
        return state.objects[obj_id]

    def _features(self, state: InferenceState, frame_idx: int) -> FrameFeatures:
        if state.cached is None or state.cached[0] != frame_idx:
            image = state.frames.model_input(frame_idx, state.device)  # (1, 3, S, S)
            state.cached = (frame_idx, frame_features(self.model, image))
        return state.cached[1]

    def _prompt(self, state: InferenceState, obj: ObjectState, frame_idx: int,
                **prompts: Any) -> None:
        """Segment the frame from the prompts; its memory waits for propagation."""
        first = frame_idx not in obj.reverse  # never tracked there: start afresh
        out = track_step(self.model, frame_idx, self._features(state, frame_idx), obj.bank,
                         is_init_cond_frame=first, num_frames=state.num_frames,
                         reverse=obj.reverse.get(frame_idx, False), run_memory_encoder=False,
                         **prompts)
        low = fill_holes(out.low_res_masks, self.fill_hole_area)
        obj.pending[frame_idx] = Pending(low.to(state.storage_device), out.obj_ptr,
                                         out.object_score_logits, conditioning=first)

    def _encode_prompted_memories(self, state: InferenceState) -> None:
        """Every pending prompt's memory, from its (hole-filled, thresholded) low-res mask:
        what the user saw, now that their clicks on the frame are final."""
        if not state.objects:
            raise UserError("no object has prompts yet: call add_new_points_or_box or "
                            "add_new_mask first")
        for obj in state.objects.values():
            for t, p in sorted(obj.pending.items()):
                if not p.conditioning and t in obj.bank.conditioning:
                    # A correction on a prompted frame does not replace its conditioning
                    # memory (as the official with add_all_frames_to_correct_as_cond off).
                    continue
                maskmem = prompted_memory(self.model, self._features(state, t).vision,
                                          p.low_res.to(state.device), p.object_score)
                memory = FrameMemory(maskmem.to(state.storage_device, self.memory_dtype),
                                     p.obj_ptr)
                obj.bank.add(t, memory, conditioning=p.conditioning)
                if p.conditioning:
                    obj.cond_masks[t] = p.low_res
                    obj.tracked_masks.pop(t, None)
                else:
                    obj.store_tracked(t, p.low_res)
            obj.pending.clear()
            if not obj.bank.conditioning:
                raise UserError(f"object {obj.obj_id!r} has no prompts left: prompt it or "
                                "remove_object it")

    def _track(self, state: InferenceState, obj: ObjectState, t: int, reverse: bool) -> Tensor:
        """The object's low-res logits (1, 1, S/4, S/4) on frame t, tracked if not prompted."""
        obj.reverse[t] = reverse
        if t in obj.bank.conditioning:
            return obj.cond_masks[t].to(state.device)
        out = track_step(self.model, t, self._features(state, t), obj.bank,
                         num_frames=state.num_frames, reverse=reverse,
                         storage_dtype=self.memory_dtype)
        obj.bank.add(t, out.memory.to(state.storage_device), conditioning=False)
        low = fill_holes(out.low_res_masks, self.fill_hole_area)
        obj.store_tracked(t, low)
        return low


def build_sam2_video_predictor(config_file: str | None = None,
                               ckpt_path: str | os.PathLike[str] | None = None,
                               device: str | torch.device | None = None, mode: str = "eval",
                               apply_postprocessing: bool = True, **kwargs: Any
                               ) -> SAM2VideoPredictor:
    """The official builder's signature: a model name ("sam2.1_hiera_tiny") or official
    config name, its checkpoint; the GPU when there is one. ``apply_postprocessing``:
    clicked masks enter the memory thresholded, and holes of up to 8 low-res pixels are
    filled. ``kwargs`` go to :class:`SAM2VideoPredictor` (``non_overlap_masks`` ...)."""
    if mode != "eval":
        raise UserError("the video predictor runs in eval mode only (mode='eval')")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_sam2(config_file, ckpt_path, device=device,
                       apply_postprocessing=apply_postprocessing)
    kwargs.setdefault("fill_hole_area", 8 if apply_postprocessing else 0)
    return SAM2VideoPredictor(model, **kwargs)
