"""Parity with the official SAM image encoder on identical (seeded random) weights.

Every parameter is perturbed (relative-position tables and absolute positions included, which
the official code initialises to zero), so each one must be loaded and used as the official
encoder uses it.
"""

from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_anything.modeling import ImageEncoderViT as OfficialEncoder
from segment_anything.modeling.image_encoder import window_partition as official_partition

from attnvision.sam.image_encoder import (
    ENCODER_CONFIGS,
    Attention,
    ImageEncoderViT,
    build_image_encoder,
    window_partition,
    window_unpartition,
)

SMALL = dict(img_size=256, patch_size=16, embed_dim=64, depth=4, num_heads=4,
             global_attn_indexes=(1, 3), use_rel_pos=True)


def official(seed: int = 0, noise: float = 0.1, **kwargs) -> OfficialEncoder:
    """The official encoder, as build_sam makes it, with every tensor perturbed."""
    torch.manual_seed(seed)
    model = OfficialEncoder(norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kwargs).eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            t.add_(torch.randn_like(t) * noise)
    return model


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("window_size", [4, 7])  # 16 tokens: 4 divides, 7 pads to 21
def test_small_encoder_matches_official(window_size):
    ref = official(window_size=window_size, **SMALL)
    ours = ImageEncoderViT(window_size=window_size, **SMALL).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = ref(x), ours(x)
        # Many small bias chunks (one query row each) give the same result.
        for block in ours.blocks:
            block.attn.bias_chunk_elems = 1
        chunked = ours(x)
    assert got.shape == expected.shape == (2, 256, 16, 16)
    assert rel_err(got, expected) < 1e-4
    assert rel_err(chunked, expected) < 1e-4


def test_training_in_float32_with_small_bias_chunks_gives_the_official_gradients():
    # The chunked bias reuses buffers autograd cannot follow; `train sam` without --amp at
    # 512 px reached it (every global block chunked) and failed on its first step.
    ref = official(window_size=4, **SMALL)
    ours = ImageEncoderViT(window_size=4, **SMALL)
    ours.load_state_dict(ref.state_dict(), strict=True)
    for block in ours.blocks:
        block.attn.bias_chunk_elems = 1
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    ref(x).square().mean().backward()
    ours(x).square().mean().backward()
    expected = dict(ref.named_parameters())
    for name, param in ours.named_parameters():
        assert rel_err(param.grad, expected[name].grad) < 1e-3, name


def test_relative_positions_matter():
    # Guards the parity test's power: the perturbed tables change the output a lot.
    ref = official(window_size=7, **SMALL)
    ours = ImageEncoderViT(window_size=7, **SMALL).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        before = ours(x)
        for block in ours.blocks:
            block.attn.rel_pos_h.zero_()
            block.attn.rel_pos_w.zero_()
        assert rel_err(ours(x), before) > 1e-2


@pytest.mark.parametrize("window_size", [0, 7])
def test_explicit_attention_path_matches_fast_path(window_size):
    attn = Attention(32, num_heads=4, use_rel_pos=True, window_size=window_size,
                     input_size=(window_size, window_size) if window_size else (12, 12)).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(2, 12, 12, 32)
    with torch.inference_mode():
        fast = attn(x)
        slow, maps = attn(x, return_attention=True)
    windows = 2 * 4 if window_size else 2  # 12 pads to 14: 2x2 windows per image
    tokens = window_size**2 if window_size else 144
    assert maps.shape == (windows, 4, tokens, tokens)
    assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("band_rows", [1, 3, 16])
