import pytest
import torch
import torch.nn.functional as F

from attnvision.nn import MLP, Encoder, EncoderBlock


def by_hand(block: EncoderBlock, z: torch.Tensor) -> torch.Tensor:
    """The slide's two equations, written out with nothing from the library but the weights."""
    def ln(x, norm):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def mha(x):
        d = x.shape[-1]
        h = block.attn.num_heads
        qkv = x @ block.attn.qkv.weight.T + block.attn.qkv.bias
        q, k, v = qkv.split(d, dim=-1)
        heads = []
        for i in range(h):
            s = slice(i * d // h, (i + 1) * d // h)
            a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / (d // h) ** 0.5, dim=-1)
            heads.append(a @ v[..., s])
        return torch.cat(heads, -1) @ block.attn.proj.weight.T + block.attn.proj.bias

    def mlp(x):
        hidden = torch.clamp(x @ block.mlp.fc1.weight.T + block.mlp.fc1.bias, min=0)  # max(0, .)
        return hidden @ block.mlp.fc2.weight.T + block.mlp.fc2.bias

    z1 = mha(ln(z, block.norm1)) + z  # z'_l = MHA(LN(z_{l-1})) + z_{l-1}
    return mlp(ln(z1, block.norm2)) + z1  # z_l = MLP(LN(z'_l)) + z'_l


def randomize(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


def test_block_is_the_two_slide_equations():
    block = EncoderBlock(24, num_heads=3, activation="relu").eval()
    randomize(block)
    z = torch.randn(2, 9, 24)
    torch.testing.assert_close(block(z), by_hand(block, z), atol=1e-5, rtol=1e-5)


def test_mlp_default_is_relu_and_gelu_selectable():
    mlp = MLP(8, 16)
    x = torch.randn(4, 8)
    torch.testing.assert_close(mlp(x), F.relu(mlp.fc1(x)) @ mlp.fc2.weight.T + mlp.fc2.bias)
    g = MLP(8, 16, activation="gelu")
    torch.testing.assert_close(g(x), g.fc2(F.gelu(g.fc1(x))))
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(8, 16, activation="swish")


def test_encoder_returns_every_blocks_attention():
    enc = Encoder(depth=3, dim=16, num_heads=2).eval()
    z = torch.randn(2, 5, 16)
    out, maps = enc(z, return_attention=True)
    assert len(maps) == 3 and all(m.shape == (2, 2, 5, 5) for m in maps)
    torch.testing.assert_close(out, enc(z))
    expected = z
    for block in enc.blocks:
        expected = by_hand(block, expected)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_block_matches_timm_vit_block():
    from timm.models.vision_transformer import Block

    ref = Block(32, num_heads=4, mlp_ratio=4.0, qkv_bias=True).eval()
    ours = EncoderBlock(32, 4, activation="gelu", norm_eps=1e-5).eval()
    randomize(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    z = torch.randn(2, 10, 32)
    torch.testing.assert_close(ours(z), ref(z), atol=1e-5, rtol=1e-5)


def test_key_mask_hides_padding_tokens():
    block = EncoderBlock(16, 2).eval()
    z = torch.randn(1, 6, 16)
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[:, 4:] = False  # tokens 4 and 5 are padding
    out = block(z, mask=mask)
    changed = z.clone()
    changed[:, 4:] = torch.randn(1, 2, 16)
    torch.testing.assert_close(block(changed, mask=mask)[:, :4], out[:, :4])


def test_gelu_tanh_is_the_tanh_approximation():
    mlp = MLP(8, 16, activation="gelu_tanh")
    z = torch.randn(3, 8) * 3
    h = z @ mlp.fc1.weight.T + mlp.fc1.bias
    act = 0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
    torch.testing.assert_close(mlp(z), act @ mlp.fc2.weight.T + mlp.fc2.bias)
    assert not torch.allclose(mlp.act(h), F.gelu(h))  # not the exact (erf) GELU
