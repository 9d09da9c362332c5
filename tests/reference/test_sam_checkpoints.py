"""The official SAM checkpoint format: names, sizes, strict loading, clear refusals."""

import pytest
import torch
from segment_anything import sam_model_registry as official_registry

from attnvision.errors import UserError
from attnvision.sam import build_sam, sam_model_registry


@pytest.mark.parametrize("name, count", [("vit_b", 93_735_472), ("vit_l", 312_342_832),
                                         ("vit_h", 641_090_608)])
def test_parameter_counts_are_the_official_ones(name, count):
    with torch.device("meta"):
        assert sum(p.numel() for p in build_sam(name).parameters()) == count


def test_official_vit_b_file_loads_strictly_and_wrong_sizes_are_refused(tmp_path):
    torch.manual_seed(0)
    official = official_registry["vit_b"]()
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(official.state_dict(), path)
    ours = sam_model_registry["vit_b"](checkpoint=path)
    for (k, a), (k2, b) in zip(ours.state_dict().items(), official.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    assert not ours.training
    with pytest.raises(UserError, match="holds SAM vit_b weights, not vit_l: use --model vit_b"):
        sam_model_registry["vit_l"](checkpoint=path)
    assert build_sam(None, checkpoint=path).image_encoder.patch_embed.proj.out_channels == 768


def test_missing_keys_and_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"sam_vit_h_4b8939\.pth"):
        build_sam("vit_h", checkpoint=tmp_path / "sam_vit_h_4b8939.pth")
    small = build_sam("vit_b", img_size=256, depth=2, global_attn_indexes=(1,))
    sd = small.state_dict()
    del sd["mask_decoder.iou_token.weight"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"missing keys: mask_decoder\.iou_token\.weight"):
        build_sam("vit_b", checkpoint=tmp_path / "partial.pth", img_size=256, depth=2,
                  global_attn_indexes=(1,))
