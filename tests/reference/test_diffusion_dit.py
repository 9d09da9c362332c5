"""Parity with diffusers' DiTTransformer2DModel on identical (seeded random) weights, loaded
from its own folder and from the same weights written in Meta's format."""

import argparse

import pytest
import torch

from attnvision.diffusion.dit_checkpoints import load_dit
from attnvision.errors import UserError

diffusers = pytest.importorskip("diffusers")
from diffusers.models.embeddings import get_2d_sincos_pos_embed  # noqa: E402

TOL = 1e-4


def randomized_diffusers(patch_size: int = 2, out_channels: int = 8, heads: int = 2,
                         head_dim: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
        out_channels=out_channels, num_layers=2, sample_size=8, patch_size=patch_size,
        num_embeds_ada_norm=10).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # diffusers' init zeroes the adaLN: make every weight matter
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        # A DiT has one time and class embedder; diffusers keeps a copy per block.
        shared = model.transformer_blocks[0].norm1.emb.state_dict()
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(shared)
    return model


def inputs(b: int = 4, side: int = 8):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(b, 4, side, side, generator=gen)
    t = torch.tensor([0, 1, 500, 999])[:b]
    y = torch.tensor([3, 10, 0, 10])[:b]  # 10: the null class
    return x, t, y


def max_diff(ref, ours, x, t, y) -> float:
    with torch.no_grad():
        expected = ref(x, timestep=t, class_labels=y).sample
        got = ours(x, t, y)
    assert got.shape == expected.shape
    return (got - expected).abs().max().item()


@pytest.mark.parametrize(("patch_size", "out_channels"), [(2, 8), (4, 4)])
def test_diffusers_folder_matches(tmp_path, patch_size, out_channels):
    ref = randomized_diffusers(patch_size, out_channels)
    ref.save_pretrained(tmp_path)
    ours = load_dit(tmp_path)
    c = ours.config
    assert (c.freq_shift, c.mlp_norm_eps, c.guided_channels) == (1.0, 1e-5, 4)
    assert c.learn_sigma == (out_channels == 8) and c.num_classes == 10
    x, t, y = inputs()
    assert max_diff(ref, ours, x, t, y) <= TOL
    with torch.no_grad():  # the explicit attention path too
        slow, maps = ours(x, t, y, return_attention=True)
        assert (slow - ref(x, timestep=t, class_labels=y).sample).abs().max() <= TOL
    assert len(maps) == 2


def test_other_latent_size_spreads_positions_like_diffusers(tmp_path):
    ref = randomized_diffusers()
    ref.save_pretrained(tmp_path)
    x, t, y = inputs(side=12)  # a 6 x 6 grid on a model made for 4 x 4
    assert max_diff(ref, load_dit(tmp_path), x, t, y) <= TOL


def test_pipeline_folder_bin_file_and_weights_path(tmp_path):
    ref = randomized_diffusers()
    ref.save_pretrained(tmp_path / "pipe" / "transformer", safe_serialization=False)
    x, t, y = inputs()
    assert max_diff(ref, load_dit(tmp_path / "pipe"), x, t, y) <= TOL
    weights = tmp_path / "pipe" / "transformer" / "diffusion_pytorch_model.bin"
    assert max_diff(ref, load_dit(weights), x, t, y) <= TOL


def test_differing_embedder_copies_are_refused(tmp_path):
    ref = randomized_diffusers()
    with torch.no_grad():
        ref.transformer_blocks[1].norm1.emb.timestep_embedder.linear_1.weight.add_(0.01)
    ref.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="block 1's copy of the time and class embedders") as e:
        load_dit(tmp_path)
    assert "\n" not in str(e.value)


def to_meta(model) -> dict[str, torch.Tensor]:
    """diffusers' DiT state dict with the names of Meta's models.py, written from its layers."""
    sd, out = model.state_dict(), {}
    emb = "transformer_blocks.0.norm1.emb."
    for kind in ("weight", "bias"):
        out[f"x_embedder.proj.{kind}"] = sd[f"pos_embed.proj.{kind}"]
        out[f"t_embedder.mlp.0.{kind}"] = sd[emb + f"timestep_embedder.linear_1.{kind}"]
        out[f"t_embedder.mlp.2.{kind}"] = sd[emb + f"timestep_embedder.linear_2.{kind}"]
        out[f"final_layer.adaLN_modulation.1.{kind}"] = sd[f"proj_out_1.{kind}"]
        out[f"final_layer.linear.{kind}"] = sd[f"proj_out_2.{kind}"]
        for i in range(len(model.transformer_blocks)):
            d, m = f"transformer_blocks.{i}.", f"blocks.{i}."
            out[m + f"attn.qkv.{kind}"] = torch.cat(
                [sd[d + f"attn1.to_{n}.{kind}"] for n in ("q", "k", "v")])
            out[m + f"attn.proj.{kind}"] = sd[d + f"attn1.to_out.0.{kind}"]
            out[m + f"mlp.fc1.{kind}"] = sd[d + f"ff.net.0.proj.{kind}"]
            out[m + f"mlp.fc2.{kind}"] = sd[d + f"ff.net.2.{kind}"]
            out[m + f"adaLN_modulation.1.{kind}"] = sd[d + f"norm1.linear.{kind}"]
    out["y_embedder.embedding_table.weight"] = sd[emb + "class_embedder.embedding_table.weight"]
    grid = model.config.sample_size // model.config.patch_size
    out["pos_embed"] = get_2d_sincos_pos_embed(model.inner_dim, grid, base_size=grid)[None]
    return out


def as_meta(model):
    """The diffusers model with Meta's constants: frequencies w_k = 10000^(-k/128), MLP norm eps
    1e-6 (diffusers' BasicTransformerBlock calls the MLP's norm ``norm3``; ``norm2`` is None)."""
    for block in model.transformer_blocks:
        assert block.norm2 is None
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6
    return model


@pytest.mark.parametrize("wrapped", [False, True])
def test_meta_pt_file_matches(tmp_path, wrapped):
    # 2 heads of 64: a width outside the paper's sizes gets heads 64 wide from the shapes.
    ref = randomized_diffusers(heads=2, head_dim=64)
    sd = to_meta(ref)
    if wrapped:  # a training checkpoint of Meta's train.py: the EMA is the one to sample with
        junk = {k: torch.zeros_like(v) for k, v in sd.items()}
        sd = {"model": junk, "ema": sd, "opt": {}, "args": argparse.Namespace(model="DiT-XL/2")}
    torch.save(sd, tmp_path / "DiT-tiny.pt")
    ours = load_dit(tmp_path / "DiT-tiny.pt")
    c = ours.config
    assert (c.freq_shift, c.mlp_norm_eps, c.guided_channels, c.num_heads) == (0.0, 1e-6, 3, 2)
    x, t, y = inputs()
    with torch.no_grad():  # the constants matter: diffusers' own differ
        assert max_diff(ref, ours, x, t, y) > 1e-3
    assert max_diff(as_meta(ref), ours, x, t, y) <= TOL
