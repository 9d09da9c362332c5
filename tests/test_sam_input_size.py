"""A SAM run at another input size: resampled position weights (attnvision.sam.input_size)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sam_helpers import SMALL, small_sam_checkpoint

from attnvision.cli import main
from attnvision.errors import UserError
from attnvision.sam import SamPredictor, build_sam
from attnvision.sam.input_size import (
    POS_EMBED,
    fit_to_input_size,
    resample_pos_embed,
    resample_rel_pos,
)


def smooth(n: int, channels: int = 3) -> torch.Tensor:
    """(n, channels) samples of smooth functions at the centres of n cells of [0, 1]."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.stack([torch.sin(2 * t + k) for k in range(channels)], dim=1)


@settings(max_examples=25, deadline=None)
@given(old=st.integers(8, 24), new=st.integers(8, 48))
def test_positions_are_the_same_smooth_field_sampled_on_the_new_grid(old, new):
    # pos[y, x, c] = f_c(y) * g_c(x), sampled at cell centres: the resampled grid samples the
    # same functions at the new cell centres, to interpolation accuracy.
    fy, fx = smooth(old), smooth(old).flip(0)
    pos = (fy[:, None, :] * fx[None, :, :])[None].float()  # (1, old, old, 3)
    got = resample_pos_embed(pos, new)
    assert got.shape == (1, new, new, 3) and got.dtype == pos.dtype
    # g_c(1 - t) at the new centres: the new samples flipped (the centres are symmetric).
    gy, gx = smooth(new), smooth(new, 3).flip(0)
    want = (gy[:, None, :] * gx[None, :, :])[None].float()
    # Bicubic needs two old cells on each side: there it is accurate to about a hundredth;
    # nearer the rim the borders are clamped and it is looser.
    t = (torch.arange(new) + 0.5) / new
    inner = ((t >= 1.5 / old) & (t <= 1 - 1.5 / old)).nonzero()[:, 0]
    inside = got[:, inner][:, :, inner], want[:, inner][:, :, inner]
    torch.testing.assert_close(*inside, atol=0.02, rtol=0)
    assert (got - want).abs().max() < 0.15


def test_same_size_is_returned_unchanged():
    pos, table = torch.randn(1, 5, 5, 4), torch.randn(9, 4)
    assert resample_pos_embed(pos, 5) is pos and resample_rel_pos(table, 9) is table


@settings(max_examples=25, deadline=None)
@given(old=st.integers(4, 32), new=st.integers(4, 64))
def test_relative_tables_are_the_same_function_on_more_rows(old, new):
    # A smooth table of the offset, resampled, is the same function read at the new rows.
    rows_old, rows_new = 2 * old - 1, 2 * new - 1
    table = smooth(rows_old, 2).float()
    got = resample_rel_pos(table, rows_new)
    assert got.shape == (rows_new, 2)
    want = smooth(rows_new, 2).float()
    t = (torch.arange(rows_new) + 0.5) / rows_new
    inner = (t >= 0.5 / rows_old) & (t <= 1 - 0.5 / rows_old)  # between the old centres
    # Linear interpolation's error bound h^2 / 8 * max|f''|, here f'' = -4 sin(.)
    bound = (1 / rows_old) ** 2 / 8 * 4
    torch.testing.assert_close(got[inner], want[inner], atol=bound + 1e-5, rtol=0)


def test_only_grid_sized_weights_are_resampled():
    small = {k: tuple(v) if isinstance(v, list) else v for k, v in SMALL.items()}
    a = build_sam("vit_b", **small)  # 256 px: a 16 x 16 grid, windows of 4
    small["img_size"] = 384
    b = build_sam("vit_b", **small)
    old, new = a.state_dict(), b.state_dict()
    sd = fit_to_input_size(old, new)
    assert old[POS_EMBED].shape[1] == 16 and sd[POS_EMBED].shape[1] == 24
    for key, value in sd.items():
        assert value.shape == new[key].shape, key
        if not key.endswith(("pos_embed", "blocks.1.attn.rel_pos_h", "blocks.1.attn.rel_pos_w")):
            assert value is old[key], key  # windowed block 0 keeps its tables
    assert sd["image_encoder.blocks.1.attn.rel_pos_h"].shape[0] == 2 * 24 - 1
    assert sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[0] == 2 * 4 - 1


