"""The demo's generation pictures, drawn with a tiny random model of the shipped digits'
shapes (28 x 28 grayscale): each is a PNG of the layout it promises."""

import numpy as np
import pytest
import torch
from diffusion_helpers import CLASSES, small_digits_pipeline
from PIL import Image

from attnvision.viz.diffusion_figures import (
    class_grid_picture,
    forward_reverse_picture,
    guidance_picture,
    same_noise_picture,
)


@pytest.fixture(scope="module")
def pipe():
    return small_digits_pipeline()


def read(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("L"))


def test_class_grid_has_a_row_per_class(pipe, tmp_path):
    grid = read(class_grid_picture(pipe, tmp_path / "grid.png", per_class=3, steps=2))
    scale = 64 // 28  # tiles are drawn 2x
    assert grid.shape == (CLASSES * 30 * scale + 2 * scale, 3 * 30 * scale + 2 * scale)


def test_same_noise_columns_share_their_noise(pipe, tmp_path):
    """Rows differ only by class: with the label ignored (guidance 1 and a model whose class
    table is zero), every row would be the same; with it, they are not."""
    path = same_noise_picture(pipe, tmp_path / "same.png", samples=2, steps=2)
    grid = read(path).astype(int)
    tile = 30 * (64 // 28)
    rows = [grid[r * tile + 4:(r + 1) * tile, :] for r in range(CLASSES)]
    assert any(np.abs(rows[0] - r).max() > 0 for r in rows[1:])
    with torch.no_grad():
        pipe.transformer.y_embedder.embedding_table.weight.zero_()
    try:
        flat = read(same_noise_picture(pipe, tmp_path / "flat.png", samples=2, steps=2,
                                       guidance=1.0)).astype(int)
    finally:
        small = small_digits_pipeline()
        pipe.transformer.load_state_dict(small.transformer.state_dict())
    rows = [flat[r * tile + 4:(r + 1) * tile, :] for r in range(CLASSES)]
    assert all(np.abs(rows[0] - r).max() == 0 for r in rows[1:])


def test_guidance_and_forward_reverse_pictures(pipe, tmp_path):
    picture = read(guidance_picture(pipe, tmp_path / "guidance.png", samples=3, steps=2))
    assert picture.shape[0] > 200 and picture.std() > 5
    digit = torch.rand(1, 28, 28)
    picture = read(forward_reverse_picture(pipe, digit, 3, tmp_path / "fr.png", steps=4))
    assert picture.shape[1] > 600 and picture.std() > 5
