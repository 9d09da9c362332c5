"""What the video predictor keeps between calls: the frames and, per object, its memories.

Each object is tracked on its own (batch of one), with its own :class:`MemoryBank`, as in the
official predictor; what differs is what is kept. Per object:

- the memory bank: spatial memories in bfloat16 (as the official predictor) and pointers;
- the low-res logits (S/4 square) of its prompted frames in float32, and of tracked frames
  clamped to +-32 in float16: those are read only as the frame's mask when another object is
  prompted there, and as the mask prompt of a correction, which the official clamps to +-32;
- prompts waiting for propagation (:class:`Pending`): their memory is encoded when
  propagation starts, once every click on the frame is in;
- the clicks per frame (for ``clear_old_points=False``) and the direction each frame was
  tracked in (a click on an untracked frame starts the object afresh there).

``inference_state["num_frames"]`` and the other keys users read from the official dict work.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnvision.sam2.tracking import FrameFeatures, MemoryBank, Points
from attnvision.sam2.video_frames import VideoFrames

# The official predictor clamps a frame's earlier logits to this before refining with them.
REFINE_CLAMP = 32.0


@dataclass
class Pending:
    """A prompted frame's output whose memory is not encoded yet."""

    low_res: Tensor  # (1, 1, S/4, S/4) float32 logits, holes filled
    obj_ptr: Tensor  # (1, D)
    object_score: Tensor  # (1, 1)
    conditioning: bool  # a first prompt on the frame (else a correction of a tracked frame)


@dataclass
class ObjectState:
    obj_id: Hashable
    bank: MemoryBank = field(default_factory=MemoryBank)
    points: dict[int, Points] = field(default_factory=dict)  # model-input pixels, on the CPU
    mask_frames: set[int] = field(default_factory=set)  # frames prompted with a mask
    pending: dict[int, Pending] = field(default_factory=dict)
    cond_masks: dict[int, Tensor] = field(default_factory=dict)  # (1, 1, S/4, S/4) float32
    tracked_masks: dict[int, Tensor] = field(default_factory=dict)  # same, float16
    reverse: dict[int, bool] = field(default_factory=dict)  # tracked frames: direction

    def latest_logits(self, frame_idx: int) -> Tensor | None:
        """The frame's most recent low-res logits (1, 1, S/4, S/4), None if never seen."""
        if frame_idx in self.pending:
            return self.pending[frame_idx].low_res
        if frame_idx in self.cond_masks:
            return self.cond_masks[frame_idx]
        return self.tracked_masks.get(frame_idx)

    def store_tracked(self, frame_idx: int, low_res: Tensor) -> None:
        self.tracked_masks[frame_idx] = (low_res.clamp(-REFINE_CLAMP, REFINE_CLAMP)
                                         .to(torch.float16))

    def prompted_frames(self) -> set[int]:
        return set(self.points) | self.mask_frames


@dataclass
class InferenceState:
    """One video's session (what ``init_state`` returns)."""

    frames: VideoFrames
    device: torch.device  # where the model runs
    storage_device: torch.device  # where memories and masks are kept
    objects: dict[Hashable, ObjectState] = field(default_factory=dict)  # in order of adding
    # The image encoder's output for the last frame read: every object on a frame, and the
    # memory encoding of a frame just prompted, read it.
    cached: tuple[int, FrameFeatures] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def video_height(self) -> int:
        return self.frames.height

    @property
    def video_width(self) -> int:
        return self.frames.width

    @property
    def obj_ids(self) -> list[Hashable]:
        return list(self.objects)

    def __getitem__(self, key: str) -> object:
        """The official state's keys that users read."""
        if key in ("num_frames", "video_height", "video_width", "obj_ids", "device",
                   "storage_device"):
            return getattr(self, key)
        raise KeyError(f"{key!r}: this predictor's state offers num_frames, video_height, "
                       "video_width, obj_ids, device and storage_device")
