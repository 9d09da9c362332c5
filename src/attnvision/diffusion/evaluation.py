"""How good a class-conditional digit generator is: measured by classifiers, not by eye.

A model that draws MNIST digits (28 x 28, one channel, classes 0-9) is judged by what two
classifiers trained on real digits make of its samples, and by how its samples spread:

- **accuracy**: the share of samples the shipped ViT (:mod:`attnvision.vit.pretrained`, trained
  on the mnist5k train split) reads as the class that was asked for, overall and per class;
- **an independent reader**: scikit-learn's ``SVC`` (RBF kernel, defaults) fit on the same
  train split's raw pixels: its accuracy on the samples should agree with the ViT's, so that a
  generator cannot score by exploiting one network's blind spots;
- **Fréchet distance** in the ViT's feature space (FID's formula, with the ViT's pre-logits, the
  final LayerNorm of the class token, 96 numbers, in place of Inception's pool features): the
  samples against the held-out test digits, beside the distance between the real train and test
  digits themselves, the floor that sampling noise alone gives;
- **diversity**: within each class, the mean L2 distance between two different samples (pixels
  in 0..1), over the same for the real test digits of that class; a generator that collapses to
  a few prototypes scores well on accuracy and badly here;
- **copying**: the samples' median distance to their nearest training digit over the test
  digits' (:func:`copy_ratio`): about 1 for new digits, near 0 for a model that memorised its
  4,000 training digits (which no other figure here catches);
- **speed**: seconds to draw 16 digits, after one warm-up draw;
- **accuracy against steps**: DDPM at 250 steps, DDIM and DPM-Solver++ at 10, 25 and 50, each
  on the same seeded noise.

Every function takes any :class:`~attnvision.diffusion.pipeline.DiTPipeline` (or anything with
its call) and any classifier with the ViT's ``forward_features`` / ``forward_head``; samples are
drawn from one seeded generator, so a run repeats exactly and does not depend on the batch size
(for the deterministic samplers). :func:`evaluate_digits` runs them all and checks the targets
of :data:`TARGETS`. scipy and scikit-learn are imported when they are needed (``pip install
'attnvision[data]'``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnvision.errors import UserError

DIGIT_SIZE = 28
DIGIT_CHANNELS = 1
DIGIT_CLASSES = 10
TIMED_IMAGES = 16
# (sampler, steps) of the accuracy-against-steps sweep: DDPM needs many steps, the ODE
# samplers few.
DEFAULT_SWEEP: tuple[tuple[str, int], ...] = (
    ("ddpm", 250), ("ddim", 10), ("ddim", 25), ("ddim", 50),
    ("dpm++", 10), ("dpm++", 25), ("dpm++", 50))
FEATURES = ("ViT pre-logits: the final LayerNorm of the class token (forward_head(..., "
            "pre_logits=True)), 96 numbers for the shipped ViT")

# name -> (comparison, threshold, what it means); the report gives each its value and a pass.
TARGETS: dict[str, tuple[str, float, str]] = {
    "accuracy": (">=", 0.95, "share of samples the ViT reads as the class asked for"),
    "svc_gap_points": ("<=", 3.0, "|ViT accuracy - SVC accuracy| on the samples, in points"),
    "fid_ratio": ("<=", 2.0, "FID(samples, test digits) / FID(train digits, test digits)"),
    "diversity_min_ratio": (">=", 0.8, "lowest class's mean pairwise distance, samples over "
                                       "real test digits"),
    "seconds_16": ("<", 5.0, f"seconds to draw {TIMED_IMAGES} digits (after a warm-up)"),
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


def check_digit_pipeline(pipe: Any, name: str = "this model") -> None:
    """One line unless ``pipe`` draws 28 x 28 single-channel images of 10 classes: the
    classifiers here read MNIST digits and nothing else."""
    size = pipe.default_size
    channels = pipe.vae.config.out_channels
    classes = pipe.transformer.config.num_classes
    if (size, channels, classes) != (DIGIT_SIZE, DIGIT_CHANNELS, DIGIT_CLASSES):
        raise UserError(f"this evaluation is for MNIST digit models ({DIGIT_SIZE}x{DIGIT_SIZE} "
                        f"single-channel images, {DIGIT_CLASSES} classes): {name} draws "
                        f"{size}x{size} images with {channels} channel"
                        f"{'s' if channels != 1 else ''} of {classes} classes")


@contextlib.contextmanager
def using_sampler(pipe: Any, sampler: Any) -> Iterator[Any]:
    """``pipe`` with another sampler on its own noise schedule for the ``with`` block (``None``
    keeps the one it has); the pipeline's own sampler comes back afterwards."""
    if sampler is None:
        yield pipe
        return
    own = pipe.scheduler
    pipe.scheduler = pipe.sampler_like(sampler)
    try:
        yield pipe
    finally:
        pipe.scheduler = own


