"""A small random-weight SAM 2 that the command-line tests save and load by the tiny name,
and :func:`first_frame_outputs`, what tests compare between two models of the same weights.

The commands read the model's name from the file and build that config; while a test runs,
a fixture registers this 128 px model with a tiny trunk under the tiny name, so
the file saved with that name builds it (seconds, not the 1024 px model's minutes):

    @pytest.fixture(autouse=True)
    def small_config(monkeypatch):
        monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)
"""

from dataclasses import replace
from pathlib import Path

import torch

from attnvision.sam2 import SAM2_CONFIGS, sam2_from_config, save_sam2

NAME = "sam2.1_hiera_tiny"
SMALL = replace(SAM2_CONFIGS[NAME], image_size=128).with_trunk(
    embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4))


def small_sam2_weights(path: Path) -> Path:
    """Save the small model, seeded, with decisive masks (mask logits of several units)."""
    torch.manual_seed(0)
    model = sam2_from_config(SMALL).eval()
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
    return save_sam2(model, path, NAME)


def first_frame_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Image embedding, masks and IoU of a click at (120, 100), object score, memory and
    object pointer of one prompted frame: (B, ...) tensors."""
    from attnvision.sam2.tracking import MemoryBank, frame_features, track_step

    with torch.no_grad():
        features = frame_features(model, x)
        out = track_step(model, 0, features, MemoryBank(),
                         points=(torch.tensor([[[120.0, 100.0]]]), torch.tensor([[1]])),
                         is_init_cond_frame=True)
    return [features.vision, out.multimasks, out.ious, out.object_score_logits,
            out.memory.maskmem, out.obj_ptr]
