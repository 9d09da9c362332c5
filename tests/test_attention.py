import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.nn import MultiHeadAttention, SelfAttention, scaled_dot_product_attention
from attnvision.nn.attention import banded_attention


def copy_into_torch_mha(ours: MultiHeadAttention, ref: torch.nn.MultiheadAttention) -> None:
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                                ours.v_proj.weight]))
        else:
            ref.q_proj_weight.copy_(ours.q_proj.weight)
            ref.k_proj_weight.copy_(ours.k_proj.weight)
            ref.v_proj_weight.copy_(ours.v_proj.weight)
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)


def random_mask(nq, nk, gen):
    mask = torch.rand(nq, nk, generator=gen) > 0.4
    mask[:, 0] = True  # every query sees at least one key
    return mask


@pytest.mark.parametrize("use_mask", [False, True])
def test_self_attention_equals_torch(use_mask):
    gen = torch.Generator().manual_seed(3)
    ours = MultiHeadAttention(32, 4).eval()
    ref = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    copy_into_torch_mha(ours, ref)
    x = torch.randn(2, 7, 32, generator=gen)
    mask = random_mask(7, 7, gen) if use_mask else None
    out, attn = ours(x, mask=mask, return_attention=True)
    ref_out, ref_attn = ref(x, x, x, attn_mask=None if mask is None else ~mask,
                            need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attn, ref_attn, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours(x, mask=mask), ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_mask", [False, True])
def test_cross_attention_equals_torch(use_mask):
    gen = torch.Generator().manual_seed(4)
    ours = MultiHeadAttention(24, 3, kv_dim=40).eval()
    ref = torch.nn.MultiheadAttention(24, 3, kdim=40, vdim=40, batch_first=True).eval()
    copy_into_torch_mha(ours, ref)
    q = torch.randn(2, 5, 24, generator=gen)
    kv = torch.randn(2, 9, 40, generator=gen)
    mask = random_mask(5, 9, gen) if use_mask else None
    out = ours(q, kv, kv, mask=mask)
    ref_out, _ = ref(q, kv, kv, attn_mask=None if mask is None else ~mask)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 4), nq=st.integers(1, 20), nk=st.integers(1, 20),
       d=st.integers(1, 16), masked=st.booleans(), biased=st.booleans())
def test_sdpa_path_equals_explicit_path_and_rows_sum_to_one(b, h, nq, nk, d, masked, biased):
    gen = torch.Generator().manual_seed(b * 1000 + nq * 10 + nk)
    q, k = torch.randn(b, h, nq, d, generator=gen), torch.randn(b, h, nk, d, generator=gen)
    v = torch.randn(b, h, nk, d + 1, generator=gen)
    mask = random_mask(nq, nk, gen) if masked else None
    bias = torch.randn(b, 1, nq, nk, generator=gen) if biased else None
    fast = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias)
    slow, attn = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias,
                                              return_attention=True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(b, h, nq))
    if mask is not None:
        assert torch.all(attn[..., ~mask] == 0)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), nq=st.integers(1, 30), nk=st.integers(1, 30),
       d=st.integers(1, 12), dv=st.integers(1, 12), chunk=st.integers(1, 2000))
def test_banded_attention_is_the_formula_for_any_band(b, h, nq, nk, d, dv, chunk):
    """Bands of query rows, or of whole (batch, head) slices, whatever the chunk size; values
    of another width than the keys."""
    gen = torch.Generator().manual_seed(b * 1000 + nq * 10 + nk + chunk)
    q, k = torch.randn(b, h, nq, d, generator=gen), torch.randn(b, h, nk, d, generator=gen)
    v = torch.randn(b, h, nk, dv, generator=gen)
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1) @ v
    torch.testing.assert_close(banded_attention(q, k, v, chunk_elems=chunk), expected,
                               atol=1e-5, rtol=1e-4)
    # bf16 products, float32 softmax: within bf16's rounding of the float32 result
    low = banded_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), chunk_elems=chunk)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), expected, atol=0.05, rtol=0.05)


def test_explicit_path_is_the_formula():
    q, k, v = torch.randn(1, 4, 8), torch.randn(1, 6, 8), torch.randn(1, 6, 3)
    _, attn = scaled_dot_product_attention(q, k, v, return_attention=True)
    a = torch.exp(q @ k.transpose(1, 2) / math.sqrt(8))
    torch.testing.assert_close(attn, a / a.sum(-1, keepdim=True))


def test_bias_is_added_to_the_logits():
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 2)
    bias = torch.zeros(3, 5)
    bias[:, 2] = 100.0  # one key wins everywhere
    out = scaled_dot_product_attention(q, k, v, bias=bias)
    torch.testing.assert_close(out, v[:, :, 2:3].expand(1, 1, 3, 2), atol=1e-5, rtol=0)


def test_downsampled_attention_width():
    attn = MultiHeadAttention(256, 8, downsample_rate=2)
    assert attn.q_proj.weight.shape == (128, 256)
    assert attn.out_proj.weight.shape == (256, 128)
    out, maps = attn(torch.randn(2, 5, 256), torch.randn(2, 11, 256), torch.randn(2, 11, 256),
                     return_attention=True)
    assert out.shape == (2, 5, 256) and maps.shape == (2, 8, 5, 11)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="must divide"):
        MultiHeadAttention(30, 4)


def test_fused_self_attention_equals_separate_projections():
    fused = SelfAttention(32, 4).eval()
    sep = MultiHeadAttention(32, 4).eval()
    wq, wk, wv = fused.qkv.weight.chunk(3)
    bq, bk, bv = fused.qkv.bias.chunk(3)
    with torch.no_grad():
        for lin, w, b in ((sep.q_proj, wq, bq), (sep.k_proj, wk, bk), (sep.v_proj, wv, bv)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        sep.out_proj.load_state_dict(fused.proj.state_dict())
    x = torch.randn(3, 10, 32)
    torch.testing.assert_close(fused(x), sep(x), atol=1e-5, rtol=1e-5)
    _, a1 = fused(x, return_attention=True)
    _, a2 = sep(x, return_attention=True)
    torch.testing.assert_close(a1, a2, atol=1e-6, rtol=1e-5)


def test_fused_self_attention_matches_timm():
    from timm.models.vision_transformer import Attention

    ref = Attention(48, num_heads=6, qkv_bias=True).eval()
    ours = SelfAttention(48, 6).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 17, 48)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