def sampler_name(pipe: Any, sampler: Any) -> str:
    """What to call ``sampler`` (a name, a scheduler, or ``None``: the pipeline's own)."""
    return sampler if isinstance(sampler, str) else type(sampler or pipe.scheduler).__name__


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="digit", file=sys.stderr, disable=not progress)


def sample_digits(pipe: Any, per_class: int, steps: int = 25, sampler: Any = None,
                  guidance: float | None = None, seed: int = 0, batch_size: int = 250,
                  progress: bool = False) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of every class, class 0's first: images (N, C, H, W) float32 in
    0..1 and their labels (N,) int64.

    All the initial noise is drawn first from ``torch.Generator().manual_seed(seed)`` (as
    ``attnvision generate`` draws it), so a sample does not depend on ``batch_size``; a
    stochastic sampler's later draws come from the same generator."""
    if per_class < 1 or steps < 1 or batch_size < 1:
        raise UserError(f"per_class, steps and batch_size must be at least 1, got {per_class}, "
                        f"{steps} and {batch_size}")
    classes = pipe.transformer.config.num_classes
    labels = torch.arange(classes).repeat_interleave(per_class)
    pipe.check_labels(labels.tolist())
    h, w = pipe.check_size(pipe.default_size, pipe.default_size)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(labels), pipe.transformer.config.in_channels, h, w),
                        generator=generator)
    images = []
    with using_sampler(pipe, sampler), _bar(len(labels), f"{sampler_name(pipe, sampler)} "
                                            f"{steps} steps", progress) as bar:
        for b in range(0, len(labels), batch_size):
            batch = labels[b:b + batch_size]
            out = pipe(batch.tolist(), guidance_scale=guidance, generator=generator,
                       num_inference_steps=steps, output_type="pt",
                       latents=noise[b:b + batch_size])
            images.append(out.images.float())
            bar.update(len(batch))
    return torch.cat(images), labels


# -- classifiers ------------------------------------------------------------------------------

@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int) -> Tensor:
    return torch.cat([fn(images[b:b + batch_size].float())
                      for b in range(0, len(images), batch_size)])


def classify(classifier: Any, images: Tensor, batch_size: int = 500) -> Tensor:
    """The class ``classifier`` (a ViT taking (N, C, H, W) in 0..1) reads in each image."""
    classifier.eval()
    return _batched(lambda x: classifier(x).argmax(-1), images, batch_size)


def classifier_features(classifier: Any, images: Tensor, batch_size: int = 500) -> Tensor:
    """(N, D) features for the Fréchet distance: the ViT's pre-logits (see :data:`FEATURES`)."""
    classifier.eval()
    return _batched(lambda x: classifier.forward_head(classifier.forward_features(x),
                                                      pre_logits=True), images, batch_size)


def accuracy_of(predictions: Tensor | np.ndarray, labels: Tensor | np.ndarray,
                num_classes: int = DIGIT_CLASSES) -> dict[str, Any]:
    """Overall and per-class accuracy (class -> share right, ``None`` for a class with no
    example), as plain floats."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    right = predictions == labels
    per_class = {str(c): (float(right[labels == c].mean()) if (labels == c).any() else None)
                 for c in range(num_classes)}
    return {"accuracy": float(right.mean()), "per_class": per_class, "count": len(labels)}


def classifier_accuracy(classifier: Any, images: Tensor, labels: Tensor,
                        batch_size: int = 500) -> dict[str, Any]:
    """The share of ``images`` that ``classifier`` reads as their ``labels``, overall and per
    class (see :func:`accuracy_of`)."""
    return accuracy_of(classify(classifier, images, batch_size), labels)


def fit_svc(images: Tensor, labels: Tensor) -> Any:
    """scikit-learn's ``SVC()`` (RBF kernel, gamma "scale", C 1) on flattened pixels."""
    try:
        from sklearn.svm import SVC
    except ImportError:
        raise UserError("the SVC check needs scikit-learn: pip install 'attnvision[data]'"
                        ) from None
    return SVC().fit(_flat(images), np.asarray(labels))


def _flat(images: Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).float().numpy()


