"""A video's frames for SAM 2's video predictor: kept as uint8, made model inputs one at a time.

The official predictor turns every frame into float32 at the model's size up front (12 MB a
frame at 1024 px, most of the tens of gigabytes users report on a few minutes of video). Here
a frame stays (H, W, 3) uint8: at its own size, or already resized to the model's square when
that is smaller (3 MB at 1024 px); it becomes a float32 input only when the image encoder
reads it. The numbers are the official video predictor's: PIL bicubic resize of the uint8
frame to the square (video frames, unlike the image predictor's images, are resized by PIL on
uint8 pixels), then /255 and the ImageNet normalisation. Resizing now or later gives the same
pixels, so where a frame is stored does not change the result.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from attnvision.data.video import VideoLike, open_video
from attnvision.sam2.transforms import normalise


def _to_square(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, PIL bicubic (the official video resize)."""
    return np.array(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))


def frame_to_input(frame: np.ndarray, size: int, device: torch.device) -> Tensor:
    """(H, W, 3) uint8 -> the image encoder's input (1, 3, S, S) float32, as the official
    video predictor makes it."""
    if frame.shape[:2] != (size, size):
        frame = _to_square(frame, size)
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)
    return normalise(x.float() / 255)[None]


class VideoFrames:
    """Every frame of a video, read once (prompts may come on any frame, so all are kept)."""

    def __init__(self, video: VideoLike, image_size: int) -> None:
        opened = open_video(video)
        self.height, self.width = opened.size
        self.image_size = image_size
        self.source = opened.source
        self._frames = [self._store(frame) for frame in opened]

    def _store(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[0] * frame.shape[1] > self.image_size**2:
            return _to_square(frame, self.image_size)  # smaller, and the same input later
        # A frame of the caller's array stays a view of it (no copy); read-only frames (some
        # decoders give those) are copied because torch.from_numpy wants writable memory.
        return frame if frame.flags.writeable else frame.copy()

    def __len__(self) -> int:
        return len(self._frames)

    def model_input(self, frame_idx: int, device: torch.device) -> Tensor:
        """Frame ``frame_idx`` as the image encoder's input: (1, 3, S, S) float32."""
        return frame_to_input(self._frames[frame_idx], self.image_size, device)
