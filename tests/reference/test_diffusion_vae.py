"""Parity with diffusers' AutoencoderKL (0.42.1): the same weights give the same posterior,
samples and images, whether they come from a diffusers folder, a lone diffusers file or the
original (CompVis / Stability) format."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from attnvision.diffusion.autoencoder_kl import VAE_CONFIGS, AutoencoderKL, VAEConfig
from attnvision.diffusion.vae_checkpoints import convert_diffusers_vae_state_dict, load_vae
from attnvision.weights import key_problems

diffusers = pytest.importorskip("diffusers")
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint  # noqa: E402

# Images are in -1..1 here; the bar is 1e-3 on 0..1 images, i.e. 2e-3 on these.
ATOL = 1e-4
CASES = {
    "2 levels, 1 block": dict(block_out_channels=(32, 64), layers_per_block=1,
                              norm_num_groups=8, latent_channels=4),
    "2 levels, 2 blocks, no quant_conv": dict(block_out_channels=(32, 64), layers_per_block=2,
                                              norm_num_groups=16, latent_channels=3,
                                              use_quant_conv=False),
    "3 levels, no attention, no post_quant_conv": dict(
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        latent_channels=6, mid_block_add_attention=False, use_post_quant_conv=False),
}


def diffusers_vae(seed: int = 0, **config) -> "diffusers.AutoencoderKL":
    """A seeded diffusers VAE with every parameter random (GroupNorm's ones and zeros too)."""
    levels = len(config["block_out_channels"])
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * levels,
                                    up_block_types=("UpDecoderBlock2D",) * levels,
                                    sample_size=32, **config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def to_original(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers names -> CompVis names, written independently of the loader's mapping (and
    checked against diffusers' own converter in the test)."""
    names = {"conv_shortcut": "nin_shortcut", "conv_norm_out": "norm_out",
             "group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[1] == "down_blocks":
            kind = "block" if parts[3] == "resnets" else "downsample"
            rest = parts[4:] if kind == "block" else parts[5:]
            parts = [parts[0], "down", parts[2], kind, *rest]
        elif parts[1] == "up_blocks":
            kind = "block" if parts[3] == "resnets" else "upsample"
            rest = parts[4:] if kind == "block" else parts[5:]
            parts = [parts[0], "up", str(levels - 1 - int(parts[2])), kind, *rest]
        elif parts[1] == "mid_block":
            inner = (f"block_{int(parts[3]) + 1}" if parts[2] == "resnets" else "attn_1")
            parts = [parts[0], "mid", inner, *parts[4:]]
            if inner == "attn_1" and value.ndim == 2:
                value = value[:, :, None, None]
        new = ".".join(parts)
        for old, replacement in names.items():
            new = new.replace(f".{old}.", f".{replacement}.")
        out[new] = value
    return out


def outputs(model, x: torch.Tensor, seed: int = 3) -> dict[str, torch.Tensor]:
    """Everything the two implementations must agree on, from either one."""
    ours = isinstance(model, AutoencoderKL)
    with torch.no_grad():
        q = model.encode(x) if ours else model.encode(x).latent_dist
        sample = q.sample(torch.Generator().manual_seed(seed))
        decode = (lambda z: model.decode(z)) if ours else (lambda z: model.decode(z).sample)
        forward = (lambda **kw: model(x, **kw)) if ours else (lambda **kw: model(x, **kw).sample)
        return {"mean": q.mean, "logvar": q.logvar, "std": q.std, "kl": q.kl(),
                "sample": sample, "decode": decode(sample), "forward": forward(),
                "forward sampled": forward(sample_posterior=True,
                                           generator=torch.Generator().manual_seed(seed))}


def assert_same(ours: dict, theirs: dict) -> None:
    for name, value in theirs.items():
        diff = (ours[name] - value).abs().max().item()
        # The KL is a sum over every latent value (hundreds here): relative to its size.
        atol = 1e-6 * value.abs().max().item() if name == "kl" else ATOL
        assert ours[name].shape == value.shape and diff <= atol, f"{name}: {diff:.2e}"


@pytest.mark.parametrize("case", CASES)
def test_diffusers_folder_matches_diffusers(tmp_path, case):
    reference = diffusers_vae(**CASES[case])
    reference.save_pretrained(tmp_path / "vae")
    ours = load_vae(tmp_path / "vae" / "config.json")  # the folder is meant
    assert ours.config == VAEConfig.from_diffusers(dict(reference.config))
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    # Measured: 1e-6 on the posterior, 7e-6 on images spanning -3.5..3.5, 6e-5 on KLs of 470.
    assert_same(outputs(ours, x), outputs(reference, x))


@pytest.mark.parametrize("case", list(CASES)[1:])
def test_original_format_files_load_the_same_model(tmp_path, case):
    config = CASES[case]
    reference = diffusers_vae(seed=1, **config)
    levels = len(config["block_out_channels"])
    sd = reference.state_dict()
    original = to_original(sd, levels)
    # The test's mapping is the inverse of diffusers' own single-file converter.
    back = convert_ldm_vae_checkpoint(original, dict(reference.config))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)

    reference.save_pretrained(tmp_path / "vae")
    expected = load_vae(tmp_path / "vae")
    prefixed = {f"first_stage_model.{k}": v for k, v in original.items()}
    unet = {"model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3),
            "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.ones(768)}
    save_file(original, tmp_path / "vae.safetensors")
    torch.save(prefixed, tmp_path / "prefixed.pt")
    torch.save({"state_dict": {**unet, **prefixed}, "global_step": 1}, tmp_path / "sd.ckpt")
    save_file({**unet, **prefixed}, tmp_path / "sd.safetensors")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    for name in ("vae.safetensors", "prefixed.pt", "sd.ckpt", "sd.safetensors"):
        loaded = load_vae(tmp_path / name, norm_num_groups=config["norm_num_groups"])
        # The shapes tell all but the training size (and the groups, passed).
        assert loaded.config == replace(expected.config, sample_size=256), name
        for k, v in expected.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (name, k)
        with torch.no_grad():
            assert torch.equal(loaded(x), expected(x))


def test_other_diffusers_layouts(tmp_path):
    config = CASES["2 levels, 1 block"]
    reference = diffusers_vae(seed=2, **config)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    expected = outputs(reference, x)
    # A pipeline folder (the VAE in vae/), written as .bin.
    reference.save_pretrained(tmp_path / "pipe" / "vae", safe_serialization=False)
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"vae": ["diffusers", "x"]}))
    assert_same(outputs(load_vae(tmp_path / "pipe"), x), expected)
    # A lone file with the attention names diffusers used before 0.14 (old hub uploads).
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for k, v in reference.state_dict().items():
        for new, before in old.items():
            k = k.replace(f".{new}.", f".{before}.")
        sd[k] = v.contiguous()
    save_file(sd, tmp_path / "old.safetensors")
    loaded = load_vae(tmp_path / "old.safetensors", norm_num_groups=8)
    assert_same(outputs(loaded, x), expected)