def svc_agreement(images: Tensor, labels: Tensor, train: tuple[Tensor, Tensor],
                  test: tuple[Tensor, Tensor] | None = None,
                  predictions: Tensor | None = None) -> dict[str, Any]:
    """An SVC fit on ``train`` (images, labels: the real digits the ViT learnt from) reads the
    samples: its ``accuracy`` on them (and per class), its accuracy on the real ``test`` digits
    for reference, and, given another classifier's ``predictions`` on the samples, the share
    of samples on which the two read the same class (``agreement``)."""
    svc = fit_svc(*train)
    read = svc.predict(_flat(images))
    result = accuracy_of(read, labels)
    result["real_test_accuracy"] = (float((svc.predict(_flat(test[0])) ==
                                           np.asarray(test[1])).mean())
                                    if test is not None else None)
    result["agreement"] = (float((read == np.asarray(predictions)).mean())
                           if predictions is not None else None)
    return result


# -- Fréchet distance -------------------------------------------------------------------------

def frechet_distance_from_moments(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray,
                                  cov_b: np.ndarray) -> float:
    """||μa − μb||² + Tr(Σa + Σb − 2 (Σa Σb)^½), the Fréchet (2-Wasserstein) distance between
    two Gaussians, in float64 with scipy's ``sqrtm`` (FID's formula)."""
    try:
        from scipy import linalg
    except ImportError:
        raise UserError("the Fréchet distance needs scipy: pip install 'attnvision[data]'"
                        ) from None
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(
        np.float64)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        # A singular product (fewer samples than dimensions): nudge both diagonals, as
        # pytorch-fid and torchmetrics do.
        offset = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    # Rounding leaves a tiny imaginary part on a product that is similar to a PSD matrix.
    root = root.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def frechet_distance(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """The Fréchet distance between the Gaussians fit to two sets of (N, D) features (means,
    and covariances with N − 1 in the denominator, as FID fits them)."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features must be (N, D) with the same D and N >= 2, got {a.shape} "
                         f"and {b.shape}")
    return frechet_distance_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                         np.cov(b, rowvar=False))


def classifier_fid(classifier: Any, generated: Tensor, real: Tensor,
                   batch_size: int = 500) -> float:
    """FID with ``classifier`` as the feature extractor (:func:`classifier_features`): the
    Fréchet distance between its features of two image sets."""
    return frechet_distance(classifier_features(classifier, generated, batch_size),
                            classifier_features(classifier, real, batch_size))


# -- diversity --------------------------------------------------------------------------------

def mean_pairwise_distance(images: Tensor, chunk: int = 512) -> float:
    """The mean L2 distance between two different images of a set (every unordered pair once;
    pixels as they are, 0..1). ``nan`` for fewer than two images."""
    n = len(images)
    if n < 2:
        return float("nan")
    x = images.reshape(n, -1).double()
    total = sum(float(torch.cdist(x[i:i + chunk], x).sum()) for i in range(0, n, chunk))
    return total / (n * (n - 1))  # the zero diagonal adds nothing; each pair counted twice


def diversity(images: Tensor, labels: Tensor, real_images: Tensor, real_labels: Tensor,
              num_classes: int = DIGIT_CLASSES) -> dict[str, Any]:
    """Per class: the mean pairwise distance of the samples, of the real digits, and their
    ratio (1: as varied as real digits; near 0: collapse); ``min_ratio`` and its class."""
    per_class = {}
    for c in range(num_classes):
        generated = mean_pairwise_distance(images[labels == c])
        real = mean_pairwise_distance(real_images[real_labels == c])
        per_class[str(c)] = {"generated": generated, "real": real,
                             "ratio": generated / real if real > 0 else float("nan")}
    ratios = {c: v["ratio"] for c, v in per_class.items() if np.isfinite(v["ratio"])}
    lowest = min(ratios, key=ratios.get) if ratios else None
    return {"per_class": per_class, "min_ratio": ratios[lowest] if lowest is not None else None,
            "min_class": lowest}


def nearest_distances(images: Tensor, reference: Tensor, leave_one_out: bool = False,
                      chunk: int = 512) -> Tensor:
    """(N,) L2 distance from each image to its nearest image of ``reference`` (pixels as they
    are); ``leave_one_out``: ``images`` is ``reference`` and an image is not its own neighbour."""
    x = images.reshape(len(images), -1).double()
    r = reference.reshape(len(reference), -1).double()
    if leave_one_out and len(x) != len(r):
        raise ValueError("leave_one_out compares a set with itself")
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], r)
        if leave_one_out:
            rows = torch.arange(len(d))
            d[rows, rows + i] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out)


def copy_ratio(images: Tensor, train_images: Tensor, real: Tensor | None = None) -> float:
    """The median distance from a sample to its nearest training image over the same median for
    new real images: ``real`` (held-out digits) if given, else the training images themselves,
    each without itself. About 1 for new images drawn like the training ones; well below 1 when
    a model copies its training set (a small set learned too long), which a Fréchet distance to
    that set would reward."""
    if len(train_images) < 2 or len(images) < 1 or (real is not None and len(real) < 1):
        raise ValueError("copy_ratio needs a sample and at least two training images")
    own = (nearest_distances(real, train_images) if real is not None else
           nearest_distances(train_images, train_images, leave_one_out=True)).median()
    return float(nearest_distances(images, train_images).median() / own)


# -- speed and steps --------------------------------------------------------------------------

def timing(pipe: Any, count: int = TIMED_IMAGES, steps: int = 25, sampler: Any = None,
           guidance: float | None = None, seed: int = 0) -> float:
    """Seconds for one call drawing ``count`` decoded images (classes 0, 1, ... in turn), after
    one warm-up call of the same (first calls pay for allocations and thread start-up)."""
    labels = [i % pipe.transformer.config.num_classes for i in range(count)]
    with using_sampler(pipe, sampler):
        def draw() -> None:
            pipe(labels, guidance_scale=guidance, num_inference_steps=steps, output_type="pt",
                 generator=torch.Generator().manual_seed(seed))

        draw()
        start = time.perf_counter()
        draw()
        return time.perf_counter() - start


def steps_sweep(pipe: Any, classifier: Any, per_class: int = 50,
                settings: Sequence[tuple[str, int]] = DEFAULT_SWEEP,
                guidance: float | None = None,
                seed: int = 0, batch_size: int = 250,
                progress: bool = False) -> list[dict[str, Any]]:
    """The classifier's accuracy on ``per_class`` samples of every class for each (sampler,
    steps) of ``settings``, every run from the same seeded noise."""
    runs = []
    for sampler, steps in settings:
        start = time.perf_counter()
        images, labels = sample_digits(pipe, per_class, steps, sampler, guidance, seed,
                                       batch_size, progress)
        seconds = time.perf_counter() - start
        read = classifier_accuracy(classifier, images, labels)
        runs.append({"sampler": sampler, "steps": steps, "accuracy": read["accuracy"],
                     "per_class": read["per_class"], "seconds": round(seconds, 3)})
    return runs


# -- everything -------------------------------------------------------------------------------

@dataclass
class DigitEvaluation:
    """:func:`evaluate_digits`' result: the report (plain JSON types) and the samples."""

    report: dict[str, Any]
    images: Tensor  # (N, 1, 28, 28) in 0..1, class-major: per_class of class 0 first
    labels: Tensor


