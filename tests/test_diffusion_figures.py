"""``attnvision figures``' latent diffusion pictures: the forward process always, the
denoising trajectory and the DiT attention with a pipeline; and the functions behind them."""

import json

import numpy as np
import pytest
import torch
from diffusion_helpers import small_pipeline, small_pipeline_file
from PIL import Image

from attnvision.cli import main
from attnvision.viz.diffusion import image_grid

COURSE = {"positional_encoding", "position_similarity", "patch_grid", "attention_maps"}
DIFFUSION = {"forward_process", "denoising_trajectory", "dit_attention"}


@pytest.fixture(autouse=True)
def no_video_models(monkeypatch):
    # The SAM 2 and CoTracker pictures are tested elsewhere; skipping them keeps these short.
    import attnvision.commands.course as course
    import attnvision.sam2.pretrained as sam2_pretrained

    monkeypatch.setattr(sam2_pretrained, "SHIPPED", "missing.safetensors")
    monkeypatch.setattr(course, "_shipped_cotracker", lambda: None)


def test_figures_with_a_pipeline_draw_all_three(tmp_path, capsys):
    checkpoint = small_pipeline_file(tmp_path / "pipe.safetensors")
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), "--diffusion-checkpoint", str(checkpoint),
                 "--json", "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    files = json.loads(stdout)["files"]
    assert set(files) == COURSE | DIFFUSION
    for name in DIFFUSION:
        with Image.open(files[name]) as img:
            assert img.format == "PNG" and img.size[0] > 600
            assert np.asarray(img.convert("L")).std() > 5
    assert "--diffusion-checkpoint" not in err


def test_figures_without_a_model_draw_the_forward_process_and_say_so(tmp_path, capsys,
                                                                     monkeypatch):
    from attnvision.diffusion import pretrained

    monkeypatch.setattr(pretrained, "SHIPPED", "missing.safetensors")
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--json", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert set(json.loads(stdout)["files"]) == COURSE | {"forward_process"}
    notes = [line for line in err.splitlines() if "--diffusion-checkpoint" in line]
    assert len(notes) == 1 and "skipped" in notes[0]


def test_a_bad_diffusion_checkpoint_is_one_line_before_writing(tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), "--diffusion-checkpoint",
                 str(tmp_path / "junk.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_trajectory_ends_on_the_generated_image(tmp_path):
    """The last x̂₀ the pipeline reports is the latent it returns (DDIM's last step lands on
    its x̂₀), and every step is seen once."""
    pipe = small_pipeline()
    seen = []
    out = pipe([3], num_inference_steps=5, generator=torch.Generator().manual_seed(0),
               output_type="latent", on_step=lambda i, t, z, x0: seen.append((i, z, x0)))
    assert [i for i, _, _ in seen] == list(range(5))
    assert torch.equal(seen[-1][1], out.images)
    assert torch.allclose(seen[-1][2], out.images, atol=1e-5)


def test_image_grid_lays_out_rows():
    images = np.stack([np.full((4, 5, 3), v / 10) for v in range(6)])
    grid = image_grid(images, rows=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1 + 5, 1 + 2 * 6, 0] == round(0.5 * 255)
    assert grid[0, 0, 0] == 255  # the white padding
