"""Parity with timm on identical (seeded random) weights: same keys, same logits."""

import numpy as np
import pytest
import timm
import torch

from attnvision.vit import create_model, load_checkpoint


def randomized_timm(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # break the symmetric init so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "vit_base_patch16_224"])
def test_logits_match_timm(name):
    ref = randomized_timm(name)
    ours = create_model(name).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
        got = ours(x)
        _, maps = ours(x, return_attention=True)
    assert (got - expected).abs().max().item() < 1e-4
    assert len(maps) == ours.config.depth and maps[0].shape == (2, ours.config.num_heads, 197, 197)


def test_mean_pooling_matches_timm():
    ref = randomized_timm("vit_tiny_patch16_224", global_pool="avg", class_token=False,
                          img_size=64, num_classes=7)
    ours = create_model("vit_tiny", img_size=64, num_classes=7, class_token=False,
                        pool="mean").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_other_input_size_resamples_positions_like_timm():
    ref = randomized_timm("vit_tiny_patch16_224", dynamic_img_size=True)
    ours = create_model("vit_tiny").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 160, 288)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


def test_timm_files_load_with_inferred_config(tmp_path):
    from safetensors.torch import save_file

    ref = randomized_timm("vit_tiny_patch16_224", num_classes=5)
    sd = ref.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref(x)
        for f in ("w.pth", "w.safetensors"):
            model = load_checkpoint(tmp_path / f)
            assert model.config.num_heads == 3 and model.config.num_classes == 5
            assert (model(x) - expected).abs().max() < 1e-4


def timm_to_google_npz(sd: dict, heads: int) -> dict:
    """The inverse of the Google -> timm mapping, to write a checkpoint in Google's layout."""
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].permute(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "head/kernel": sd["head.weight"].T,
        "head/bias": sd["head.bias"],
    }
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        b, g = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        d = sd[b + "norm1.weight"].shape[0]
        mha = g + "MultiHeadDotProductAttention_1/"
        for name, w, bias in zip(("query", "key", "value"), sd[b + "attn.qkv.weight"].chunk(3),
                                 sd[b + "attn.qkv.bias"].chunk(3), strict=True):
            out[mha + f"{name}/kernel"] = w.T.reshape(d, heads, d // heads)
            out[mha + f"{name}/bias"] = bias.reshape(heads, d // heads)
        out[mha + "out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(heads, d // heads, d)
        out[mha + "out/bias"] = sd[b + "attn.proj.bias"]
        for ours, theirs in (("norm1", "LayerNorm_0"), ("norm2", "LayerNorm_2")):
            out[g + f"{theirs}/scale"] = sd[b + f"{ours}.weight"]
            out[g + f"{theirs}/bias"] = sd[b + f"{ours}.bias"]
        for ours, theirs in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            out[g + f"MlpBlock_3/{theirs}/kernel"] = sd[b + f"mlp.{ours}.weight"].T
            out[g + f"MlpBlock_3/{theirs}/bias"] = sd[b + f"mlp.{ours}.bias"]
        i += 1
    return {k: v.detach().numpy() for k, v in out.items()}


def test_google_npz_loads_as_timm_loads_it(tmp_path):
    from timm.models.vision_transformer import _load_weights

    ref = randomized_timm("vit_tiny_patch16_224", img_size=64, num_classes=10)
    np.savez(tmp_path / "ViT-Ti_16.npz", **timm_to_google_npz(ref.state_dict(), heads=3))
    # timm's own Google loader reads our file back to the same model: the file is faithful.
    check = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                              num_classes=10).eval()
    _load_weights(check, str(tmp_path / "ViT-Ti_16.npz"))
    ours = load_checkpoint(tmp_path / "ViT-Ti_16.npz")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(check(x), ref(x), atol=1e-5, rtol=1e-5)
        assert (ours(x) - ref(x)).abs().max() < 1e-4