def check_targets(values: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """Each of :data:`TARGETS` with its value, its target (e.g. ">= 0.95") and a pass; a value
    that could not be measured (``None``) does not pass."""
    checked = {}
    for name, (op, threshold, meaning) in TARGETS.items():
        value = values.get(name)
        ok = value is not None and bool(np.isfinite(value)) and _COMPARE[op](value, threshold)
        checked[name] = {"value": value, "target": f"{op} {threshold:g}", "pass": ok,
                         "meaning": meaning}
    return checked


def evaluate_digits(pipe: Any, classifier: Any = None, data: Any = None, per_class: int = 1000,
                    steps: int = 25, sampler: Any = "dpm++", guidance: float | None = None,
                    seed: int = 0, batch_size: int = 250, sweep: bool = True,
                    sweep_per_class: int = 50, progress: bool = False) -> DigitEvaluation:
    """Every figure of the module doc for a digit ``pipe``, with the targets checked.

    ``classifier`` defaults to the shipped ViT, ``data`` to ``load_dataset("mnist5k")`` (its
    train split fits the SVC and is the FID reference's first set; its test split is what the
    samples are compared with)."""
    from attnvision.data.datasets import load_dataset

    check_digit_pipeline(pipe)
    if classifier is None:
        from attnvision.vit.pretrained import load_shipped

        classifier = load_shipped()
    data = data if data is not None else load_dataset("mnist5k")
    train, test = data.train.tensors, data.test.tensors
    guidance = pipe.guidance_scale if guidance is None else guidance  # the model's own
    started = time.perf_counter()

    images, labels = sample_digits(pipe, per_class, steps, sampler, guidance, seed, batch_size,
                                   progress)
    sampling_seconds = time.perf_counter() - started
    predictions = classify(classifier, images)
    vit = accuracy_of(predictions, labels)
    real = classifier_accuracy(classifier, *test)
    svc = svc_agreement(images, labels, train, test, predictions)
    gap = abs(vit["accuracy"] - svc["accuracy"]) * 100
    fid = classifier_fid(classifier, images, test[0])
    reference = classifier_fid(classifier, train[0], test[0])
    spread = diversity(images, labels, *test)
    copying = copy_ratio(images, train[0], test[0])
    seconds_16 = timing(pipe, TIMED_IMAGES, steps, sampler, guidance, seed)
    runs = (steps_sweep(pipe, classifier, sweep_per_class, DEFAULT_SWEEP, guidance, seed,
                        batch_size, progress) if sweep else None)

    targets = check_targets({"accuracy": vit["accuracy"], "svc_gap_points": gap,
                             "fid_ratio": fid / reference if reference > 0 else None,
                             "diversity_min_ratio": spread["min_ratio"],
                             "seconds_16": seconds_16})
    name = sampler_name(pipe, sampler)
    report = {
        "settings": {"per_class": per_class, "samples": len(labels), "steps": steps,
                     "sampler": name, "guidance": guidance, "seed": seed,
                     "batch_size": batch_size,
                     "sweep_per_class": sweep_per_class if sweep else None},
        "data": data.describe(),
        "accuracy": vit["accuracy"], "per_class_accuracy": vit["per_class"],
        "real_test_accuracy": real["accuracy"],
        "real_test_per_class_accuracy": real["per_class"],
        "svc": {"accuracy": svc["accuracy"], "per_class_accuracy": svc["per_class"],
                "real_test_accuracy": svc["real_test_accuracy"], "gap_points": gap,
                "agreement": svc["agreement"],
                "model": "sklearn.svm.SVC() (RBF) on the train split's flattened pixels"},
        "fid": {"generated_vs_test": fid, "train_vs_test": reference,
                "ratio": targets["fid_ratio"]["value"], "features": FEATURES,
                "sets": f"{len(images)} samples / {len(train[0])} train / {len(test[0])} test"},
        "diversity": spread,
        "copy_ratio": copying,
        "timing": {"images": TIMED_IMAGES, "seconds": seconds_16, "steps": steps,
                   "sampler": name, "guidance": guidance},
        "sweep": ({"per_class": sweep_per_class, "runs": runs} if runs is not None else None),
        "targets": targets,
        "passed": all(t["pass"] for t in targets.values()),
        "sampling_seconds": round(sampling_seconds, 3),
    }
    return DigitEvaluation(report, images, labels)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report in a few lines a person reads."""
    t, s = report["targets"], report["settings"]

    def verdict(name: str) -> str:
        return f"(target {t[name]['target']}: {'pass' if t[name]['pass'] else 'MISSED'})"

    svc, fid, div = report["svc"], report["fid"], report["diversity"]
    lines = [
        f"ViT reads {report['accuracy']:.2%} of {s['samples']} samples ({s['sampler']}, "
        f"{s['steps']} steps, guidance {s['guidance']:g}) as the class asked for "
        f"{verdict('accuracy')}; real test digits {report['real_test_accuracy']:.2%}",
        f"SVC reads {svc['accuracy']:.2%}: {svc['gap_points']:.1f} points from the ViT "
        f"{verdict('svc_gap_points')}; real test digits {svc['real_test_accuracy']:.2%}; "
        f"same class as the ViT on {svc['agreement']:.2%}",
        f"FID in ViT features: samples vs test {fid['generated_vs_test']:.3g}, train vs test "
        f"{fid['train_vs_test']:.3g}, ratio {_num(fid['ratio'])} {verdict('fid_ratio')}",
        f"diversity: lowest class {div['min_class']} at {_num(div['min_ratio'])} of the real "
        f"digits' spread {verdict('diversity_min_ratio')}",
        f"copying: the samples' median distance to their nearest training digit is "
        f"{report['copy_ratio']:.2f} of the test digits' (1: new digits; near 0: copies)",
        f"{report['timing']['images']} digits in {report['timing']['seconds']:.2f} s "
        f"{verdict('seconds_16')}",
    ]
    if report["sweep"] is not None:
        runs = ", ".join(f"{r['sampler']} {r['steps']}: {r['accuracy']:.1%}"
                         for r in report["sweep"]["runs"])
        lines.append(f"accuracy vs steps ({report['sweep']['per_class']} per class): {runs}")
    missed = [name for name, v in t.items() if not v["pass"]]
    lines.append("all targets met" if not missed else
                 f"{len(missed)} of {len(t)} targets missed: {', '.join(missed)}")
    return lines


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"