def test_global_block_mlp_bands_do_not_change_the_result(band_rows):
    ref = official(window_size=7, **SMALL)
    ours = ImageEncoderViT(window_size=7, **SMALL).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        whole = ours(x)
        for block in ours.blocks:
            block.mlp_band_rows = band_rows
        assert torch.allclose(ours(x), whole, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_global_attention_matches_float32(dtype):
    # The bf16 / fp16 CPU path (products in low precision, softmax in float32) against the
    # fused kernel in float32, on a global block with perturbed relative positions.
    torch.manual_seed(0)
    attn = Attention(64, num_heads=4, use_rel_pos=True, input_size=(32, 32)).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    attn.logit_chunk_elems = 4 * 32 * 1024  # several bands of query rows
    x = torch.randn(2, 32, 32, 64)

    def rel(got):
        return ((got.float() - expected).norm() / expected.norm()).item()

    with torch.inference_mode():
        expected = attn(x)
        attn.to(dtype)
        attn.low_precision_min_tokens = 10**9
        fused = attn(x.to(dtype))  # PyTorch's fused kernel in low precision
        attn.low_precision_min_tokens = 1  # take the path at this small size
        low = attn(x.to(dtype))
    assert low.shape == expected.shape and low.dtype == dtype
    # As close to float32 as the fused kernel gets in the same precision.
    assert rel(low) < 1.5 * rel(fused) + 1e-3
    assert rel(low) < 2e-2


def test_vit_b_at_1024_matches_official():
    cfg = ENCODER_CONFIGS["vit_b"]
    ref = official(noise=0.02, embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                   global_attn_indexes=cfg.global_attn_indexes, window_size=cfg.window_size,
                   use_rel_pos=True)
    ours = build_image_encoder("vit_b").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = ref(x)
        del ref  # its forward pass alone holds ~2.5 GB; keep the peak of the test low
        got = ours(x)
    assert got.shape == (1, 256, 64, 64)
    assert rel_err(got, expected) < 1e-4


@pytest.mark.parametrize("name", sorted(ENCODER_CONFIGS))
def test_state_dict_keys_and_shapes_match_official(name):
    cfg = ENCODER_CONFIGS[name]
    with torch.device("meta"):
        ref = OfficialEncoder(embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                              global_attn_indexes=cfg.global_attn_indexes, use_rel_pos=True,
                              window_size=cfg.window_size, out_chans=cfg.out_chans,
                              img_size=cfg.img_size)  # sam_tiny: ours, in the official layout
        ours = build_image_encoder(name)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    grid = cfg.img_size // 16
    assert expected["pos_embed"] == (1, grid, grid, cfg.embed_dim)
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in ref.parameters())
    if name == "vit_b":  # the image encoder's share of SAM ViT-B's 93,735,472 parameters
        assert count == 89_670_912


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 20), w=st.integers(1, 20), c=st.integers(1, 5),
       ws=st.integers(1, 8))
def test_window_partition_round_trip(b, h, w, c, ws):
    x = torch.randn(b, h, w, c)
    windows, pad_hw = window_partition(x, ws)
    ref_windows, ref_pad_hw = official_partition(x, ws)
    assert pad_hw == ref_pad_hw and torch.equal(windows, ref_windows)
    assert torch.equal(window_unpartition(windows, ws, pad_hw, (h, w)), x)
    # Padding with a value puts it at every padded token, and nowhere else.
    fill = torch.arange(c, dtype=x.dtype) + 100
    padded, _ = window_partition(x, ws, pad_value=fill)
    grid = window_unpartition(padded, ws, pad_hw, pad_hw)
    assert torch.equal(grid[:, :h, :w], x)
    assert (grid[:, h:] == fill).all() and (grid[:, :, w:] == fill).all()


def test_build_image_encoder_overrides_and_errors():
    enc = build_image_encoder("vit_b", img_size=128, depth=2)
    assert len(enc.blocks) == 2 and enc.pos_embed.shape == (1, 8, 8, 768)
    assert [b.window_size for b in enc.blocks] == [14, 14]
    assert [b.window_size for b in build_image_encoder("vit_b", depth=3).blocks] == [14, 14, 0]
    with pytest.raises(ValueError, match="vit_b"):
        build_image_encoder("vit_x")
    with pytest.raises(ValueError, match="128x128"):
        enc(torch.zeros(1, 3, 64, 64))
