"""The correlation volume: every feature of a track's patch against every feature of its
query's, per frame, whatever the layout the sampler leaves the patches in, and the same
volume when computed a few tracks at a time."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.cotracker import correlation as correlation_module
from attnvision.cotracker.correlation import correlation, track_patches


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 6), st.integers(1, 9),
       st.integers(1, 8), st.booleans(), st.integers(0, 2**31 - 1))
def test_the_volume_is_the_patches_dot_products_track_cell_first(b, t, n, p, c, permuted, seed):
    g = torch.Generator().manual_seed(seed)
    if permuted:  # as grid_sample leaves it: (B T, C, N, P) seen as (B, N, T, P, C)
        track = torch.randn(b * t, c, n, p, generator=g, dtype=torch.float64)
        track = track.reshape(b, t, c, n, p).permute(0, 3, 1, 4, 2)
    else:
        track = torch.randn(b, n, t, p, c, generator=g, dtype=torch.float64)
    query = torch.randn(b, n, p, c, generator=g, dtype=torch.float64)
    volume = correlation(track, query)
    assert volume.shape == (b, n, t, p * p)
    expected = torch.einsum("bntpc,bnqc->bntpq", track, query).reshape(b, n, t, p * p)
    torch.testing.assert_close(volume, expected)


def test_gradients_reach_both_patches():
    track = torch.randn(1, 4, 3, 9, 5, requires_grad=True)
    query = torch.randn(1, 4, 9, 5, requires_grad=True)
    correlation(track, query).square().sum().backward()
    # d/d track of sum (track . query)^2 is 2 (track . query) query, summed over query cells
    volume = torch.einsum("bntpc,bnqc->bntpq", track.detach(), query.detach())
    torch.testing.assert_close(track.grad, 2 * torch.einsum("bntpq,bnqc->bntpc", volume,
                                                            query.detach()))
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_inference_correlates_a_few_tracks_at_a_time_to_the_same_volume(monkeypatch):
    torch.manual_seed(0)
    fmaps = torch.randn(2, 3, 5, 9, 13, dtype=torch.float64)
    coords = torch.rand(2, 3, 11, 2, dtype=torch.float64) * torch.tensor([15.0, 11.0]) - 1
    query = torch.randn(2, 11, 9, 5, dtype=torch.float64)
    expected = torch.einsum("bntpc,bnqc->bntpq", track_patches(fmaps, coords, 1),
                            query).reshape(2, 11, 3, 81)
    monkeypatch.setattr(correlation_module, "PATCH_VALUES", 2 * 3 * 9 * 5 * 4)  # 4 tracks
    with torch.no_grad():
        volume = correlation_module.track_correlation(fmaps, coords, query, 1)
    torch.testing.assert_close(volume, expected)
    assert correlation_module.track_correlation(fmaps, coords, query, 1).shape == (2, 11, 3, 81)
