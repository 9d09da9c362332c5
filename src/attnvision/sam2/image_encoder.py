"""SAM 2's image encoder: the Hiera trunk, then the FPN neck, minus the coarsest level.

(B, 3, 1024, 1024) -> trunk -> four levels (strides 4, 8, 16, 32) -> neck (256 channels,
stride 16 fused with 32) -> ``scalp`` = 1 drops the stride-32 level -> feature maps at
strides 4, 8 and 16 (256x256, 128x128, 64x64). The stride-16 map is the image embedding
the mask decoder attends to; the two finer ones give the decoder its high-resolution skip
features.

The output keeps the official names (``backbone_fpn``, ``vision_pos_enc``,
``vision_features``), which the video side reads as well.

:class:`ViTImageEncoder` puts SAM's ViT encoder (:mod:`attnvision.sam.image_encoder`, its own
neck included) in the Hiera's place, as the official SAM 2 allows an encoder without
high-resolution features (``use_high_res_features_in_sam=False``): one level, the ViT's
stride-16 embedding, with the sine code the FPN neck gives its stride-16 level. Its weights
sit under ``image_encoder.trunk.`` with SAM's own names (``image_encoder.trunk.blocks.0.attn
.qkv``, ``image_encoder.trunk.neck.0``), so a SAM checkpoint maps in by one prefix. With a
:class:`~attnvision.sam2.pixel_stem.PixelStem` (``image_encoder.stem``) it gives the two
high-resolution levels too, drawn from the pixels: three levels, as a Hiera's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnvision.sam.image_encoder import ImageEncoderViT
from attnvision.sam2.hiera import Hiera
from attnvision.sam2.neck import FpnNeck, position_codes
from attnvision.sam2.pixel_stem import PixelStem


@dataclass
class BackboneOutput:
    """The encoder's feature maps, finest first, and their position codes (or None)."""

    # Hiera: [(B, 256, S/4, S/4), (B, 256, S/8, S/8), (B, 256, S/16, S/16)]; ViT: the last only
    backbone_fpn: list[Tensor]
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


class ViTImageEncoder(nn.Module):
    """SAM's ViT encoder as SAM 2's: ``forward(x)`` returns a one-level
    :class:`BackboneOutput`, the (B, 256, S/16, S/16) embedding and its sine code, or with
    ``stem`` three levels, the stem's stride-4 and stride-8 maps first."""

    def __init__(self, trunk: ImageEncoderViT, stem: PixelStem | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.stem = stem
        self.d_model = trunk.neck[-1].weight.shape[0]  # the neck's last LayerNorm2d: out_chans

    def forward(self, x: Tensor, positions: bool = True) -> BackboneOutput:
        # x: (B, 3, S, S) normalised pixels; positions: also return the sine codes
        embed = self.trunk(x)  # (B, 256, S/16, S/16)
        # with a stem: [(B, D/8, S/4, S/4), (B, D/4, S/8, S/8), embed]
        features = [*self.stem(x), embed] if self.stem is not None else [embed]
        pos = position_codes(features, self.d_model) if positions else None
        return BackboneOutput(backbone_fpn=features, vision_pos_enc=pos)
