import numpy as np
import torch

from attnvision.vit import create_model
from attnvision.vit.explain import attention_rollout, explain
from attnvision.vit.preprocess import normalize_digit, preprocess


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(5).expand(2, 5, 5))


def test_rollout_is_the_product_of_residual_averaged_maps():
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(1, 4, 6, 6, generator=gen).softmax(-1) for _ in range(3)]
    expected = torch.eye(6)
    for a in maps:
        m = 0.5 * a[0].mean(0) + 0.5 * torch.eye(6)
        expected = (m / m.sum(-1, keepdim=True)) @ expected
    got = attention_rollout(maps)
    torch.testing.assert_close(got[0], expected)
    torch.testing.assert_close(got.sum(-1), torch.ones(1, 6))


def test_explain_shapes_and_probabilities():
    model = create_model("vit_mnist", depth=2).eval()
    e = explain(model, torch.rand(3, 1, 28, 28))
    assert e.probabilities.shape == (3, 10)
    torch.testing.assert_close(e.probabilities.sum(-1), torch.ones(3))
    assert e.rollout.shape == (3, 4, 4) and e.cls_attention.shape == (3, 4, 4, 4)  # 7 px patches
    assert torch.all(e.rollout >= 0) and torch.all(e.rollout.sum((1, 2)) <= 1 + 1e-5)


def test_digit_normalisation_inverts_crops_and_centres():
    page = np.full((100, 60), 1.0, dtype=np.float32)  # white paper
    page[10:50, 5:15] = 0.0  # a dark vertical stroke, off-centre
    out = normalize_digit(page, 28, 20)
    assert out.shape == (28, 28)
    assert out.max() == 1.0 and out[0].max() == 0 and out[:, 0].max() == 0  # bright on dark
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() - rows.min() + 1 == 20  # the long side fills the 20 px box
    assert abs(rows.mean() - 13.5) <= 1 and abs(cols.mean() - 13.5) <= 1  # centred


def test_preprocess_rgb_is_timm_eval_transform_shape_and_range():
    model = create_model("vit_tiny")
    img = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    x = preprocess(img, model.config)
    assert x.shape == (1, 3, 224, 224)
    assert -1.0 <= x.min() and x.max() <= 1.0  # mean = std = 0.5
