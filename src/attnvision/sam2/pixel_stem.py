"""High-resolution features for a SAM 2 whose image encoder has none: a small CNN on the pixels.

SAM 2's mask decoder adds stride-8 and stride-4 feature maps after each of its two upsampling
steps (``use_high_res_features_in_sam``); the released models take them from the Hiera's first
two stages. SAM's ViT (our ``sam2_tiny``'s encoder) gives only its stride-16 grid, so on a
256 px frame the decoder draws masks from 16 x 16 tokens, and objects a few cells wide come
out as blobs: with the true box as the prompt, objects under 400 pixels scored J 0.49 and
objects over 5,000 pixels 0.97 (``sam2_tiny`` as shipped until stage 5 of its recipe, on
validation clips).

:class:`PixelStem` supplies the two maps from the image itself, at a small cost (three 3 x 3
convolutions of stride 2 and one of stride 1: 0.2 GFLOP at 256 px, against the ViT's several):

    (B, 3, S, S) -> conv s2 -> (B, D/8, S/2, S/2) -> conv s2, conv -> (B, D/8, S/4, S/4)  = s0
                                                  -> conv s2        -> (B, D/4, S/8, S/8)  = s1

each convolution followed by a channel LayerNorm and GELU. The maps are as wide as the
decoder's ``conv_s0`` / ``conv_s1`` outputs (D/8, D/4), which then project them 1 x 1; a
model grown from one without the stem (:func:`attnvision.sam2.from_sam.with_pixel_stem`)
starts those projections at zero, so it gives exactly the old masks until training opens them.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnvision.sam.common import LayerNorm2d


def _conv(in_chans: int, out_chans: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1),
                         LayerNorm2d(out_chans), nn.GELU())


class PixelStem(nn.Module):
    """Pixels -> [(B, D/8, S/4, S/4), (B, D/4, S/8, S/8)] (module doc)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        fine, coarse = d_model // 8, d_model // 4
        self.s2 = _conv(3, fine, 2)
        self.s4 = nn.Sequential(_conv(fine, fine, 2), _conv(fine, fine, 1))
        self.s8 = _conv(fine, coarse, 2)
        self.out_chans = (fine, coarse)

    def forward(self, x: Tensor) -> list[Tensor]:
        # x: (B, 3, S, S) normalised pixels, S a multiple of 8
        s4 = self.s4(self.s2(x))  # (B, D/8, S/4, S/4)
        return [s4, self.s8(s4)]  # and (B, D/4, S/8, S/8)