def test_a_checkpoint_runs_at_the_size_asked(tmp_path):
    path = small_sam_checkpoint(tmp_path / "small.safetensors")  # recorded: 256 px
    same = build_sam(None, path)
    larger = build_sam(None, path, img_size=320)
    assert same.img_size == 256 and larger.img_size == 320
    assert larger.build_options["img_size"] == 320  # what a file saved from it records
    for key, value in same.state_dict().items():  # every other weight is the file's
        if "pos_embed" not in key and "blocks.1.attn.rel_pos" not in key:
            assert torch.equal(value, larger.state_dict()[key]), key
    # The resampled model segments: masks at the image's size from its 20 x 20 grid.
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:150, 100:200] = 255
    predictor = SamPredictor(larger)
    predictor.set_image(image)
    assert predictor.features.shape[-2:] == (20, 20)
    masks, scores, _ = predictor.predict(point_coords=np.array([[150, 100]]),
                                         point_labels=np.array([1]))
    assert masks.shape == (3, 200, 300) and np.isfinite(scores).all()


def test_bad_sizes_and_other_widths_are_one_line_errors(tmp_path):
    path = small_sam_checkpoint(tmp_path / "small.safetensors")
    with pytest.raises(UserError, match="multiple of 16"):
        build_sam(None, path, img_size=300)
    # Another model's weights are not resampled into a fit: the key check names them.
    with pytest.raises(UserError, match="shape mismatches"):
        build_sam("vit_b", path, img_size=320, embed_dim=96, depth=2, num_heads=2,
                  global_attn_indexes=(1,), window_size=4)


def test_train_sam_fine_tunes_at_a_new_size(tmp_path, capsys):
    init = small_sam_checkpoint(tmp_path / "small.safetensors")
    out = tmp_path / "run"
    code = main(["train", "sam", "--init", str(init), "--img-size", "128", "--scenes", "2",
                 "--eval-scenes", "1", "--epochs", "1", "--batch-size", "2", "--rounds", "1",
                 "--out", str(out), "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    tuned = build_sam(None, result["files"]["checkpoint"])  # the file records 128 px
    assert tuned.img_size == 128 and tuned.state_dict()[POS_EMBED].shape[1] == 8


def grey_square() -> np.ndarray:
    """A 160 x 120 image: a grey square on black, one object to click."""
    image = np.zeros((120, 160, 3), np.uint8)
    image[30:90, 40:120] = 200
    return image


def test_embeddings_of_one_size_are_never_served_to_another(tmp_path):
    # The same weights at two sizes share every encoder weight the fingerprint reads, so the
    # size is part of it: a cache filled at 256 px misses at 320 instead of handing a 16 x 16
    # embedding to a model of a 20 x 20 grid.
    from attnvision.sam.embedding_cache import EmbeddingCache
    from attnvision.sam.predictor import model_fingerprint

    path = small_sam_checkpoint(tmp_path / "small.safetensors")
    same, larger = build_sam(None, path), build_sam(None, path, img_size=320)
    assert model_fingerprint(same) != model_fingerprint(larger)
    assert model_fingerprint(same) == model_fingerprint(build_sam(None, path))
    image = grey_square()
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.set_image(SamPredictor(same), image) is False  # computed and stored
    predictor = SamPredictor(larger)
    assert cache.set_image(predictor, image) is False  # another size: computed again
    assert predictor.features.shape[-2:] == (20, 20)
    assert cache.set_image(SamPredictor(larger), image) is True  # its own entry now


def test_segment_runs_a_checkpoint_at_the_size_asked(tmp_path, capsys):
    from PIL import Image

    path = small_sam_checkpoint(tmp_path / "small.safetensors")
    image = grey_square()
    Image.fromarray(image).save(tmp_path / "in.png")
    args = ["segment", str(tmp_path / "in.png"), "--checkpoint", str(path), "--point",
            "80,60", "--no-cache", "--json", "--quiet"]
    assert main([*args, "--img-size", "320", "--out", str(tmp_path / "a")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["img_size"] == 320 and len(result["masks"]) == 1
    assert main([*args, "--out", str(tmp_path / "b")]) == 0  # the file's own size
    assert json.loads(capsys.readouterr().out)["img_size"] == 256
    assert main([*args, "--img-size", "300", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "multiple of 16" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()  # nothing written for a bad size


def test_the_web_app_loads_a_checkpoint_at_the_size_asked(tmp_path):
    from attnvision.web.model import load_model

    path = small_sam_checkpoint(tmp_path / "small.safetensors")
    assert load_model(path, img_size=320).sam.img_size == 320
    assert load_model(path).sam.img_size == 256
    with pytest.raises(UserError, match="multiple of 16"):
        load_model(path, img_size=300)
