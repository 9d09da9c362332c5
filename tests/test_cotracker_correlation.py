"""The correlation volume: every feature of a track's patch against every feature of its
query's, per frame, whatever the layout the sampler leaves the patches in."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.cotracker.correlation import correlation


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 6), st.integers(1, 9),
       st.integers(1, 8), st.booleans(), st.integers(0, 2**31 - 1))
def test_the_volume_is_the_patches_dot_products_track_cell_first(b, t, n, p, c, permuted, seed):
    g = torch.Generator().manual_seed(seed)
    if permuted:  # as track_patches gives it: the sampler's (B T, C, N, P) seen as (B, T, N, P, C)
        track = torch.randn(b * t, c, n, p, generator=g, dtype=torch.float64)
        track = track.reshape(b, t, c, n, p).permute(0, 1, 3, 4, 2)
    else:
        track = torch.randn(b, t, n, p, c, generator=g, dtype=torch.float64)
    query = torch.randn(b, n, p, c, generator=g, dtype=torch.float64)
    volume = correlation(track, query)
    assert volume.shape == (b, t, n, p * p)
    expected = torch.einsum("btnpc,bnqc->btnpq", track, query).reshape(b, t, n, p * p)
    torch.testing.assert_close(volume, expected)


def test_gradients_reach_both_patches():
    track = torch.randn(1, 3, 4, 9, 5, requires_grad=True)
    query = torch.randn(1, 4, 9, 5, requires_grad=True)
    correlation(track, query).square().sum().backward()
    # d/d track of sum (track . query)^2 is 2 (track . query) query, summed over query cells
    volume = torch.einsum("btnpc,bnqc->btnpq", track.detach(), query.detach())
    torch.testing.assert_close(track.grad, 2 * torch.einsum("btnpq,bnqc->btnpc", volume,
                                                            query.detach()))
    assert query.grad is not None and query.grad.abs().sum() > 0
