"""Pictures of a video's results: a contact sheet of sampled frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def sample_indices(num_frames: int, count: int = 8) -> list[int]:
    """``count`` frame indices spread evenly from the first frame to the last (fewer for a
    shorter video)."""
    if num_frames <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, num_frames - 1, min(count, num_frames))
                   .round()})


def contact_sheet(frames: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4,
                  thumb_width: int = 320, gap: int = 4) -> Image.Image:
    """The (H, W, 3) uint8 ``frames`` shrunk to ``thumb_width`` (never enlarged) in a grid of
    ``columns``, each with its caption written in its top-left corner."""
    if len(frames) != len(captions) or not frames:
        raise ValueError("give one caption per frame, and at least one frame")
    h, w = frames[0].shape[:2]
    scale = min(1.0, thumb_width / w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    columns = min(columns, len(frames))
    rows = -(-len(frames) // columns)
    sheet = Image.new("RGB", (columns * tw + (columns + 1) * gap, rows * th + (rows + 1) * gap),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (frame, caption) in enumerate(zip(frames, captions, strict=True)):
        x = gap + (k % columns) * (tw + gap)
        y = gap + (k // columns) * (th + gap)
        thumb = Image.fromarray(frame)
        if thumb.size != (tw, th):
            thumb = thumb.resize((tw, th), Image.Resampling.BILINEAR)
        sheet.paste(thumb, (x, y))
        left, top, right, bottom = draw.textbbox((x + 3, y + 2), caption)
        draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
        draw.text((x + 3, y + 2), caption, fill=(255, 255, 255))
    return sheet
