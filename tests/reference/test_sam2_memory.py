"""SAM 2's memory encoder and memory attention against the official modules, on the same
seeded random weights; and rotary position encoding against its equations."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.nn.rotary import apply_rotary, axial_rotary_angles
from attnvision.sam2.memory_attention import MemoryAttention
from attnvision.sam2.memory_encoder import MemoryEncoder

official_sam2 = pytest.importorskip("reference.official_sam2").official_sam2
from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis  # noqa: E402


@pytest.fixture(scope="module")
def official():
    model = official_sam2("sam2.1_hiera_tiny", seed=3)
    with torch.no_grad():  # layer scales of 1, not 1e-6: the fuser's blocks must count
        for block in model.memory_encoder.fuser.layers:
            block.gamma.fill_(1.0)
    return model


def test_memory_encoder_matches_the_official(official):
    ours = MemoryEncoder()
    ours.load_state_dict(official.memory_encoder.state_dict(), strict=True)
    ours.eval()
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 256, 16, 16, generator=gen)
    logits = torch.randn(2, 1, 256, 256, generator=gen) * 4
    with torch.no_grad():
        theirs = official.memory_encoder(features, logits)
        memory, pos = ours(features, logits)
    torch.testing.assert_close(memory, theirs["vision_features"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pos, theirs["vision_pos_enc"][0], atol=1e-5, rtol=0)
    assert memory.shape == (2, 64, 16, 16)


@pytest.mark.parametrize("pointers", [0, 8])
def test_memory_attention_matches_the_official(official, pointers):
    ours = MemoryAttention()
    ours.load_state_dict(official.memory_attention.state_dict(), strict=True)
    ours.eval()
    gen = torch.Generator().manual_seed(1)
    n, frames = 16 * 16, 3
    x, x_pos = torch.randn(2, n, 256, generator=gen), torch.randn(2, n, 256, generator=gen)
    memory = torch.randn(2, frames * n + pointers, 64, generator=gen)
    memory_pos = torch.randn(2, frames * n + pointers, 64, generator=gen)
    with torch.no_grad():  # the official module takes (N, B, C) sequences
        theirs = official.memory_attention(x.transpose(0, 1), memory.transpose(0, 1),
                                           x_pos.transpose(0, 1), memory_pos.transpose(0, 1),
                                           num_obj_ptr_tokens=pointers).transpose(0, 1)
        out = ours(x, x_pos, memory, memory_pos, num_obj_ptr_tokens=pointers)
    torch.testing.assert_close(out, theirs, atol=1e-4, rtol=1e-4)


def test_rotary_turns_pairs_as_the_official_complex_product():
    angles = axial_rotary_angles(32, 5, 7)
    cis = compute_axial_cis(32, end_x=7, end_y=5)  # complex e^(i angle), x first
    torch.testing.assert_close(torch.polar(torch.ones_like(angles), angles), cis)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 35, 32, generator=gen), torch.randn(2, 1, 70, 32, generator=gen)
    theirs_q, theirs_k = apply_rotary_enc(q, k, cis, repeat_freqs_k=True)
    torch.testing.assert_close(apply_rotary(q, angles), theirs_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(apply_rotary(k, angles.repeat(2, 1)), theirs_k, atol=1e-6,
                               rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), quarter=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_rotary_keeps_lengths_and_sees_only_relative_positions(h, w, quarter, seed):
    d = 4 * quarter
    gen = torch.Generator().manual_seed(seed)
    angles = axial_rotary_angles(d, h, w)
    # Row-major: token t sits at column t % w, row t // w; column angles come first.
    t = torch.arange(h * w)
    freqs = 1.0 / 10000 ** (torch.arange(0, d, 4).float() / d)
    torch.testing.assert_close(angles[:, : d // 4], (t % w).float()[:, None] * freqs)
    torch.testing.assert_close(angles[:, d // 4:], (t // w).float()[:, None] * freqs)
    q, k = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    turned_q = apply_rotary(q.expand(h * w, d), angles)
    turned_k = apply_rotary(k.expand(h * w, d), angles)
    torch.testing.assert_close(turned_q.norm(dim=-1), q.norm().expand(h * w), rtol=1e-5,
                               atol=1e-5)
    # <R(a) q, R(b) k> depends on a - b only: every token against itself gives q . k.
    torch.testing.assert_close((turned_q * turned_k).sum(-1), (q @ k).expand(h * w),
                               rtol=1e-4, atol=1e-4)
    assert math.isclose(float(angles[0].abs().sum()), 0.0)
