import argparse
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.diffusion.dit import (
    DIT_CONFIGS,
    DiT,
    DiTConfig,
    dit_config,
    dit_pos_embed,
    guided_output,
    timestep_embedding,
)
from attnvision.diffusion.dit_checkpoints import config_from_meta, load_dit, save_dit
from attnvision.errors import UserError
from attnvision.nn.positional import sincos_2d_encoding


def tiny(**overrides) -> DiTConfig:
    fields = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2,
                  num_heads=2, num_classes=10)
    return DiTConfig(**{**fields, **overrides})


def randomized(config: DiTConfig, seed: int = 0) -> DiT:
    """A DiT whose every parameter matters (the adaLN-Zero init zeroes the gates)."""
    model = DiT(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def inputs(config: DiTConfig, b: int = 3, h: int | None = None, w: int | None = None):
    gen = torch.Generator().manual_seed(1)
    h, w = h or config.input_size, w or config.input_size
    x = torch.randn(b, config.in_channels, h, w, generator=gen)
    t = torch.tensor([0.0, 500.0, 999.0, 17.5])[:b]
    y = torch.tensor([3, config.num_classes, 0, 1])[:b]  # the second is the null class
    return x, t, y


@settings(max_examples=25, deadline=None)
@given(patch=st.sampled_from([1, 2, 4]), heads=st.integers(1, 2), head_dim=st.sampled_from([4, 8]),
       depth=st.integers(1, 2), cin=st.integers(1, 4), learn_sigma=st.booleans(),
       gh=st.integers(1, 3), gw=st.integers(1, 3), b=st.integers(1, 2),
       dropout=st.sampled_from([0.0, 0.1]))
def test_shapes_across_configs(patch, heads, head_dim, depth, cin, learn_sigma, gh, gw, b,
                               dropout):
    cfg = DiTConfig(input_size=2 * patch, patch_size=patch, in_channels=cin,
                    hidden_size=heads * head_dim, depth=depth, num_heads=heads, num_classes=5,
                    class_dropout_prob=dropout, learn_sigma=learn_sigma, guided_channels=1)
    model = DiT(cfg).eval()
    x = torch.randn(b, cin, gh * patch, gw * patch)
    y = torch.full((b,), 5 if dropout else 4)
    with torch.no_grad():
        out, maps = model(x, torch.rand(b) * 1000, y, return_attention=True)
    assert out.shape == (b, cin * (2 if learn_sigma else 1), gh * patch, gw * patch)
    assert len(maps) == depth and maps[0].shape == (b, heads, gh * gw, gh * gw)
    assert model.y_embedder.embedding_table.num_embeddings == 5 + (dropout > 0)


def test_adaln_zero_init_is_identity_and_outputs_zero():
    model = DiT(tiny()).eval()
    x, t, y = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), torch.zeros(3, 8, 8, 8))
        z = torch.randn(3, 16, 32)
        c = torch.randn(3, 32)
        for block in model.blocks:  # every gate is 0: z + 0 * branch
            assert torch.equal(block(z, c), z)


def test_attention_maps_and_fast_path_agree():
    model = randomized(tiny())
    x, t, y = inputs(model.config)
    with torch.no_grad():
        fast = model(x, t, y)
        slow, maps = model(x, t, y, return_attention=True)
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=0)
    for attn in maps:
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))


def test_native_and_other_grids():
    model = randomized(tiny())
    # The native grid uses the stored table; others compute it (same function).
    torch.testing.assert_close(model.position_table(4, 4), dit_pos_embed(4, 4, 32, 4))
    assert model.position_table(6, 2).shape == (1, 12, 32)
    x, t, y = inputs(model.config, h=12, w=4)
    with torch.no_grad():
        assert model(x, t, y).shape == (3, 8, 12, 4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(1, 4, 7, 8), t[:1], y[:1])


def test_scalar_timestep_broadcasts():
    model = randomized(tiny())
    x, _, y = inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 250, y), model(x, torch.full((3,), 250), y))


def test_label_dropout_in_training_uses_the_null_class():
    model = randomized(tiny(class_dropout_prob=1.0))  # every label dropped
    x, t, y = inputs(model.config)
    with torch.no_grad():
        dropped = model.train()(x, t, y)
        null = model.eval()(x, t, torch.full_like(y, 10))
    torch.testing.assert_close(dropped, null)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_timestep_embedding_formula(shift):
    t = torch.tensor([0.0, 1.0, 17.5, 999.0])
    emb = timestep_embedding(t, 256, freq_shift=shift)
    assert emb.shape == (4, 256) and emb.dtype == torch.float32
    for i, ti in enumerate(t.tolist()):
        for k in (0, 1, 64, 127):
            w = math.exp(-math.log(10000) * k / (128 - shift))
            assert abs(emb[i, k].item() - math.cos(w * ti)) < 1e-6  # cosines first
            assert abs(emb[i, 128 + k].item() - math.sin(w * ti)) < 1e-6
    # Meta's frequencies are the course's w_k = 1 / 10000^(2k/D)
    course = t.double()[:, None] / 10000 ** (torch.arange(128).double() * 2 / 256)
    torch.testing.assert_close(timestep_embedding(t, 256)[:, :128].double(), course.cos(),
                               atol=1e-6, rtol=0)


