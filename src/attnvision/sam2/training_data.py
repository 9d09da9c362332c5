"""Training examples for SAM 2: short clips at the model's input size and their objects' masks.

Every example is ``(inputs, valid)``, inputs a dict of

- ``frames`` (T, 3, S, S) uint8: the clip's frames, squares of the model's input size S;
- ``masks`` (K, T, S, S) bool: each object's mask on every frame, K = ``max_objects`` rows,
  rows past the clip's objects empty;
- ``valid`` (K,) bool: which rows are objects (also the pair's target, which the training
  step does not read: it draws its prompts from the masks).

Pixels stay uint8 and masks bool until the training step normalises them: a batch of two
8-frame clips at 256 px with three objects is 6 MB, not 25 MB of float32. The objects of a
clip are the ones visible on its first frame (the frame that is prompted), at most
``max_objects`` of them (three, as the official recipe's ``max_num_objects``), drawn at random
when there are more. Which objects (and, for a folder of videos, which window of frames) an
example holds is drawn from (seed, epoch, index): the same in every process of a torchrun
job and in a resumed run, another draw each epoch (:meth:`set_epoch`).

Two sources:

- :class:`SyntheticClips`: clip ``first + i`` of :func:`attnvision.data.moving_scenes.make_clip`
  (train split), drawn at the model's size, exact masks;
- :class:`DavisClips`: a user's DAVIS-format folder (:mod:`attnvision.data.davis`), one
  example per sequence and epoch: a window of T consecutive annotated frames, frames resized
  to the square as the video predictors resize them (PIL bicubic on uint8,
  :mod:`attnvision.sam2.video_frames`), masks resized nearest; void (255) counts as
  background, as nothing marks it in a training target.

:class:`ClipAugment` flips and recolours a batch, the same way on every frame of a clip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from attnvision.data.davis import VOID, Sequence, davis_sequences
from attnvision.data.moving_scenes import ClipsMadeOnUse
from attnvision.errors import UserError

Example = tuple[dict[str, Tensor], Tensor]
MAX_OBJECTS = 3  # objects per clip (the official recipe's max_num_objects)


def clip_example(frames: np.ndarray, labels: np.ndarray, ids: list[int],
                 max_objects: int = MAX_OBJECTS) -> Example:
    """(T, S, S, 3) uint8 frames and (T, S, S) object ids -> an example holding the objects
    ``ids`` (at most ``max_objects``) as mask rows, in that order."""
    t, s = frames.shape[0], frames.shape[1]
    if len(ids) > max_objects:
        raise ValueError(f"{len(ids)} objects, more than max_objects={max_objects}")
    masks = torch.zeros(max_objects, t, s, s, dtype=torch.bool)
    for row, obj in enumerate(ids):
        masks[row] = torch.from_numpy(labels == obj)
    valid = torch.zeros(max_objects, dtype=torch.bool)
    valid[:len(ids)] = True
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
    return {"frames": pixels, "masks": masks, "valid": valid}, valid


def _draw_seed(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def pick_objects(first_labels: np.ndarray, rng: np.random.Generator,
                 max_objects: int = MAX_OBJECTS) -> list[int]:
    """The ids visible in a clip's first frame (not background, not void), at most
    ``max_objects`` of them drawn at random, in increasing order."""
    ids = [int(i) for i in np.unique(first_labels) if i not in (0, VOID)]
    if len(ids) > max_objects:
        ids = sorted(int(i) for i in rng.choice(ids, max_objects, replace=False))
    return ids


class _Epochs:
    """What both datasets share: the epoch whose draws ``__getitem__`` makes."""

    seed: int
    epoch: int = 1

    def set_epoch(self, epoch: int) -> None:
        """Draw the objects and windows of ``epoch`` (fit numbers epochs from 1)."""
        self.epoch = int(epoch)


class SyntheticClips(_Epochs, Dataset):
    """Synthetic clips ``first, first + 1, ...`` (:func:`~attnvision.data.moving_scenes.make_clip`,
    train split unless told) of ``frames`` frames at ``size`` pixels, 1-3 objects each (a
    look-alike distractor or an occluder may add one)."""

    def __init__(self, length: int, size: int, frames: int = 8, first: int = 0,
                 split: str = "train", max_objects: int = MAX_OBJECTS, seed: int = 0) -> None:
        if length < 1 or frames < 1 or first < 0:
            raise UserError(f"synthetic clips need length >= 1, frames >= 1 and first >= 0, "
                            f"got {length}, {frames} and {first}")
        self.length, self.size, self.frames, self.first = length, size, frames, first
        self.split, self.max_objects, self.seed = split, max_objects, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Example:
        from attnvision.data.moving_scenes import make_clip

        clip = make_clip(self.first + index, self.split, size=self.size, frames=self.frames,
                         n_objects=(1, 3))
        ids = pick_objects(clip.masks[0], _draw_seed(self.seed, self.epoch, index),
                           self.max_objects)
        return clip_example(clip.frames, clip.masks, ids, self.max_objects)


def _square_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, as the video predictors resize frames."""
    from attnvision.sam2.video_frames import _to_square

    return frame if frame.shape[:2] == (size, size) else _to_square(frame, size)


