"""``attnvision generate``: a small random-weight pipeline file (and the same models as a lone
DiT with its VAE), every output file read back, seeded runs repeatable, every bad input refused
in one line with nothing written."""

import json

import numpy as np
import pytest
import torch
from diffusion_helpers import SIZE, small_pipeline, small_pipeline_file
from PIL import Image

from attnvision.cli import main
from attnvision.diffusion import DiTPipeline, save_dit, save_vae


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    return small_pipeline_file(tmp_path_factory.mktemp("pipe") / "small.safetensors")


def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def generate(capsys, checkpoint, out, *args):
    code, stdout, err = run(capsys, "generate", "--checkpoint", checkpoint, "--steps", 3,
                            "--out", out, "--json", *args)
    assert code == 0, err
    return json.loads(stdout), err


def pixels(path):
    return np.asarray(Image.open(path))


def test_writes_each_image_and_a_grid(pipeline_file, tmp_path, capsys):
    result, err = generate(capsys, pipeline_file, tmp_path / "out", "--class", 7, "--class",
                           "zero", "--n", 3)
    assert "denoising" in err  # the per-step progress bar, on stderr
    assert [(i["class"], i["label"]) for i in result["images"]] == [
        (7, "seven")] * 3 + [(0, "zero, nought")] * 3
    for image in result["images"]:
        assert pixels(image["path"]).shape == (SIZE, SIZE, 3)
    grid = pixels(result["grid"])  # two rows (one per class) of three, scaled up 8x
    assert grid.shape == (2 * (SIZE + 2) * 8 + 2 * 8, 3 * (SIZE + 2) * 8 + 2 * 8, 3)
    assert result["count"] == 6 and result["sampler"] == "dpm++" and result["size"] == SIZE
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "000_class7.png", "001_class7.png", "002_class7.png", "003_class0.png",
        "004_class0.png", "005_class0.png", "grid.png"]


def test_seeded_runs_repeat_and_do_not_depend_on_the_batch(pipeline_file, tmp_path, capsys):
    args = ("--class", 3, "--n", 3, "--sampler", "ddim", "--seed", 5)
    a, _ = generate(capsys, pipeline_file, tmp_path / "a", *args)
    b, _ = generate(capsys, pipeline_file, tmp_path / "b", *args, "--batch-size", 1)
    c, _ = generate(capsys, pipeline_file, tmp_path / "c", *args, "--seed", 6)
    for x, y in zip(a["images"], b["images"], strict=True):
        assert np.array_equal(pixels(x["path"]), pixels(y["path"]))
    assert not np.array_equal(pixels(a["images"][0]["path"]), pixels(c["images"][0]["path"]))
    # three images of one class from three different noises are three different images
    assert not np.array_equal(pixels(a["images"][0]["path"]), pixels(a["images"][1]["path"]))


