"""Segment Anything: image encoder, prompt encoder, two-way transformer and mask decoder.

The official names work here: ``sam_model_registry["vit_b"](checkpoint=...)``,
``SamPredictor(sam).set_image(...)`` / ``.predict(...)``.
"""

from attnvision.sam.automatic import SamAutomaticMaskGenerator
from attnvision.sam.build import build_sam, sam_model_registry
from attnvision.sam.model import Sam
from attnvision.sam.predictor import SamPredictor

__all__ = ["Sam", "SamAutomaticMaskGenerator", "SamPredictor", "build_sam",
           "sam_model_registry"]