def test_sd_sized_diffusers_weights_map_onto_our_modules():
    with torch.device("meta"):
        reference = diffusers.AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        ours = AutoencoderKL(VAE_CONFIGS["sd"])
    sd = convert_diffusers_vae_state_dict(reference.state_dict())
    assert key_problems(ours.state_dict(), sd) == ""
    assert sum(p.numel() for p in reference.parameters()) == sum(
        p.numel() for p in ours.parameters())


def test_winograd_convolutions_match_diffusers(tmp_path, monkeypatch):
    # 96 and 128 channels at 96 x 96: wide enough and large enough that our float32 inference
    # runs its 3 x 3 convs by Winograd's F(4 x 4, 3 x 3) (attnvision.nn.winograd).
    from attnvision.nn import winograd

    reference = diffusers_vae(seed=4, block_out_channels=(96, 128), layers_per_block=1,
                              norm_num_groups=32, latent_channels=4)
    reference.save_pretrained(tmp_path / "vae")
    ours = load_vae(tmp_path / "vae")
    calls = []
    real = winograd.conv3x3
    monkeypatch.setattr(winograd, "conv3x3", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(1, 3, 96, 96) * 2 - 1
    assert_same(outputs(ours, x), outputs(reference, x))
    assert len(calls) >= 10  # encoder and decoder, every pass in outputs()
