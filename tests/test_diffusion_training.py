"""Training latent diffusion: the two training modules' losses and EMA against their
equations, and ``train vae`` / ``train diffusion`` end to end with tiny models on MNIST-5k's
training split (exports that ``generate`` reads, resume, one-line errors)."""

import json

import pytest
import torch
from safetensors import safe_open

from attnvision.cli import main
from attnvision.diffusion import (
    AutoencoderKL,
    DiT,
    DiTConfig,
    DiTPipeline,
    VAEConfig,
    load_vae,
)
from attnvision.diffusion.training import DiTTraining, LatentDigits, VAETraining


def tiny_dit():
    torch.manual_seed(0)
    return DiT(DiTConfig(input_size=7, patch_size=1, in_channels=4, hidden_size=16, depth=1,
                         num_heads=2, num_classes=10, learn_sigma=False, guided_channels=4))


def test_dit_loss_is_the_noise_prediction_error():
    """With the global generator replayed, the loss is ‖ε − ε_θ(√ᾱ z₀ + √(1−ᾱ) ε, t, y)‖²."""
    net = DiTTraining(tiny_dit(), scaling_factor=0.5).eval()  # eval: no EMA step, no dropout
    mean, logvar = torch.randn(3, 4, 7, 7), torch.full((3, 4, 7, 7), -2.0)
    labels = torch.tensor([1, 2, 3])
    torch.manual_seed(7)
    loss = net((torch.cat([mean, logvar], 1), labels))
    torch.manual_seed(7)
    z0 = (mean + (0.5 * logvar).exp() * torch.randn_like(mean)) * 0.5
    t = torch.randint(0, 1000, (3,))
    eps = torch.randn_like(z0)
    ab = net.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = ((net.dit(ab.sqrt() * z0 + (1 - ab).sqrt() * eps, t, labels) - eps) ** 2).mean()
    assert torch.allclose(loss, expected, atol=1e-6)


def test_ema_follows_the_weights_with_a_warm_up():
    dit = tiny_dit()
    net = DiTTraining(dit, 1.0, ema_decay=0.9)
    before = [p.clone() for p in net.ema.parameters()]
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(1.0)
    net.update_ema()  # n = 0: decay min(0.9, 1/10) = 0.1
    for e, b, p in zip(net.ema.parameters(), before, dit.parameters(), strict=True):
        assert torch.allclose(e, 0.1 * b + 0.9 * p, atol=1e-6)
    assert int(net.ema_updates) == 1
    assert not any(p.requires_grad for p in net.ema.parameters())
    assert {k.split(".")[0] for k in net.state_dict()} == {"dit", "ema", "ema_updates"}


