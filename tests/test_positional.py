import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.nn import (
    PositionEmbeddingRandom,
    position_similarity,
    sincos_2d_encoding,
    sinusoidal_encoding,
    sinusoidal_frequencies,
)


def closed_form(t: int, i: int, dim: int) -> float:
    k = i // 2
    omega = 1.0 / 10000 ** (2 * k / dim)
    return math.sin(omega * t) if i % 2 == 0 else math.cos(omega * t)


def test_values_match_the_closed_form_at_random_positions():
    gen = torch.Generator().manual_seed(1)
    for dim in (2, 16, 128, 512):
        pe = sinusoidal_encoding(1000, dim)
        ts = torch.randint(0, 1000, (200,), generator=gen)
        idx = torch.randint(0, dim, (200,), generator=gen)
        for t, i in zip(ts.tolist(), idx.tolist(), strict=True):
            assert abs(pe[t, i].item() - closed_form(t, i, dim)) < 1e-6


def test_first_dimensions_are_sin_and_cos_of_t():
    pe = sinusoidal_encoding(50, 128)
    t = torch.arange(50, dtype=torch.float64)
    torch.testing.assert_close(pe[:, 0].double(), t.sin(), atol=1e-6, rtol=0)
    torch.testing.assert_close(pe[:, 1].double(), t.cos(), atol=1e-6, rtol=0)
    assert pe.shape == (50, 128) and pe.dtype == torch.float32


def test_frequencies_follow_omega_k():
    w = sinusoidal_frequencies(128)
    assert w.shape == (64,)
    assert w[0] == 1.0
    assert math.isclose(w[-1].item(), 1 / 10000 ** (126 / 128), rel_tol=1e-12)
    assert torch.all(w[1:] < w[:-1])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 300), half=st.integers(1, 128))
def test_rows_unique_and_bounded(n, half):
    dim = 2 * half
    pe = sinusoidal_encoding(n, dim)
    assert pe.abs().max() <= 1.0
    dist = torch.cdist(pe.double(), pe.double())
    dist.fill_diagonal_(float("inf"))
    assert dist.min() > 1e-3  # every position has its own code


def test_similarity_peaks_on_the_diagonal():
    pe = sinusoidal_encoding(50, 128)
    k = position_similarity(pe)
    assert k.shape == (50, 50)
    torch.testing.assert_close(k, k.T)
    torch.testing.assert_close(k.diagonal(), torch.full((50,), 64.0))  # |p_t|^2 = D/2
    off = k - torch.diag(torch.full((50,), float("inf")))
    assert torch.all(k.diagonal() > off.max(dim=1).values)
    # it decays with distance near the diagonal
    assert k[25, 25] > k[25, 26] > k[25, 28] > k[25, 35]


def test_odd_dimension_is_refused():
    import pytest

    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(10, 7)


def test_sincos_2d_splits_columns_and_rows():
    pe = sincos_2d_encoding(3, 5, 32)
    assert pe.shape == (15, 32)
    col = sinusoidal_encoding(5, 16)
    row = sinusoidal_encoding(3, 16)
    for n in range(15):
        r, c = divmod(n, 5)
        torch.testing.assert_close(pe[n, :16], col[c])
        torch.testing.assert_close(pe[n, 16:], row[r])


def test_random_fourier_encoding_formula():
    pe = PositionEmbeddingRandom(num_pos_feats=8, scale=2.0)
    g = pe.positional_encoding_gaussian_matrix
    assert g.shape == (2, 8)
    grid = pe((4, 6))
    assert grid.shape == (16, 4, 6)
    # cell (row 1, col 2): centre x = 2.5/6, y = 1.5/4
    c = torch.tensor([2.5 / 6, 1.5 / 4]) * 2 - 1
    angle = 2 * math.pi * (c @ g)
    torch.testing.assert_close(grid[:, 1, 2], torch.cat([angle.sin(), angle.cos()]))
    pts = pe.forward_with_coords(torch.tensor([[[15.0, 6.0]]]), image_size=(16, 36))
    torch.testing.assert_close(pts[0, 0], grid[:, 1, 2], atol=1e-5, rtol=0)


def test_random_fourier_matches_segment_anything():
    from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom as Ref

    ref = Ref(num_pos_feats=64)
    ours = PositionEmbeddingRandom(num_pos_feats=64)
    ours.load_state_dict(ref.state_dict(), strict=True)
    torch.testing.assert_close(ours((64, 64)), ref((64, 64)), atol=0, rtol=0)
    coords = torch.rand(2, 5, 2) * 1024
    torch.testing.assert_close(ours.forward_with_coords(coords, (1024, 768)),
                               ref.forward_with_coords(coords, (1024, 768)))


def test_layouts_reorder_the_same_numbers():
    inter = sinusoidal_encoding(40, 32)
    sin, cos = inter[:, 0::2], inter[:, 1::2]  # (T, D/2) each
    assert torch.equal(sinusoidal_encoding(40, 32, layout="sin_cos"), torch.cat([sin, cos], 1))
    assert torch.equal(sinusoidal_encoding(40, 32, layout="cos_sin"), torch.cat([cos, sin], 1))
    import pytest

    with pytest.raises(ValueError, match="layout"):
        sinusoidal_encoding(4, 8, layout="sin-cos")


def test_frequency_shift_is_diffusers_formula():
    assert torch.equal(sinusoidal_frequencies(128, freq_shift=0.0), sinusoidal_frequencies(128))
    w = sinusoidal_frequencies(256, freq_shift=1.0)
    k = torch.arange(128, dtype=torch.float64)
    torch.testing.assert_close(w, torch.exp(-math.log(10000) * k / (128 - 1)), rtol=1e-12, atol=0)
    assert math.isclose(w[-1].item(), 1e-4, rel_tol=1e-12)  # shift 1: the last is exactly 1/10000
    t = torch.tensor([0.0, 3.5, 999.0])
    pe = sinusoidal_encoding(3, 256, positions=t, freq_shift=1.0, layout="cos_sin")
    angles = t.double()[:, None] * w[None]
    torch.testing.assert_close(pe.double(), torch.cat([angles.cos(), angles.sin()], 1),
                               atol=1e-6, rtol=0)


def test_sincos_2d_spacing_and_layout():
    pe = sincos_2d_encoding(3, 5, 32, layout="sin_cos", spacing=(0.5, 2.0))
    col = sinusoidal_encoding(5, 16, positions=torch.arange(5) * 2.0, layout="sin_cos")
    row = sinusoidal_encoding(3, 16, positions=torch.arange(3) * 0.5, layout="sin_cos")
    for n in range(15):
        r, c = divmod(n, 5)
        torch.testing.assert_close(pe[n], torch.cat([col[c], row[r]]))
