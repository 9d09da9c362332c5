"""Windowed attention's bookkeeping: a token grid cut into square windows and put back.

Shared by SAM's ViT encoder and SAM 2's Hiera trunk, which attend inside non-overlapping
windows of the (B, H, W, C) token grid. A grid that is not a multiple of the window is padded
at the bottom and right; the padding is cropped away when the windows are put back.
"""

from __future__ import annotations

from torch import Tensor


def window_partition(x: Tensor, window_size: int, pad_value: Tensor | None = None
                     ) -> tuple[Tensor, tuple[int, int]]:
    """Cut (B, H, W, C) into (B * nW, ws, ws, C) windows, row-major, padding bottom/right.

    Padding is zero, or ``pad_value`` (C,) at every padded token. Returns the windows and the
    padded size (Hp, Wp).
    """
    b, h, w, c = x.shape
    hp, wp = -(-h // window_size) * window_size, -(-w // window_size) * window_size
    if (hp, wp) != (h, w):
        padded = x.new_zeros(b, hp, wp, c) if pad_value is None else (
            pad_value.to(x.dtype).expand(b, hp, wp, c).clone())
        padded[:, :h, :w] = x
        x = padded
    nh, nw = hp // window_size, wp // window_size
    windows = x.view(b, nh, window_size, nw, window_size, c).transpose(2, 3)
    # Contiguous even where a view would do (one row of windows): a linear layer on the
    # strided view runs as a batched product with its weight copied for every window.
    return windows.reshape(b * nh * nw, window_size, window_size, c).contiguous(), (hp, wp)


def window_unpartition(windows: Tensor, window_size: int, pad_hw: tuple[int, int],
                       hw: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C), crop padding."""
    hp, wp = pad_hw
    h, w = hw
    nh, nw = hp // window_size, wp // window_size
    c = windows.shape[-1]
    x = windows.view(-1, nh, nw, window_size, window_size, c).transpose(2, 3)
    x = x.reshape(-1, hp, wp, c)
    # Contiguous, so the output projection that follows runs as one fused matmul + bias.
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x
