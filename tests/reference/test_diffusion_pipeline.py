"""A whole DiTPipeline generation against diffusers' on the same (seeded random) weights: a
pipeline folder written by diffusers' ``save_pretrained``, read by ours, the same noise, every
sampler; images in 0..1 within 1e-3."""

import json

import numpy as np
import pytest
import torch

from attnvision.diffusion.pipeline import DiTPipeline, save_pipeline
from attnvision.errors import UserError

diffusers = pytest.importorskip("diffusers")

TOL = 1e-3  # the bar, on images in 0..1


def randomize(model, seed: int, scale: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def reference_pipeline(scheduler):
    """diffusers' DiTPipeline with a small DiT (1000 classes: diffusers' pipeline hard-codes
    ImageNet's null label 1000) and a two-level VAE, every weight random."""
    torch.manual_seed(0)
    dit = diffusers.DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8,
        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000).eval()
    randomize(dit, 1)
    with torch.no_grad():  # one time/class embedder, copied into every block as diffusers does
        shared = dit.transformer_blocks[0].norm1.emb.state_dict()
        for block in dit.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(shared)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
        sample_size=16).eval()
    randomize(vae, 2, 0.1)
    return diffusers.DiTPipeline(dit, vae, scheduler)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dit_pipeline")
    ref = reference_pipeline(diffusers.DDIMScheduler())
    ref.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {"0": "tench, Tinca tinca", "7": "cock"}  # as the hub's DiT folders
    (folder / "model_index.json").write_text(json.dumps(index))
    # Read back as a diffusers user would: a scheduler switched with ``from_config`` then keeps
    # the file's settings (its timestep spacing included), as ours does.
    return folder, diffusers.DiTPipeline.from_pretrained(folder)


class EulerReference:
    """diffusers' components in the sampling loop of its other pipelines. Its DiTPipeline cannot
    run Euler: it neither scales the initial noise by ``init_noise_sigma`` (σ_max ≈ 157 here)
    nor passes the unscaled sample to ``step`` (it hands over the ``scale_model_input`` one);
    both are no-ops for DDPM, DDIM and DPM-Solver++, whose comparison uses the pipeline."""

    def __init__(self, pipe):
        self.pipe = pipe

    @torch.no_grad()
    def __call__(self, class_labels, guidance_scale, num_inference_steps, output_type):
        pipe, n = self.pipe, len(class_labels)
        latents = torch.randn((n, 4, 8, 8)) * pipe.scheduler.init_noise_sigma
        labels = torch.tensor(class_labels + [1000] * n)
        pipe.scheduler.set_timesteps(num_inference_steps)
        for t in pipe.scheduler.timesteps:
            model_in = pipe.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            out = pipe.transformer(model_in, timestep=t.expand(2 * n),
                                   class_labels=labels).sample[:, :4]
            cond, uncond = out.chunk(2)
            eps = uncond + guidance_scale * (cond - uncond)
            latents = pipe.scheduler.step(eps, t, latents).prev_sample
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return diffusers.ImagePipelineOutput(images=images)


SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
}


@pytest.mark.parametrize("guidance", [4.0, 1.0])
@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_generation_matches_diffusers(saved, sampler, guidance, monkeypatch):
    folder, ref = saved
    ref.scheduler = getattr(diffusers, SCHEDULERS[sampler]).from_config(ref.scheduler.config)
    ours = DiTPipeline.from_pretrained(folder, scheduler=sampler)
    labels = [7, 0, 999]
    steps = 12
    # diffusers' pipeline draws a stochastic sampler's noise from the global generator (it does
    # not pass ``generator`` to ``step``): seed both the same way and give neither a generator.
    torch.manual_seed(5)
    run = EulerReference(ref) if sampler == "euler" else ref
    expected = run(labels, guidance_scale=guidance, num_inference_steps=steps,
                   output_type="np").images
    torch.manual_seed(5)
    got = ours(labels, guidance_scale=guidance, num_inference_steps=steps,
               output_type="np").images
    assert got.shape == expected.shape == (3, 16, 16, 3)
    assert np.abs(got - expected).max() < TOL
    assert expected.std() > 0.01  # the images are not flat: the test can fail


def test_seeded_generator_and_given_latents(saved):
    folder, ref = saved
    ref.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(ref.scheduler.config)
    ours = DiTPipeline.from_pretrained(folder, scheduler="dpm++")
    expected = ref([1, 2], generator=torch.Generator().manual_seed(3), num_inference_steps=8,
                   output_type="np").images
    got = ours([1, 2], generator=torch.Generator().manual_seed(3), num_inference_steps=8,
               output_type="np").images
    assert np.abs(got - expected).max() < TOL
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    again = ours([1, 2], latents=noise, num_inference_steps=8, output_type="np").images
    assert np.abs(again - got).max() == 0


def test_labels_and_pil_output(saved):
    folder, _ = saved
    pipe = DiTPipeline.from_pretrained(folder)
    assert pipe.get_label_ids(["tench", "Tinca tinca", "cock"]) == [0, 0, 7]
    with pytest.raises(UserError, match="unknown label 'goldfish'"):
        pipe.get_label_ids("goldfish")
    images = pipe([0], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert images[0].size == (16, 16) and images[0].mode == "RGB"


def test_one_file_pipeline_round_trip(saved, tmp_path):
    folder, _ = saved
    pipe = DiTPipeline.from_pretrained(folder, scheduler="euler")
    path = save_pipeline(pipe, tmp_path / "pipe.safetensors")
    again = DiTPipeline.from_pretrained(path)
    assert type(again.scheduler).__name__ == "EulerDiscreteScheduler"
    assert again.labels == pipe.labels
    kwargs = {"num_inference_steps": 4, "output_type": "np"}
    a = pipe([7, 3], generator=torch.Generator().manual_seed(1), **kwargs).images
    b = again([7, 3], generator=torch.Generator().manual_seed(1), **kwargs).images
    assert np.abs(a - b).max() == 0


def test_a_hub_id_is_fetched_when_it_is_not_a_local_path(saved, monkeypatch, tmp_path):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    folder, _ = saved
    asked = []

    def download(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(folder)

    monkeypatch.chdir(tmp_path)  # no local folder of that name
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    pipe = DiTPipeline.from_pretrained("facebook/DiT-XL-2-256")
    assert asked == [("facebook/DiT-XL-2-256", ["*.json", "*.safetensors"])]
    assert pipe.transformer.config.num_classes == 1000

    def offline(repo_id, allow_patterns):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match="could not be fetched from the Hugging Face Hub") as e:
        DiTPipeline.from_pretrained("facebook/DiT-XL-2-256")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="checkpoint not found"):
        DiTPipeline.from_pretrained("no/such/folder")
