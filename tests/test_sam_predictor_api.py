"""SamPredictor beyond parity: inputs of every kind, errors, embeddings saved and reused."""

import numpy as np
import pytest
import torch
from PIL import Image
from sam_helpers import small_sam

from attnvision.errors import UserError
from attnvision.sam import SamPredictor, build_sam


@pytest.fixture(scope="module")
def predictor():
    return SamPredictor(small_sam())


RGB = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)


def test_grayscale_rgba_bgr_and_paths_give_the_same_embedding_as_rgb(predictor, tmp_path):
    predictor.set_image(RGB)
    ref = predictor.get_image_embedding().clone()
    rgba = np.concatenate([RGB, np.full((90, 150, 1), 255, np.uint8)], axis=2)
    predictor.set_image(rgba)
    torch.testing.assert_close(predictor.get_image_embedding(), ref)
    predictor.set_image(np.ascontiguousarray(RGB[..., ::-1]), image_format="BGR")
    torch.testing.assert_close(predictor.get_image_embedding(), ref)
    Image.fromarray(RGB).save(tmp_path / "x.png")
    predictor.set_image(tmp_path / "x.png")
    torch.testing.assert_close(predictor.get_image_embedding(), ref)
    gray = RGB[..., 0]
    predictor.set_image(gray)
    assert predictor.original_size == (90, 150)


def test_exif_rotated_file_is_upright(predictor, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(RGB).save(tmp_path / "r.jpg", exif=exif)
    predictor.set_image(str(tmp_path / "r.jpg"))
    assert predictor.original_size == (150, 90)


@pytest.mark.parametrize("kwargs, message", [
    ({"point_coords": np.array([[200.0, 10.0]]), "point_labels": np.array([1])},
     "outside the 150x90 image"),
    ({"point_coords": np.array([[20.0, 10.0]])}, "needs point_labels"),
    ({"point_coords": np.array([[20.0, 10.0]]), "point_labels": np.array([1, 0])},
     "do not match"),
    ({"point_coords": np.array([[20.0, 10.0]]), "point_labels": np.array([5])},
     "must be 1 (foreground) or 0"),
    ({"box": np.array([100, 10, 20, 50])}, "x1 < x0"),
    ({"box": np.array([10, 10, 200, 50])}, "outside the 150x90 image"),
    ({"box": np.array([[10, 10, 40, 50]] * 2), "point_coords": np.ones((3, 1, 2)),
      "point_labels": np.ones((3, 1))}, "3 point sets and 2 boxes"),
    ({"mask_input": np.zeros((1, 30, 30))}, "mask_input must be (1, 64, 64)"),
])
def test_bad_prompts(predictor, kwargs, message):
    predictor.set_image(RGB)
    with pytest.raises(UserError) as e:
        predictor.predict(**kwargs)
    assert message in str(e.value)


def test_bad_images(predictor):
    with pytest.raises(UserError, match="uint8"):
        predictor.set_image(RGB.astype(np.float32))
    with pytest.raises(UserError, match="image not found"):
        predictor.set_image("/no/such/file.png")


def test_predict_before_set_image():
    model = build_sam("vit_b", img_size=256, embed_dim=32, depth=1, num_heads=1,
                      global_attn_indexes=(0,), window_size=4)
    with pytest.raises(RuntimeError, match="set_image"):
        SamPredictor(model).predict(box=np.array([0, 0, 5, 5]))


def test_saved_embedding_gives_the_same_masks_without_encoding(predictor, tmp_path):
    predictor.set_image(RGB)
    box = np.array([20, 10, 120, 80])
    masks, scores, _ = predictor.predict(box=box)
    path = predictor.save_embedding(tmp_path / "emb.safetensors")
    predictor.reset_image()
    encoder = predictor.model.image_encoder
    calls = []
    handle = encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        predictor.load_embedding(path)
        m2, s2, _ = predictor.predict(box=box)
    finally:
        handle.remove()
    assert calls == []  # the image was not encoded again
    np.testing.assert_array_equal(m2, masks)
    np.testing.assert_allclose(s2, scores)
    other = build_sam("vit_b", img_size=256, embed_dim=64, depth=2, num_heads=2,
                      global_attn_indexes=(1,), window_size=4)
    with pytest.raises(UserError, match="another model"):
        SamPredictor(other).load_embedding(path)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="not an embedding file"):
        predictor.load_embedding(tmp_path / "junk.safetensors")