def _square_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(H, W) ids -> (size, size) ids, nearest (an id is never blended with its neighbour)."""
    if labels.shape == (size, size):
        return labels
    return np.asarray(Image.fromarray(labels).resize((size, size), Image.Resampling.NEAREST))


@dataclass(frozen=True)
class _Windows:
    sequence: Sequence
    starts: tuple[int, ...]  # first frames of the windows of T consecutive annotated frames


def _window_starts(sequence: Sequence, frames: int) -> tuple[int, ...]:
    annotated = set(sequence.masks)
    return tuple(t for t in range(len(sequence.frames) - frames + 1)
                 if all(t + k in annotated for k in range(frames)))


class DavisClips(_Epochs, Dataset):
    """A DAVIS-format folder as training clips: example i is a window of ``frames``
    consecutive annotated frames of sequence i, drawn each epoch, with up to
    ``max_objects`` of the objects visible on its first frame. Sequences without such a
    window are left out (``skipped`` names them); a folder left with none is an error."""

    def __init__(self, root: str | os.PathLike[str], size: int, frames: int = 8,
                 max_objects: int = MAX_OBJECTS, seed: int = 0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"annotations folder not found: {root} (a DAVIS-format folder with "
                            "JPEGImages/ and Annotations/)")
        if frames < 1:
            raise UserError(f"frames must be >= 1, got {frames}")
        windows, self.skipped = [], []
        for sequence in davis_sequences(root):
            starts = _window_starts(sequence, frames)
            (windows.append(_Windows(sequence, starts)) if starts
             else self.skipped.append(sequence.name))
        if not windows:
            raise UserError(f"no sequence of {root} has {frames} consecutive frames with masks "
                            f"(each frame needs its PNG in Annotations/): train on fewer "
                            f"frames (--frames) or annotate more")
        self.windows, self.size, self.frames = windows, size, frames
        self.max_objects, self.seed = max_objects, seed

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Example:
        from attnvision.data.images import load_image

        entry = self.windows[index]
        sequence = entry.sequence
        rng = _draw_seed(self.seed, self.epoch, index)
        # The drawn window, or the next one (in a random order) whose first frame shows an
        # object: a clip must start on a frame with something to prompt.
        ids: list[int] = []
        start = entry.starts[0]
        for start in rng.permutation(entry.starts).tolist():
            ids = pick_objects(_square_labels(sequence.mask(start), self.size), rng,
                               self.max_objects)
            if ids:
                break
        frames, labels = [], []
        for t in range(start, start + self.frames):
            frame = load_image(sequence.frames[t])
            mask = sequence.mask(t, frame.shape[:2])
            frames.append(_square_frame(frame, self.size))
            labels.append(_square_labels(mask, self.size))
        return clip_example(np.stack(frames), np.stack(labels), ids, self.max_objects)

    def describe(self) -> str:
        n = sum(len(w.sequence.frames) for w in self.windows)
        return f"{len(self.windows)} sequences ({n} frames)"


class ClipAugment:
    """Changes that keep masks exact, the same on every frame of a clip (official recipe:
    horizontal flips, grey frames now and then, a little colour jitter): a horizontal flip
    half the time, grey with probability ``grey``, brightness and contrast jitter."""

    def __init__(self, flip: float = 0.5, grey: float = 0.05, brightness: float = 0.1,
                 contrast: float = 0.1) -> None:
        self.flip, self.grey = flip, grey
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, inputs: dict[str, Tensor], generator: torch.Generator
                 ) -> dict[str, Tensor]:
        frames, masks = inputs["frames"], inputs["masks"]  # (B, T, 3, S, S), (B, K, T, S, S)
        b = frames.shape[0]

        def draw(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator).to(frames.device)

        flip = draw(b) < self.flip
        x = torch.where(flip[:, None, None, None, None], frames.flip(-1), frames).float()
        masks = torch.where(flip[:, None, None, None, None], masks.flip(-1), masks)
        grey = (draw(b) < self.grey)[:, None, None, None, None]
        x = torch.where(grey, x.mean(2, keepdim=True).expand_as(x), x)
        mean = x.mean((1, 2, 3, 4), keepdim=True)
        contrast = 1 + self.contrast * (2 * draw(b, 1, 1, 1, 1) - 1)
        shift = 255 * self.brightness * (2 * draw(b, 1, 1, 1, 1) - 1)
        x = (x - mean) * contrast + mean + shift
        return {**inputs, "frames": x.clamp(0, 255).round().to(torch.uint8), "masks": masks}


# The per-epoch validation clips: train-split seeds from here on, which no training run may
# reach (the command refuses --first-clip + --clips beyond it). Epochs are chosen on these;
# the test split (other photos) is kept for the figures reported of the chosen model.
VALIDATION_FIRST_SEED = 1_000_000


class HeldOutClips(ClipsMadeOnUse):
    """The per-epoch validation clips: :func:`attnvision.sam2.synthetic_eval.held_out_clips`
    of the train split from seed :data:`VALIDATION_FIRST_SEED` (clips never trained on, half
    with occlusions), made on first use and kept."""

    def __init__(self, count: int, frames: int, size: int) -> None:
        from attnvision.sam2.synthetic_eval import held_out_clips

        super().__init__(count, lambda: held_out_clips(count, frames, size,
                                                       first_seed=VALIDATION_FIRST_SEED,
                                                       split="train"))
        self.frames, self.size = frames, size
