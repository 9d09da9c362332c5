"""The decoder's layers band by band (attnvision.diffusion.row_bands) against the plain layers:
every band height, odd sizes, both memory layouts, bf16, and the whole decode; its memory is
measured by benchmarks/diffusion_speed.py."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.diffusion import row_bands
from attnvision.diffusion.autoencoder_kl import (
    AutoencoderKL,
    Conv2d,
    ResnetBlock,
    Upsample,
    VAEConfig,
)


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, GroupNorm's scale and shift too (init makes them 1 and 0)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if p.ndim == 1 else 0.0) * 0.5)
    return module.eval()


def inputs(b: int, c: int, h: int, w: int, channels_last: bool, seed: int = 1,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # An offset mean, as activations have: GroupNorm must not lose digits to it.
    x = torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x = x * 2 + 3
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# The property tests run in float64: a group of 2 values (1 x 1 maps) is so ill-conditioned
# that float32's rounding, different band by band, shows in the normalised values; in
# float64 the band order's rounding is far below any tolerance, so a wrong row would show.
F64 = dict(rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(c_in=st.sampled_from([4, 8]), c_out=st.sampled_from([4, 8]), h=st.integers(1, 11),
       w=st.integers(1, 7), rows=st.integers(1, 12), b=st.integers(1, 2),
       channels_last=st.booleans())
def test_resnet_block_by_bands_is_the_block(c_in, c_out, h, w, rows, b, channels_last):
    block = randomised(ResnetBlock(c_in, c_out, groups=2)).double()
    x = inputs(b, c_in, h, w, channels_last, dtype=torch.float64)
    with torch.no_grad():
        expected = block(x)
        got = row_bands.resnet_block(block, x, rows)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **F64)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 6), rows=st.integers(1, 20),
       channels_last=st.booleans())
def test_upsample_by_bands_is_the_upsampler(h, w, rows, channels_last):
    up = randomised(Upsample(6)).double()
    x = inputs(2, 6, h, w, channels_last, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(row_bands.upsample(up, x, rows), up(x), **F64)


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 10), w=st.integers(1, 6), rows=st.integers(1, 11))
def test_output_layers_by_bands(h, w, rows):
    norm = randomised(torch.nn.GroupNorm(4, 8, eps=1e-6)).double()
    conv = randomised(Conv2d(8, 3, 3, padding=1)).double()
    x = inputs(1, 8, h, w, channels_last=True, dtype=torch.float64)
    with torch.no_grad():
        expected = conv(F.silu(norm(x)))
        torch.testing.assert_close(row_bands.norm_silu_conv(norm, conv, x, rows), expected,
                                   **F64)


def test_group_statistics_are_group_norms():
    """x · scale + shift is GroupNorm, without and with its affine part."""
    x = inputs(2, 12, 9, 5, channels_last=True)
    for affine in (False, True):
        norm = torch.nn.GroupNorm(3, 12, eps=1e-6, affine=affine)
        if affine:
            randomised(norm)
        scale, shift = row_bands.norm_scale_shift(x, norm, rows=2)
        torch.testing.assert_close(x * scale + shift, norm(x), rtol=1e-5, atol=1e-5)


def test_bf16_by_bands_stays_within_bf16_rounding():
    block = randomised(ResnetBlock(8, 4, groups=2)).to(torch.bfloat16)
    x = inputs(1, 8, 10, 6, channels_last=True).to(torch.bfloat16)
    with torch.no_grad():
        expected = block.float()(x.float())
        block.to(torch.bfloat16)
        got = row_bands.resnet_block(block, x, rows=3)
    assert got.dtype == torch.bfloat16
    # bf16 keeps 8 bits: both paths are within a few of its steps of the float32 result.
    assert (got.float() - expected).abs().max() <= 0.05 * expected.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_by_bands_is_the_plain_decode(dtype):
    """Every decoder layer by bands of 2 rows against the plain layers, one whole decode."""
    vae = randomised(AutoencoderKL(VAEConfig(block_out_channels=(8, 16, 16),
                                             layers_per_block=1, latent_channels=4,
                                             norm_num_groups=4)))
    vae.to(dtype)
    z = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(3)).to(dtype)
    with torch.no_grad():
        vae.decoder.bands_above = 10**12
        expected = vae.decode(z).float()
        vae.decoder.bands_above = 0
        original = row_bands.BAND_ELEMENTS
        try:
            row_bands.BAND_ELEMENTS = 1  # two rows a band everywhere
            got = vae.decode(z).float()
        finally:
            row_bands.BAND_ELEMENTS = original
    scale = expected.abs().max()
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert (got - expected).abs().max() <= tol * scale


def test_large_maps_use_bands_only_at_inference(monkeypatch):
    """The decision: inference on maps of more than ``bands_above`` values; training never
    (autograd needs the plain graph), so a decode with gradients takes the plain blocks."""
    vae = AutoencoderKL(VAEConfig(block_out_channels=(8, 8), layers_per_block=1,
                                  latent_channels=4, norm_num_groups=4))
    calls = []
    monkeypatch.setattr(row_bands, "resnet_block",
                        lambda block, x: calls.append(x.shape) or block(x))
    vae.decoder.bands_above = 0
    z = torch.randn(1, 4, 6, 6)
    vae.decode(z).sum().backward()
    assert not calls and vae.decoder.conv_in.weight.grad is not None
    with torch.no_grad():
        vae.decode(z)
    assert calls  # every block, as bands_above is 0
    calls.clear()
    vae.decoder.bands_above = 10**12
    with torch.no_grad():
        vae.decode(z)
    assert not calls

