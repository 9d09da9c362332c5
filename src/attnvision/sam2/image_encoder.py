"""SAM 2's image encoder: the Hiera trunk, then the FPN neck, minus the coarsest level.

(B, 3, 1024, 1024) -> trunk -> four levels (strides 4, 8, 16, 32) -> neck (256 channels,
stride 16 fused with 32) -> ``scalp`` = 1 drops the stride-32 level -> feature maps at
strides 4, 8 and 16 (256x256, 128x128, 64x64). The stride-16 map is the image embedding
the mask decoder attends to; the two finer ones give the decoder its high-resolution skip
features.

The output keeps the official names (``backbone_fpn``, ``vision_pos_enc``,
``vision_features``), which the video side reads as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnvision.sam2.hiera import Hiera
from attnvision.sam2.neck import FpnNeck


@dataclass
class BackboneOutput:
    """The encoder's feature maps, finest first, and their position codes (or None)."""

    backbone_fpn: list[Tensor]  # [(B, 256, S/4, S/4), (B, 256, S/8, S/8), (B, 256, S/16, S/16)]
    vision_pos_enc: list[Tensor] | None

    @property
    def vision_features(self) -> Tensor:
        """The coarsest kept map, the image embedding: (B, 256, S/16, S/16)."""
        return self.backbone_fpn[-1]


class ImageEncoder(nn.Module):
    """Trunk + neck; ``forward(x)`` returns a :class:`BackboneOutput`."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(f"the trunk's widths {trunk.channel_list} do not match the "
                             f"neck's {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, x: Tensor, positions: bool = True) -> BackboneOutput:
        # x: (B, 3, S, S) normalised pixels; positions: also return the sine codes (the image
        # predictor does not need them; the video side's memory attention does)
        features = self.neck(self.trunk(x))
        if self.scalp > 0:
            features = features[:-self.scalp]
        pos = self.neck.position_encoding(features) if positions else None
        return BackboneOutput(backbone_fpn=features, vision_pos_enc=pos)
