"""The released CoTracker3 models, as the official code builds them.

The official classes take no width arguments: every released CoTracker3 has a 128-channel CNN
(``fnet``), a correlation MLP 2401 -> 384 -> 256, an update transformer 384 wide with 8 heads
of width 48, 3 time and 3 space blocks and 64 virtual tracks. The two released files differ in
how they are run: ``scaled_offline.pth`` sees the whole video at once (one window of up to 60
frames is what it was trained on; its time embedding is interpolated to any length),
``scaled_online.pth`` slides a 16-frame window by 8 frames and carries its predictions over.

Every width here can be read back from a checkpoint's shapes
(:func:`attnvision.cotracker.checkpoints.config_from_weights`); ``model_resolution``,
``stride`` and the visibility thresholds cannot, and keep the released values unless a
caller (or a file of ours, in its header) says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

# The official attention heads are 48 wide whatever the model's width (``dim_head=48``), so
# a checkpoint's width gives its number of heads.
HEAD_DIM = 48
# Relative motion to the previous and next frame (x, y each), encoded at 10 octaves:
# 4 numbers + sin and cos of 4 x 10 scaled copies.
MOTION_DIM = 4 + 2 * 4 * 10
# Where the official predictors cut visibility: offline the visibility probability, online
# visibility x confidence. They suit the released models; a small model of ours is sure of
# itself in other places, so its file may record its own cuts, chosen on validation clips
# (recipes/cotracker_visibility.py).
OFFLINE_THRESHOLD = 0.9
ONLINE_THRESHOLD = 0.6


@dataclass(frozen=True)
class CoTrackerConfig:
    """One CoTracker3: its widths, its window and how it walks through a video."""

    window_len: int = 60  # frames the time embedding was made for (online: the window)
    model_resolution: tuple[int, int] = (384, 512)  # (H, W) the predictors resize videos to
    latent_dim: int = 128  # CNN feature channels
    corr_radius: int = 3  # 7x7 neighbourhoods
    corr_levels: int = 4  # feature pyramid levels (strides 4, 8, 16, 32 of the input)
    corr_mlp_hidden: int = 384
    corr_emb_dim: int = 256  # one level's correlation embedding
    hidden_size: int = 384  # update transformer width
    num_heads: int = 8
    time_depth: int = 3
    space_depth: int = 3
    num_virtual_tracks: int = 64
    mlp_ratio: float = 4.0
    stride: int = 4  # input pixels per feature cell
    offline: bool = True  # the whole video in one window; else sliding windows / online
    offline_threshold: float = OFFLINE_THRESHOLD  # visible where vis > this, offline
    online_threshold: float = ONLINE_THRESHOLD  # visible where vis x conf > this, online

    def __post_init__(self) -> None:
        for name in ("offline_threshold", "online_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {value}")
        # The official transformer runs its space blocks after every
        # (time_depth // space_depth)-th time block; anything else would run out of blocks.
        if self.space_depth < 1 or self.time_depth % self.space_depth:
            raise ValueError(f"time_depth ({self.time_depth}) must be a multiple of "
                             f"space_depth ({self.space_depth} >= 1)")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size "
                             f"({self.hidden_size})")
        if self.latent_dim % 4:
            # The CNN's stages are D/2, 3D/4, D, D wide.
            raise ValueError(f"latent_dim must be a multiple of 4, not {self.latent_dim}")
        if self.window_len < 2 or (not self.offline and self.window_len % 2):
            raise ValueError(f"window_len must be >= 2 (and even for the online model), "
                             f"not {self.window_len}")

    @property
    def corr_side(self) -> int:
        """Side of a correlation neighbourhood: 2r + 1."""
        return 2 * self.corr_radius + 1

    @property
    def input_dim(self) -> int:
        """Width of one token into the transformer (1110 released): visibility and confidence
        logits, every level's correlation embedding, the encoded motion."""
        return 2 + self.corr_levels * self.corr_emb_dim + MOTION_DIM


COTRACKER_CONFIGS: dict[str, CoTrackerConfig] = {
    "cotracker3_offline": CoTrackerConfig(window_len=60, offline=True),
    "cotracker3_online": CoTrackerConfig(window_len=16, offline=False),
    # Ours, trained on this 2-core CPU (``attnvision train cotracker``), 1.8 M parameters:
    # - frames at 192 x 256, the released 3:4 at half the side (a quarter of the CNN's work);
    # - a 48-channel CNN (the released 128: the CNN is a third of a training step);
    # - 5 x 5 correlation neighbourhoods: the MLP's 7^4 = 2401 inputs per level, frame and
    #   point were half of a training step; 5 x 5 cells at half the resolution still span 20
    #   of 256 px, more of the frame than the released 7 x 7 (28 of 512);
    # - a transformer 96 wide (2 heads of the official 48, so the width reads back from the
    #   weights), 3 + 3 blocks, 16 virtual tracks: its cost per iteration grows with the
    #   width squared, and online at 144 wide a 10 x 10 grid ran at 4 fps, at 96 at 7-9;
    # - a 24-frame window, the training clip's length: offline the model sees a clip whole as
    #   it was trained, online the same time embedding slides by 12 frames.
    "cotracker_tiny": CoTrackerConfig(
        window_len=24, model_resolution=(192, 256), latent_dim=48, corr_radius=2,
        corr_mlp_hidden=128, corr_emb_dim=64, hidden_size=96, num_heads=2, time_depth=3,
        space_depth=3, num_virtual_tracks=16, offline=True),
}
