import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.nn import PatchEmbed, WordTokenizer, patchify, unpatchify


@settings(max_examples=60, deadline=None)
@given(b=st.integers(1, 3), c=st.integers(1, 4), p=st.integers(1, 8),
       gh=st.integers(1, 6), gw=st.integers(1, 6))
def test_patchify_round_trip(b, c, p, gh, gw):
    x = torch.randn(b, c, gh * p, gw * p)
    tokens = patchify(x, p)
    assert tokens.shape == (b, gh * gw, p * p * c)
    assert torch.equal(unpatchify(tokens, p, (gh * p, gw * p), c), x)


def test_token_order_is_row_major_and_channel_first():
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    tokens = patchify(x, 2)  # grid 2 x 3
    assert tokens.shape == (1, 6, 8)
    # token 4 = grid row 1, column 1: rows 2-3, columns 2-3, channel 0 then channel 1
    expected = torch.cat([x[0, 0, 2:4, 2:4].reshape(-1), x[0, 1, 2:4, 2:4].reshape(-1)])
    assert torch.equal(tokens[0, 4], expected)


@pytest.mark.parametrize("shape", [(1, 3, 15, 16), (1, 3, 16, 17)])
def test_size_not_multiple_of_patch_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        patchify(torch.zeros(shape), 16)


def test_unpatchify_checks_shapes():
    with pytest.raises(ValueError, match="do not tile"):
        unpatchify(torch.zeros(1, 5, 12), 2, (4, 4), 3)


def test_patch_embed_is_x_times_u_e():
    embed = PatchEmbed(patch_size=4, in_chans=3, embed_dim=10)
    x = torch.randn(2, 3, 12, 8)
    e = embed(x)  # (B, N, D)
    by_hand = patchify(x, 4) @ embed.U_e + embed.proj.bias
    assert e.shape == (2, 6, 10)
    torch.testing.assert_close(e, by_hand, atol=1e-5, rtol=1e-5)
    assert embed.U_e.shape == (48, 10)


def test_patch_embed_grid_layout_for_sam():
    embed = PatchEmbed(patch_size=4, in_chans=3, embed_dim=10, flatten=False)
    assert embed(torch.randn(1, 3, 8, 12)).shape == (1, 2, 3, 10)


def test_patch_embed_loads_timm_weights():
    from timm.layers import PatchEmbed as TimmPatchEmbed

    ref = TimmPatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=24)
    ours = PatchEmbed(8, 3, 24)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), ref(x))


def test_word_tokens_of_the_slide():
    tok = WordTokenizer.fit(["Hello, I am olivier"])
    assert WordTokenizer.split("Hello, I am olivier") == ["Hello", "I", "am", "olivier"]
    one_hot = tok.one_hot("Hello, I am olivier")
    assert one_hot.shape == (4, 5)  # 4 words, vocabulary of 4 + <unk>
    assert torch.equal(one_hot.sum(1), torch.ones(4))
    assert one_hot.argmax(1).tolist() == [1, 2, 3, 4]
    assert tok.decode(tok.encode("am I olivier")) == ["am", "I", "olivier"]
    assert tok.encode("Hello stranger") == [1, 0]  # unseen word -> <unk>
