"""The CNN runs channels-last; its instance norms keep that layout at float32 precision."""

import pytest
import torch
import torch.nn.functional as F

from attnvision.cotracker import encoder as encoder_module
from attnvision.cotracker.encoder import FeatureEncoder, InstanceNorm2d


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("block_rows", [None, 1000])
def test_instance_norm_keeps_the_layout_and_float32_precision(inplace, grad, block_rows,
                                                              monkeypatch):
    # Conv outputs sit on an offset: a one-pass float32 variance loses digits there (the
    # channels-last group_norm kernel is 1e-3 off on maps like this one).
    if block_rows:  # the in-place norm in 13 blocks of rows, the last one short
        monkeypatch.setattr(encoder_module, "NORM_BLOCK", 16 * block_rows)
    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 16, 96, 128) * 2 + 5) + 5
    expected = F.instance_norm(x.double())
    with torch.set_grad_enabled(grad):
        y = InstanceNorm2d(16, inplace=inplace)(_channels_last(x))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert (y.double() - expected).abs().max() < 1e-5
    # A contiguous input goes the stock way and stays contiguous.
    assert InstanceNorm2d(16)(x.clone()).is_contiguous()


def test_inplace_norm_overwrites_only_at_inference():
    x = _channels_last(torch.randn(1, 4, 8, 8) + 3)
    before = x.clone()
    with torch.enable_grad():
        InstanceNorm2d(4, inplace=True)(x)
    assert torch.equal(x, before)
    with torch.no_grad():
        y = InstanceNorm2d(4, inplace=True)(x)
    assert y.data_ptr() == x.data_ptr()


def test_features_are_channels_last_and_float32_rounding_of_float64():
    torch.manual_seed(0)
    encoder = FeatureEncoder(32, 4).eval()
    frames = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        fast = encoder(frames)
        # The same network in float64: float32 rounding, nothing more.
        slow = encoder.double()(frames.double())
    assert fast.shape == (2, 32, 16, 24)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    assert (fast.double() - slow).abs().max() < 1e-4 * slow.abs().max()


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("grad", [False, True])
def test_norm_with_relu_is_relu_of_the_norm(layout, grad, monkeypatch):
    monkeypatch.setattr(encoder_module, "NORM_BLOCK", 16 * 100)  # several blocks of rows
    torch.manual_seed(1)
    x = torch.randn(2, 16, 24, 40) + 0.3
    if layout == "channels_last":
        x = _channels_last(x)
    norm = InstanceNorm2d(16, inplace=True)
    with torch.set_grad_enabled(grad):
        expected = torch.relu(norm(x.clone()))
        fused = norm(x.clone(), relu=True)
    assert torch.equal(fused, expected)
    assert (fused == 0).float().mean() > 0.3  # the ReLU did cut
