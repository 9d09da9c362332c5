"""Winograd's F(4 x 4, 3 x 3) convolution (attnvision.nn.winograd) against the direct one: its
matrices against the definition, every size and layout, band boundaries, when it is used, and
the VAE that uses it."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.diffusion.autoencoder_kl import AutoencoderKL, VAEConfig
from attnvision.nn import winograd


def test_one_tile_is_the_correlation_of_the_definition():
    # Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A is the 4 x 4 "valid" correlation of a 6 x 6 window d with g,
    # the sum the definition writes out: Y[i, j] = Σ_{u,v} d[i + u, j + v] g[u, v].
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    g = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    bt, gm, at = (torch.tensor(m, dtype=torch.float64)
                  for m in (winograd._BT, winograd._G, winograd._AT))
    y = at @ ((gm @ g @ gm.T) * (bt @ d @ bt.T)) @ at.T
    direct = torch.tensor([[sum(d[i + u, j + v] * g[u, v] for u in range(3) for v in range(3))
                            for j in range(4)] for i in range(4)], dtype=torch.float64)
    torch.testing.assert_close(y, direct, rtol=0, atol=1e-12)


def test_filter_transform_is_g_g_gt_for_every_channel_pair():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    u = winograd.filter_transform(w)
    assert u.shape == (36, 3, 5)
    gm = torch.tensor(winograd._G, dtype=torch.float64)
    for o in range(5):
        for c in range(3):
            torch.testing.assert_close(u[:, c, o].reshape(6, 6), gm @ w[o, c] @ gm.T)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), c_in=st.integers(1, 9), c_out=st.integers(1, 9),
       h=st.integers(1, 19), w=st.integers(1, 19), bias=st.booleans(),
       channels_last=st.booleans(), band_values=st.sampled_from([1, 40, 1 << 15]))
def test_equals_the_direct_convolution(n, c_in, c_out, h, w, bias, channels_last,
                                       band_values):
    # float64, so any misplaced value shows far above the rounding; band_values 1 makes
    # every band one tile row (the first, middle and last bands, a partial last one).
    gen = torch.Generator().manual_seed(n * 1000 + c_in * 100 + h * 10 + w)
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=torch.float64) * 2 + 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(c_out, generator=gen, dtype=torch.float64) if bias else None
    old = winograd.BAND_VALUES
    winograd.BAND_VALUES = band_values
    try:
        out = winograd.conv3x3(x, weight, b)
    finally:
        winograd.BAND_VALUES = old
    expected = F.conv2d(x, weight, b, padding=1)
    assert out.shape == expected.shape
    for layout in (torch.contiguous_format, torch.channels_last):  # the input's, as conv2d's
        assert out.is_contiguous(memory_format=layout) == expected.is_contiguous(
            memory_format=layout)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


def test_float32_error_is_a_few_times_the_direct_convolutions():
    # 256 input channels: the error of a wide layer, measured against float64.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 256, 20, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(64, 256, 3, 3, generator=gen) / 48
    exact = F.conv2d(x.double(), weight.double(), padding=1)
    direct = (F.conv2d(x, weight, padding=1).double() - exact).abs().max().item()
    ours = (winograd.conv3x3(x, weight).double() - exact).abs().max().item()
    assert ours < 10 * direct and ours < 2e-5 * exact.abs().max().item(), (ours, direct)


def conv(c_in: int = 128, c_out: int = 128, **kw) -> torch.nn.Conv2d:
    return torch.nn.Conv2d(c_in, c_out, 3, **{"padding": 1, **kw})


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_pays_only_for_plain_wide_float_convolutions_at_inference():
    x = torch.zeros(1, 128, 64, 64)
    with torch.no_grad():
        assert winograd.pays(x, conv())
        assert winograd.pays(x.double(), conv())
        assert not winograd.pays(x.bfloat16(), conv())  # its rounding would show: see module
        assert not winograd.pays(x, conv(stride=2))
        assert not winograd.pays(x, conv(dilation=2, padding=2))
        assert not winograd.pays(x, conv(groups=2))
        assert not winograd.pays(x, conv(padding_mode="reflect"))
        assert not winograd.pays(x, torch.nn.Conv2d(128, 128, 1))
        assert not winograd.pays(x, conv(128, 3))  # too few output channels to pay
        assert not winograd.pays(torch.zeros(1, 128, 32, 32), conv())  # too small a map
        assert winograd.pays(torch.zeros(4, 128, 24, 32), conv())  # not in a batch of 4
        assert not winograd.pays(torch.zeros(1, 48, 128, 128), conv(48, 48))
        assert winograd.pays(torch.zeros(1, 64, 128, 128), conv(64, 64))
        assert not winograd.pays(torch.zeros(1, 64, 128, 128), conv(64, 48))
        assert winograd.pays(torch.zeros(1, 96, 96, 128), conv(96, 96))
        traced, plain = [], conv()
        torch.jit.trace(lambda t: traced.append(winograd.pays(t, plain)) or t, x,
                        check_trace=False)
        assert traced == [False]  # an exported graph keeps the convolution node
    assert not winograd.pays(x, conv())  # training records the graph of F.conv2d


def test_vae_convolutions_take_it_at_inference_and_give_the_same_images(monkeypatch):
    cfg = VAEConfig(block_out_channels=(96, 128), layers_per_block=1, norm_num_groups=32,
                    latent_channels=4)
    torch.manual_seed(0)
    vae = AutoencoderKL(cfg).eval()
    z = torch.randn(1, 4, 48, 48)
    with torch.enable_grad():  # the direct convolutions
        expected = vae.decode(z).detach()
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        out = vae.decode(z)
    # The mid block's and up.1's two ResNet blocks each (128 channels at 48 x 48), up.1's
    # upsample conv, up.0's two blocks (96 channels at 96 x 96): 4 + 4 + 1 + 4 convs;
    # conv_in (4 channels in) and conv_out (3 out) stay direct.
    assert len(calls) == 13
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_the_inputs_dtype(dtype):
    x = torch.randn(1, 8, 9, 10, dtype=dtype)
    assert winograd.conv3x3(x, torch.randn(4, 8, 3, 3, dtype=dtype)).dtype == dtype
