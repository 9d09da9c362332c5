"""The official SAM 2 checkpoint format: names, sizes, strict loading, one-line refusals.

The official files hold ``{"model": state_dict}`` of the whole video model; ours has every
one of those keys (image and video parts), with the same shapes, and nothing more.
"""

import pytest
import torch

from attnvision.errors import UserError
from attnvision.sam2 import SAM2_CONFIGS, build_sam2, save_sam2
from attnvision.sam2.build import sam2_from_config
from attnvision.sam2.checkpoints import size_of
from attnvision.sam2.configs import OFFICIAL_NAMES
from reference.official_sam2 import OFFICIAL_CONFIGS, official_meta, official_sam2, official_state


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))  # ours (sam2_tiny) has no official twin
def test_keys_and_shapes_are_the_official_keys(name):
    official = {k: tuple(v.shape) for k, v in official_meta(name).state_dict().items()}
    with torch.device("meta"):
        ours = {k: tuple(v.shape)
                for k, v in sam2_from_config(SAM2_CONFIGS[name]).state_dict().items()}
    assert ours == official
    # 2.0 and 2.1 differ only in the video parts.
    assert ("no_obj_embed_spatial" in ours) == name.startswith("sam2.1")
    assert ("obj_ptr_tpos_proj.weight" in ours) == name.startswith("sam2.1")
    meta = {k: torch.empty(s, device="meta") for k, s in official.items()}
    assert size_of(meta) == name  # size from the trunk, version from the video keys


@pytest.fixture(scope="module")
def official_tiny(tmp_path_factory):
    model = official_sam2("sam2.1_hiera_tiny", sharpen=False)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save(official_state(model), path)
    yield model, path
    path.unlink()  # 150 MB: the test machine's disk is small


@pytest.mark.parametrize("name", [None, "sam2.1_hiera_tiny", OFFICIAL_CONFIGS["sam2.1_hiera_tiny"],
                                  "sam2.1_hiera_t"])
def test_official_file_loads_strictly(official_tiny, name):
    official, path = official_tiny
    ours = build_sam2(name, path)
    assert ours.size_name == "sam2.1_hiera_tiny" and not ours.training
    expected = official.state_dict()
    assert set(ours.state_dict()) == set(expected)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_file_of_another_size_is_refused_in_one_line(official_tiny, tmp_path):
    _, tiny = official_tiny
    with pytest.raises(UserError) as e:
        build_sam2("sam2.1_hiera_base_plus", tiny)
    assert "holds SAM 2 sam2.1_hiera_tiny weights, not sam2.1_hiera_base_plus" in str(e.value)
    assert "\n" not in str(e.value)
    # Same width, more blocks: the depth tells tiny from small.
    small = tmp_path / "small.pt"
    torch.save({"model": sam2_from_config(SAM2_CONFIGS["sam2.1_hiera_small"]).state_dict()},
               small)
    with pytest.raises(UserError, match=r"holds SAM 2 sam2\.1_hiera_small weights, not "
                                        r"sam2\.1_hiera_tiny"):
        build_sam2("sam2.1_hiera_tiny", small)
    assert build_sam2(None, small).size_name == "sam2.1_hiera_small"


def test_sam2_0_files_are_told_from_sam2_1(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sam2_hiera_tiny.pt"
    model = official_sam2("sam2_hiera_tiny", noise=0.0, sharpen=False)
    torch.save(official_state(model), path)
    assert build_sam2(None, path).size_name == "sam2_hiera_tiny"
    with pytest.raises(UserError, match=r"holds SAM 2 sam2_hiera_tiny weights, not "
                                        r"sam2\.1_hiera_tiny"):
        build_sam2("sam2.1_hiera_tiny", path)


def test_truncated_and_incomplete_files_are_one_line_errors(official_tiny, tmp_path):
    _, path = official_tiny
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="corrupt, truncated") as e:
        build_sam2(None, truncated)
    assert "\n" not in str(e.value)

    sd = torch.load(path, weights_only=True)["model"]
    del sd["sam_mask_decoder.obj_score_token.weight"]
    sd["image_encoder.neck.extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pt"
    torch.save({"model": sd}, partial)
    with pytest.raises(UserError) as e:
        build_sam2("sam2.1_hiera_tiny", partial)
    message = str(e.value)
    assert "\n" not in message
    assert "missing keys: sam_mask_decoder.obj_score_token.weight" in message
    assert "unexpected keys: image_encoder.neck.extra.weight" in message

    # A trunk whose blocks were cut off looks like no released size.
    short = {k: v for k, v in sd.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    torch.save({"model": short}, partial)
    with pytest.raises(UserError, match="does not look like any released SAM 2 model"):
        build_sam2(None, partial)
    with pytest.raises(UserError, match=r"missing keys: image_encoder\.trunk\.blocks\.11\."):
        build_sam2("sam2.1_hiera_tiny", partial)


def test_other_files_and_names_are_refused(tmp_path):
    with pytest.raises(UserError, match=r"sam2\.1_hiera_large\.pt"):
        build_sam2(None, tmp_path / "missing.pt")
    sam1 = tmp_path / "sam_vit_b.pth"
    torch.save({"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, sam1)
    with pytest.raises(UserError, match=r"SAM \(v1\) checkpoint: use attnvision\.sam"):
        build_sam2(None, sam1)
    with pytest.raises(UserError, match=r"unknown SAM 2 model 'sam2\.1_hiera_huge'"):
        build_sam2("sam2.1_hiera_huge")
    with pytest.raises(UserError, match="needs a model name or a checkpoint"):
        build_sam2()


def test_our_safetensors_round_trip(tmp_path):
    model = sam2_from_config(SAM2_CONFIGS["sam2_hiera_tiny"])
    path = save_sam2(model, tmp_path / "mine.safetensors", "sam2_hiera_tiny")
    loaded = build_sam2(None, path)  # the name is recorded, not guessed from the keys
    assert loaded.size_name == "sam2_hiera_tiny"
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    half = save_sam2(model, tmp_path / "half.safetensors", "sam2_hiera_tiny",
                     dtype=torch.float16)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    assert build_sam2("sam2_hiera_tiny", half).no_mem_embed.dtype == torch.float32
