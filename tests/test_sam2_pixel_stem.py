"""sam2_tiny_hr: sam2_tiny with SAM 2's high-resolution skip features drawn from the pixels.

What must hold: the stem's maps have the decoder's widths at strides 4 and 8 for any input
size; a model grown from sam2_tiny (or built from SAM) gives exactly the old model's
features, masks, scores and memories until its projections open, and different masks once
they do (the decoder reads the stem); files of it load back under their own name, also
without our metadata; configs that cannot hold a stem are refused in one line.
"""

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sam2_helpers import first_frame_outputs

from attnvision.errors import UserError
from attnvision.sam.build import build_sam
from attnvision.sam.pretrained import shipped_checkpoint
from attnvision.sam2 import SAM2_CONFIGS, build_sam2, sam2_from_sam, save_sam2
from attnvision.sam2.from_sam import with_pixel_stem
from attnvision.sam2.pixel_stem import PixelStem
from attnvision.sam2.tracking import frame_features

S = 256


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return sam2_from_sam(build_sam(None, shipped_checkpoint(), img_size=S))


@pytest.fixture(scope="module")
def grown(tiny):
    torch.manual_seed(1)
    return with_pixel_stem(tiny, "sam2_tiny_hr")


@settings(max_examples=10, deadline=None)
@given(d_model=st.sampled_from([32, 64, 256]), cells=st.integers(1, 12),
       batch=st.integers(1, 2))
def test_stem_maps_have_the_decoders_widths_at_strides_4_and_8(d_model, cells, batch):
    size = 8 * cells
    s0, s1 = PixelStem(d_model)(torch.randn(batch, 3, size, size))
    assert s0.shape == (batch, d_model // 8, size // 4, size // 4)
    assert s1.shape == (batch, d_model // 4, size // 8, size // 8)


def test_grown_model_is_the_old_one_until_the_projections_open(tiny, grown):
    assert grown.size_name == "sam2_tiny_hr" and grown.config.use_high_res_features_in_sam
    assert sum(p.numel() for p in grown.parameters()) - sum(
        p.numel() for p in tiny.parameters()) == 43_424
    x = torch.randn(1, 3, S, S)
    for a, b in zip(first_frame_outputs(grown, x), first_frame_outputs(tiny, x), strict=True):
        assert torch.equal(a, b)
    features = frame_features(grown, x)
    assert [tuple(f.shape[1:]) for f in features.high_res] == [(32, 64, 64), (64, 32, 32)]

    opened = with_pixel_stem(tiny, "sam2_tiny_hr")
    with torch.no_grad():
        for conv in (opened.sam_mask_decoder.conv_s0, opened.sam_mask_decoder.conv_s1):
            conv.weight.normal_(0, 0.3)
    masks, old = first_frame_outputs(opened, x)[1], first_frame_outputs(tiny, x)[1]
    assert masks.shape == old.shape and (masks - old).abs().max() > 0.1


def test_sam2_tiny_hr_from_sam_starts_closed(tiny):
    torch.manual_seed(0)
    hr = sam2_from_sam(build_sam(None, shipped_checkpoint(), img_size=S), "sam2_tiny_hr")
    for conv in (hr.sam_mask_decoder.conv_s0, hr.sam_mask_decoder.conv_s1):
        assert not conv.weight.any() and not conv.bias.any()
    x = torch.randn(1, 3, S, S)
    expected = first_frame_outputs(hr, x)
    assert torch.equal(expected[0], first_frame_outputs(tiny, x)[0])  # SAM's image embedding
    with torch.no_grad():  # while closed, the stem's weights do not matter
        for p in hr.image_encoder.stem.parameters():
            p.normal_()
    for a, b in zip(first_frame_outputs(hr, x), expected, strict=True):
        assert torch.equal(a, b)


def test_files_load_back_under_their_own_name(grown, tmp_path):
    x = torch.randn(1, 3, S, S)
    expected = first_frame_outputs(grown, x)
    path = save_sam2(grown, tmp_path / "hr.safetensors", "sam2_tiny_hr")
    plain = tmp_path / "hr.pt"
    torch.save({"model": grown.state_dict()}, plain)  # no metadata: recognised by its keys
    for file in (path, plain):
        loaded = build_sam2(None, file)
        assert loaded.size_name == "sam2_tiny_hr"
        for a, b in zip(first_frame_outputs(loaded, x), expected, strict=True):
            assert torch.equal(a, b)
    with pytest.raises(UserError) as excinfo:  # a sam2_tiny file is not an hr one
        build_sam2("sam2_tiny_hr", save_sam2(build_sam2("sam2_tiny"),
                                             tmp_path / "t.safetensors", "sam2_tiny"))
    assert "\n" not in str(excinfo.value) and "sam2_tiny" in str(excinfo.value)


def test_what_cannot_hold_a_stem_is_refused_in_one_line(grown):
    with pytest.raises(UserError, match="does not grow into") as excinfo:
        with_pixel_stem(grown, "sam2_tiny_hr")  # already has one
    assert "\n" not in str(excinfo.value)
    with pytest.raises(UserError, match="does not grow into"):
        with_pixel_stem(build_sam2("sam2.1_hiera_tiny"), "sam2_tiny_hr")
    with pytest.raises(UserError, match="pixel stem is for a ViT"):
        build_sam2(None, config=replace(SAM2_CONFIGS["sam2.1_hiera_tiny"], pixel_stem=True))
    with pytest.raises(UserError, match="need the pixel stem"):
        build_sam2(None, config=replace(SAM2_CONFIGS["sam2_tiny"],
                                        use_high_res_features_in_sam=True))