def meta_pos_embed(dim: int, grid: int) -> np.ndarray:
    """Meta's (and MAE's) table, from its formula: half the width for the column (sines then
    cosines of w_k = 1 / 10000^(k / (D/4))), the other half for the row."""
    def one_axis(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    col, row = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    return np.concatenate([one_axis(dim // 2, col), one_axis(dim // 2, row)], axis=1)


def test_pos_embed_is_metas_table_and_the_course_code():
    model = DiT(tiny(hidden_size=64, num_heads=4))
    expected = torch.from_numpy(meta_pos_embed(64, 4)).float()[None]
    torch.testing.assert_close(model.pos_embed, expected, atol=1e-6, rtol=0)
    # The course's interleaved code, sines and cosines regrouped within each half.
    course = sincos_2d_encoding(4, 4, 64)
    for half in (slice(0, 32), slice(32, 64)):
        part = course[:, half]
        torch.testing.assert_close(model.pos_embed[0, :, half],
                                   torch.cat([part[:, 0::2], part[:, 1::2]], 1))
    assert "pos_embed" in model.state_dict()
    assert all(name != "pos_embed" for name, _ in model.named_parameters())  # never learned


def test_guided_output_equation():
    out = torch.randn(4, 8, 3, 3)
    cond, uncond = out[:2], out[2:]
    g = guided_output(out, 4.0, 3)
    assert g.shape == (2, 8, 3, 3)
    torch.testing.assert_close(g[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(g[:, 3:], cond[:, 3:])  # unguided channels: the conditional half's
    torch.testing.assert_close(guided_output(out, 1.0, 8), cond)
    torch.testing.assert_close(guided_output(out, 0.0, 8), uncond)
    with pytest.raises(ValueError, match="even batch"):
        guided_output(out[:3], 2.0, 3)


def test_paper_sizes_and_parameter_counts():
    assert len(DIT_CONFIGS) == 12
    expected_millions = {"DiT-S/2": 33, "DiT-B/2": 130, "DiT-L/2": 458, "DiT-XL/2": 675}
    for name, millions in expected_millions.items():
        with torch.device("meta"):
            model = DiT(DIT_CONFIGS[name])
        count = sum(p.numel() for p in model.parameters())  # the fixed pos_embed not counted
        assert abs(count / 1e6 - millions) < 0.6, (name, count)
    xl = DIT_CONFIGS["DiT-XL/2"]
    assert (xl.hidden_size, xl.depth, xl.num_heads, xl.out_channels) == (1152, 28, 16, 8)
    assert dit_config("DiT-XL/2", input_size=64).grid_size == 32
    with pytest.raises(UserError, match="unknown DiT model"):
        dit_config("DiT-XXL/2")


def test_config_is_read_back_from_metas_shapes():
    for name in ("DiT-XL/2", "DiT-B/4", "DiT-S/8"):
        with torch.device("meta"):
            sd = DiT(DIT_CONFIGS[name]).state_dict()
        assert config_from_meta(sd, "x.pt") == DIT_CONFIGS[name]


def test_save_load_round_trip(tmp_path):
    model = randomized(tiny(freq_shift=1.0, mlp_norm_eps=1e-5, guided_channels=4))
    save_dit(model, tmp_path / "dit.safetensors")
    loaded = load_dit(tmp_path / "dit.safetensors")
    assert loaded.config == model.config and not loaded.training
    x, t, y = inputs(model.config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), model(x, t, y))
        half = load_dit(tmp_path / "dit.safetensors", dtype=torch.bfloat16)
        assert half.x_embedder.proj.weight.dtype == torch.bfloat16
        torch.testing.assert_close(half(x.bfloat16(), t, y).float(), model(x, t, y),
                                   atol=0.1, rtol=0.1)


def test_metas_training_checkpoint_loads_its_ema(tmp_path):
    cfg = tiny(hidden_size=64, num_heads=1)
    ema, raw = randomized(cfg, seed=1), randomized(cfg, seed=2)
    torch.save({"model": raw.state_dict(), "ema": ema.state_dict(), "opt": {},
                "args": argparse.Namespace(model="DiT-XL/2")}, tmp_path / "0400000.pt")
    loaded = load_dit(tmp_path / "0400000.pt")
    assert loaded.config.num_heads == 1  # 64 wide, no paper size: heads of 64
    x, t, y = inputs(loaded.config)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), ema(x, t, y))


def one_line_error(path, match):
    with pytest.raises(UserError, match=match) as info:
        load_dit(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_one_line_errors(tmp_path):
    from safetensors.torch import save_file

    one_line_error(tmp_path / "missing.pt", "not found")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    one_line_error(tmp_path / "junk.pt", "corrupt")
    save_file({"encoder.conv_in.weight": torch.zeros(1)}, str(tmp_path / "vae.safetensors"))
    msg = one_line_error(tmp_path / "vae.safetensors", "looks like a VAE")
    assert "facebook/DiT-XL-2-256" in msg and "DiT-XL-2-256x256.pt" in msg
    torch.save({"cls_token": torch.zeros(1), "patch_embed.proj.weight": torch.zeros(1)},
               tmp_path / "vit.pth")
    one_line_error(tmp_path / "vit.pth", "looks like a ViT")
    torch.save({"image_encoder.neck.0.weight": torch.zeros(1)}, tmp_path / "sam.pth")
    one_line_error(tmp_path / "sam.pth", "SAM")
    (tmp_path / "empty").mkdir()
    one_line_error(tmp_path / "empty", "without config.json")
    sd = randomized(tiny()).state_dict()
    torch.save({k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}, tmp_path / "p.pt")
    one_line_error(tmp_path / "p.pt", "missing keys: blocks.1.mlp.fc2.bias")
    torch.save({**sd, "pos_embed": sd["pos_embed"] + 0.5}, tmp_path / "learned.pt")
    one_line_error(tmp_path / "learned.pt", "not DiT's fixed 2-D sin-cos")