def test_the_image_is_the_pipelines(pipeline_file, tmp_path, capsys):
    """What the command writes is what DiTPipeline draws from the seeded noise."""
    result, _ = generate(capsys, pipeline_file, tmp_path / "out", "--class", 4, "--n", 1,
                         "--sampler", "euler", "--guidance", 2, "--seed", 9)
    pipe = DiTPipeline.from_pretrained(pipeline_file, scheduler="euler")
    noise = torch.randn((1, 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(9))
    expected = pipe([4], guidance_scale=2, num_inference_steps=3, latents=noise,
                    output_type="np").images[0]
    got = pixels(result["images"][0]["path"]).astype(np.float32) / 255
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6


def test_random_classes_without_class(pipeline_file, tmp_path, capsys):
    result, _ = generate(capsys, pipeline_file, tmp_path / "out", "--n", 5, "--tiled",
                         "--guidance", 1, "--quiet")
    assert len(result["images"]) == 5
    assert all(0 <= i["class"] < 10 for i in result["images"])


def test_a_lone_dit_with_its_vae(tmp_path, capsys):
    pipe = small_pipeline()
    dit = save_dit(pipe.transformer, tmp_path / "dit.safetensors")
    vae = save_vae(pipe.vae, tmp_path / "vae.safetensors")
    result, _ = generate(capsys, dit, tmp_path / "out", "--vae", vae, "--class", 1, "--n", 1)
    assert pixels(result["images"][0]["path"]).shape == (SIZE, SIZE, 3)
    code, _, err = run(capsys, "generate", "--checkpoint", dit, "--out", tmp_path / "x")
    assert code == 2 and "--vae" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [
    (("--class", 12), "class 12 does not exist: this model knows classes 0 to 9"),
    (("--class", "nine"), "unknown label 'nine'"),
    (("--size", 18), "image size 18x18 cannot be generated"),
    (("--n", 0), "--n must be at least 1"),
    (("--steps", 0), "--steps must be at least 1"),
    (("--guidance", -1), "--guidance must be >= 0"),
])
def test_bad_input_is_one_line_and_writes_nothing(pipeline_file, tmp_path, capsys, args,
                                                  message):
    code, out, err = run(capsys, "generate", "--checkpoint", pipeline_file, "--out",
                         tmp_path / "out", *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_an_unknown_sampler_is_a_usage_error(pipeline_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:  # argparse's own exit
        main(["generate", "--checkpoint", str(pipeline_file), "--sampler", "pndm", "--out",
              str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_code.value.code == 2 and "invalid choice: 'pndm'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_kind(tmp_path, capsys):
    from attnvision.cotracker.pretrained import shipped_checkpoint

    code, _, err = run(capsys, "generate", "--checkpoint", shipped_checkpoint(), "--out",
                       tmp_path / "out")
    assert code == 2 and "not a DiT" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "junk.safetensors").write_bytes(b"not a file of weights")
    code, _, err = run(capsys, "generate", "--checkpoint", tmp_path / "junk.safetensors",
                       "--out", tmp_path / "out")
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_without_a_checkpoint_the_shipped_model_or_one_line(tmp_path, capsys, monkeypatch):
    from attnvision.diffusion import pretrained

    monkeypatch.setattr(pretrained, "SHIPPED", "none-such.safetensors")
    code, _, err = run(capsys, "generate", "--out", tmp_path / "out")
    assert code == 2 and "ships no generation model" in err
    assert len(err.strip().splitlines()) == 1


def test_the_models_own_guidance_is_the_default(tmp_path, capsys):
    """A pipeline file may store its model's guidance scale: the pipeline, generate and its
    report use it when none is given; a file that stores none gets diffusers' 4."""
    from safetensors import safe_open

    from attnvision.diffusion.pipeline import save_pipeline

    pipe = small_pipeline()
    assert pipe.guidance_scale == 4.0  # built without one: diffusers' default
    plain = save_pipeline(pipe, tmp_path / "plain.safetensors")
    pipe.guidance_scale = 2.5
    own = save_pipeline(pipe, tmp_path / "own.safetensors")
    with safe_open(str(own), framework="pt") as f:
        assert f.metadata()["guidance_scale"] == "2.5"
    assert DiTPipeline.from_pretrained(own).guidance_scale == 2.5
    assert DiTPipeline.from_pretrained(plain).guidance_scale == 4.0

    noise = torch.randn((1, 4, SIZE // 2, SIZE // 2), generator=torch.Generator().manual_seed(0))
    loaded = DiTPipeline.from_pretrained(own)
    default = loaded([3], num_inference_steps=3, latents=noise, output_type="np").images
    same = loaded([3], guidance_scale=2.5, num_inference_steps=3, latents=noise,
                  output_type="np").images
    other = loaded([3], guidance_scale=4.0, num_inference_steps=3, latents=noise,
                   output_type="np").images
    assert np.array_equal(default, same) and not np.array_equal(default, other)

    result, _ = generate(capsys, own, tmp_path / "a", "--class", 3, "--n", 1)
    assert result["guidance"] == 2.5
    result, _ = generate(capsys, own, tmp_path / "b", "--class", 3, "--n", 1, "--guidance", 1)
    assert result["guidance"] == 1.0
    result, _ = generate(capsys, plain, tmp_path / "c", "--class", 3, "--n", 1)
    assert result["guidance"] == 4.0
