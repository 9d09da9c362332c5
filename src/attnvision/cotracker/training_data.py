"""Training examples for CoTracker3: synthetic clips with exact tracks of points queried at
random frames.

Every example is ``(inputs, targets)``:

- ``inputs["frames"]`` (T, 3, H, W) uint8: clip ``first + index`` of
  :func:`attnvision.data.moving_scenes.make_clip` (the *train* split: backgrounds and textures
  the test split never uses), drawn at the model's resolution (H, W), so tracks need no
  rescaling; objects and camera move, one clip in two has an object wholly hidden for 3+
  frames, one in three a look-alike distractor;
- ``inputs["queries"]`` (N, 3) float32: (t, x, y) in those pixels, each point visible at its
  query frame t;
- ``targets["tracks"]`` (T, N, 2) float32: every query's exact position in every frame
  (:meth:`~attnvision.data.moving_scenes.Clip.track` from its query frame), and
  ``targets["visible"]`` (T, N) bool: whether it shows there (read from the masks).

Which points (:func:`sample_queries`): about half on objects (uniform over their pixels) and
half on the background, as the evaluation places them. A share :data:`FIRST_FRAME_SHARE` is
queried on frame 0 (how ``attnvision track`` and the TAP-Vid "first" protocol query), the rest
at a uniformly random frame (the CoTracker3 recipe: queries at random visible frames, so the
offline model learns to track backwards as well as forwards). A point sampled from a frame's
pixels is visible there by construction (its pixel shows its own object, or the background);
the rare point whose float32 position reads another pixel is drawn again.

The clip of an index never changes; its points are drawn from (seed, epoch, index), the same
in every process of a torchrun job and in a resumed run, other points each epoch
(:meth:`SyntheticTracks.set_epoch`). The default collate stacks examples into batches.

Validation (:func:`validation_clips`): train-split clips from :data:`VALIDATION_FIRST_SEED`
on, which no run trains on (the command refuses ``--first-clip + --clips`` beyond it), half
with a forced occlusion, as the held-out test clips
(:func:`attnvision.cotracker.synthetic_eval.held_out_clips`) are made from the test split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from attnvision.data.moving_scenes import ClipsMadeOnUse
from attnvision.errors import UserError

if TYPE_CHECKING:
    from attnvision.data.moving_scenes import Clip

Example = tuple[dict[str, Tensor], dict[str, Tensor]]
ON_OBJECTS = 0.5  # share of a clip's points placed on objects (the rest on the background)
FIRST_FRAME_SHARE = 0.3  # share of points queried on frame 0; the rest at a random frame
# Train-split seeds from here on are validation clips; training clips stay below.
VALIDATION_FIRST_SEED = 1_000_000
RESAMPLE_TRIES = 5


def sample_queries(clip: Clip, points: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``points`` queries of ``clip`` (module doc) and their exact tracks.

    Returns queries (N, 3) float32 (t, x, y), tracks (T, N, 2) float32 and visible (T, N)
    bool; every query is visible at its own frame.
    """
    t_count = len(clip.frames)
    frames = np.where(rng.random(points) < FIRST_FRAME_SHARE, 0,
                      rng.integers(0, t_count, points))
    queries = np.zeros((points, 3), np.float32)
    tracks = np.zeros((t_count, points, 2), np.float32)
    visible = np.zeros((t_count, points), bool)
    # One call per query frame: Clip.track maps points of one frame through every frame.
    for t in np.unique(frames).tolist():
        todo = np.nonzero(frames == t)[0]
        for _ in range(RESAMPLE_TRIES):
            xy = clip.sample_tracks(len(todo), rng, frame=t, on_objects=ON_OBJECTS)
            xy_all, vis_all = clip.track(xy, frame=t)  # (T, n, 2), (T, n)
            queries[todo] = np.concatenate([np.full((len(todo), 1), t, np.float32), xy], 1)
            tracks[:, todo], visible[:, todo] = xy_all, vis_all
            todo = todo[~vis_all[t]]  # the rare point whose position reads another pixel
            if not len(todo):
                break
        else:
            raise RuntimeError(f"clip {clip.seed}: no visible point found on frame {t}")
    return queries, tracks, visible


def track_example(clip: Clip, points: int, rng: np.random.Generator) -> Example:
    """One training example (module doc) of ``clip`` with ``points`` queries."""
    queries, tracks, visible = sample_queries(clip, points, rng)
    frames = torch.from_numpy(np.ascontiguousarray(clip.frames)).permute(0, 3, 1, 2)
    return ({"frames": frames.contiguous(), "queries": torch.from_numpy(queries)},
            {"tracks": torch.from_numpy(tracks), "visible": torch.from_numpy(visible)})


class SyntheticTracks(Dataset):
    """Synthetic training clips ``first, first + 1, ...`` (train split) of ``frames`` frames
    at ``size`` (H, W) with ``points`` queried points each; see the module doc."""

    def __init__(self, length: int, size: tuple[int, int], frames: int = 24,
                 points: int = 128, first: int = 0, seed: int = 0) -> None:
        if length < 1 or frames < 2 or points < 1 or first < 0:
            raise UserError(f"synthetic tracks need clips >= 1, frames >= 2, points >= 1 and "
                            f"first >= 0, got {length}, {frames}, {points} and {first}")
        self.length, self.size, self.frames, self.points = length, tuple(size), frames, points
        self.first, self.seed, self.epoch = first, seed, 1

    def set_epoch(self, epoch: int) -> None:
        """Draw the points of ``epoch`` (fit numbers epochs from 1)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def clip(self, index: int) -> Clip:
        from attnvision.data.moving_scenes import make_clip

        return make_clip(self.first + index, "train", size=self.size, frames=self.frames)

    def __getitem__(self, index: int) -> Example:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return track_example(self.clip(index), self.points, rng)


def validation_clips(count: int, frames: int = 24, size: int = 256) -> list[Clip]:
    """``count`` train-split clips from :data:`VALIDATION_FIRST_SEED`, ``size`` squares (as
    the test clips), the first, third, ... with a forced occlusion (when 5+ frames)."""
    from attnvision.data.moving_scenes import MIN_OCCLUSION_FRAMES, make_clip

    occlusions = frames >= MIN_OCCLUSION_FRAMES
    return [make_clip(VALIDATION_FIRST_SEED + k, "train", size=size, frames=frames,
                      occlusion=occlusions and k % 2 == 0) for k in range(count)]


class ValidationClips(ClipsMadeOnUse):
    """The per-epoch validation clips (:func:`validation_clips`), made on first use and kept."""

    def __init__(self, count: int, frames: int = 24, size: int = 256) -> None:
        super().__init__(count, lambda: validation_clips(count, frames, size))
        self.frames, self.size = frames, size
