"""SAM 2 (Segment Anything in Images and Videos): the image model and image predictor.

The official names work here: ``build_sam2("sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt")``
(or the official config name ``"configs/sam2.1/sam2.1_hiera_t.yaml"``),
``SAM2ImagePredictor(model).set_image(...)`` / ``.predict(...)``. The same model holds the
video parts (memory encoder, memory attention, object pointers), and
:mod:`attnvision.sam2.tracking` runs one frame of video tracking with them
(``track_step`` on a caller-owned ``MemoryBank``), on which ``SAM2VideoPredictor`` (built by
``build_sam2_video_predictor``, the official names) tracks prompted objects through a video;
``SAM2StreamPredictor`` tracks them through a stream of frames in bounded memory.
``SAM2AutomaticMaskGenerator`` segments everything in an image from a grid of point prompts
(SAM's generator, :mod:`attnvision.sam.automatic`, run with SAM 2).

Ours: ``sam2_tiny``, SAM 2 with the ViT encoder of SAM's shipped ``sam_tiny``, started from
it by ``sam2_from_sam(load_shipped())`` (:mod:`attnvision.sam2.from_sam`), trained on
synthetic videos, then grown by a pixel stem that gives its decoder high-resolution features
(``sam2_tiny_hr``, :mod:`attnvision.sam2.pixel_stem`) and trained on; shipped in the package:
``attnvision.sam2.pretrained.load_shipped()``.
"""

from attnvision.sam2.automatic import SAM2AutomaticMaskGenerator
from attnvision.sam2.build import build_sam2, sam2_from_config
from attnvision.sam2.checkpoints import save_sam2
from attnvision.sam2.configs import SAM2_CONFIGS, HieraConfig, SAM2Config
from attnvision.sam2.from_sam import copy_sam_weights, sam2_from_sam
from attnvision.sam2.image_predictor import SAM2ImagePredictor
from attnvision.sam2.model import SAM2
from attnvision.sam2.streaming import SAM2StreamPredictor
from attnvision.sam2.video_predictor import SAM2VideoPredictor, build_sam2_video_predictor

__all__ = ["SAM2", "SAM2_CONFIGS", "HieraConfig", "SAM2AutomaticMaskGenerator", "SAM2Config",
           "SAM2ImagePredictor", "SAM2StreamPredictor", "SAM2VideoPredictor", "build_sam2",
           "build_sam2_video_predictor", "copy_sam_weights", "sam2_from_config",
           "sam2_from_sam", "save_sam2"]