def test_vae_loss_falls_on_a_few_digits():
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(in_channels=1, out_channels=1, block_out_channels=(8, 8),
                                  layers_per_block=1, latent_channels=2, norm_num_groups=4,
                                  sample_size=8))
    net = VAETraining(vae, kl_weight=1e-3)
    x = torch.rand(8, 1, 8, 8)
    opt = torch.optim.AdamW(vae.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss = net(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.8 * losses[0]


def test_latent_digits_pairs():
    data = LatentDigits(torch.zeros(5, 2, 3, 3), torch.ones(5, 2, 3, 3), torch.arange(5))
    (stats, label), target = data[4]
    assert stats.shape == (4, 3, 3) and label == target == 4 and len(data) == 5


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    code = main(["train", "vae", "--widths", "8,8,8", "--latent-channels", "4", "--epochs", "1",
                 "--batch-size", "100", "--per-class", "20", "--perceptual-weight", "0",
                 "--out", str(out / "run"), "--export", str(out / "vae.safetensors"),
                 "--quiet", "--json"])
    assert code == 0
    return out


def test_train_vae_exports_a_scaled_autoencoder(trained_vae):
    vae = load_vae(trained_vae / "vae.safetensors")
    assert vae.config.in_channels == 1 and vae.config.block_out_channels == (8, 8, 8)
    assert vae.config.scaling_factor != 1.0  # 1 / std of the training latents
    assert vae.encode(torch.zeros(1, 1, 28, 28)).mean.shape == (1, 4, 7, 7)


def test_train_diffusion_exports_a_pipeline_that_generate_reads(trained_vae, tmp_path,
                                                                 capsys):
    export = tmp_path / "digits.safetensors"
    code, out, err = run(capsys, "train", "diffusion", "--vae", trained_vae / "vae.safetensors",
                         "--hidden", 16, "--depth", 1, "--heads", 2, "--epochs", 1,
                         "--batch-size", 100, "--per-class", 20, "--out", tmp_path / "run",
                         "--export", export,
                         "--json", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert result["selection"] == "the last epoch's EMA weights" and result["epochs"] == 1
    with safe_open(str(export), framework="pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in list(f.keys())[:5])
    pipe = DiTPipeline.from_pretrained(export)
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.default_size == 28 and pipe.labels["7"] == 7
    # switched to DDIM or DDPM, the sampler keeps x̂₀ unclipped (latents are not in -1..1)
    for name in ("ddim", "ddpm"):
        again = DiTPipeline.from_pretrained(export, scheduler=name)
        assert again.scheduler.config["clip_sample"] is False
    # the exported DiT is the EMA copy, not the raw weights
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["model"]
    ema = {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}
    for k, v in pipe.transformer.state_dict().items():
        assert torch.allclose(v, ema[k].to(v.dtype), atol=1e-3)
    code, out, err = run(capsys, "generate", "--checkpoint", export, "--class", 3, "--n", 2,
                         "--steps", 2, "--out", tmp_path / "gen", "--json", "--quiet")
    assert code == 0, err
    assert [i["class"] for i in json.loads(out)["images"]] == [3, 3]
    # run again: the finished run resumes with nothing to train
    code, _, err = run(capsys, "train", "diffusion", "--vae", trained_vae / "vae.safetensors",
                       "--hidden", 16, "--depth", 1, "--heads", 2, "--epochs", 1,
                       "--batch-size", 100, "--per-class", 20, "--out", tmp_path / "run",
                       "--json")
    assert code == 0 and "nothing to train" in err


@pytest.mark.parametrize(("args", "message"), [
    (("vae", "--widths", "12,8"), "multiples of 8"),
    (("vae", "--epochs", "0"), "--epochs must be positive"),
    (("vae", "--per-class", "0"), "--per-class must be >= 1"),
    (("diffusion", "--vae", "missing.safetensors"), "not found"),
    (("diffusion", "--vae", "x", "--hidden", "30", "--heads", "4"), "--hidden 30"),
    (("diffusion", "--vae", "x", "--ema-decay", "1.5"), "--ema-decay"),
    (("diffusion", "--vae", "x", "--guidance", "-1"), "--guidance -1.0: give 0 or more"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    code, _, err = run(capsys, "train", *args, "--out", tmp_path / "out")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_train_diffusion_goes_on_from_init(trained_vae, tmp_path, capsys):
    """--init starts from a run's EMA weights (or its export) with the file's architecture."""
    from attnvision.commands.diffusion_train import _initial_dit

    vae = trained_vae / "vae.safetensors"
    tiny = ("--epochs", 1, "--batch-size", 100, "--per-class", 20, "--json", "--quiet")
    code, _, err = run(capsys, "train", "diffusion", "--vae", vae, "--hidden", 16, "--depth", 1,
                       "--heads", 2, "--out", tmp_path / "first", "--export",
                       tmp_path / "first.safetensors", *tiny)
    assert code == 0, err
    state = torch.load(tmp_path / "first" / "train_state.pt", weights_only=True)["model"]
    ema = {k.removeprefix("ema."): v for k, v in state.items() if k.startswith("ema.")}
    from_run = _initial_dit(str(tmp_path / "first" / "model.safetensors"), 4, 7, 10)
    from_export = _initial_dit(str(tmp_path / "first.safetensors"), 4, 7, 10)
    for k, v in from_run.state_dict().items():
        assert torch.equal(v, ema[k]), k  # the EMA copy, not the raw weights
        assert torch.allclose(from_export.state_dict()[k], v, atol=1e-3), k  # float16 export
    assert from_run.training and all(p.requires_grad for p in from_run.parameters())

    code, _, err = run(capsys, "train", "diffusion", "--vae", vae, "--init",
                         tmp_path / "first" / "model.safetensors", "--out",
                         tmp_path / "second", "--export", tmp_path / "second.safetensors",
                         "--guidance", 1.5, *tiny)
    assert code == 0, err
    assert "starting from" in err
    pipe = DiTPipeline.from_pretrained(tmp_path / "second.safetensors")
    assert pipe.transformer.config == from_run.config  # hidden 16, depth 1: the file's
    assert pipe.guidance_scale == 1.5  # the export stores the model's default guidance
    assert DiTPipeline.from_pretrained(tmp_path / "first.safetensors").guidance_scale == 4.0
    record = json.loads((tmp_path / "second" / "model.json").read_text())
    assert record["metadata"]["init"].endswith("model.safetensors")

    # what --init cannot be: a shape given beside it, or a DiT for other latents
    code, _, err = run(capsys, "train", "diffusion", "--vae", vae, "--init",
                       tmp_path / "first.safetensors", "--hidden", 32, "--out",
                       tmp_path / "bad", *tiny)
    assert code == 2 and "--hidden 32 with --init" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "other.safetensors"
    from attnvision.diffusion import save_dit
    save_dit(DiT(DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=16, depth=1,
                           num_heads=2, num_classes=10, learn_sigma=False)), other)
    code, _, err = run(capsys, "train", "diffusion", "--vae", vae, "--init", other,
                       "--out", tmp_path / "bad", *tiny)
    assert code == 2 and "does not fit these latents" in err and "in_channels 3" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


TORCHRUN_WORKER = """
import sys
import torch
torch.set_num_threads(1)  # two ranks on a two-core machine: one thread each
from attnvision.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_train_vae_and_diffusion_under_torchrun_with_bf16(tmp_path):
    """Two processes, one run each, bf16 autocast: every step's batch is split between the
    ranks (so as many steps as in one process), rank 0 writes the checkpoint and the export,
    and the exported autoencoder trains the DiT whose pipeline loads."""
    import os
    import subprocess
    import sys

    worker = tmp_path / "worker.py"
    worker.write_text(TORCHRUN_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--standalone", str(worker)]
    common = ["--epochs", "1", "--batch-size", "100", "--per-class", "20", "--amp", "bf16",
              "--quiet"]
    vae_file, pipe_file = tmp_path / "vae.safetensors", tmp_path / "digits.safetensors"
    runs = {
        "vae": ["train", "vae", "--widths", "8,8,8", "--latent-channels", "4",
                "--perceptual-weight", "0", "--export", str(vae_file)],
        "dit": ["train", "diffusion", "--vae", str(vae_file), "--hidden", "16", "--depth", "1",
                "--heads", "2", "--export", str(pipe_file)],
    }
    for name, args in runs.items():
        proc = subprocess.run([*launch, *args, *common, "--out", str(tmp_path / name)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        info = json.loads((tmp_path / name / "model.json").read_text())
        # 200 digits, batches of 100: 2 steps, as in one process; each rank 50 a step.
        assert info["world_size"] == 2 and info["global_step"] == 2, info
    assert load_vae(vae_file).config.scaling_factor != 1.0
    pipe = DiTPipeline.from_pretrained(pipe_file)
    assert pipe.transformer.config.hidden_size == 16
