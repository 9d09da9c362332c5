import numpy as np
import pytest
import torch
from PIL import Image

from attnvision.data import load_image, sample_image, to_tensor
from attnvision.errors import UserError


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 200)
        assert img.mode == "I;16"
    else:
        img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("I;16", "CMYK") else "x.png")
    img.save(path)
    out = load_image(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert (load_image(tmp_path / "t.png") == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (40, 20, 3)


def test_corrupt_and_truncated_files(tmp_path):
    Image.new("RGB", (64, 64), (10, 200, 30)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_image(tmp_path / "trunc.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(UserError, match="not an image file"):
        load_image(tmp_path / "text.jpg")
    with pytest.raises(UserError, match="is a folder"):
        load_image(tmp_path)


def test_sample_image_and_tensor():
    img = sample_image()
    assert img.shape == (256, 256, 3)
    t = to_tensor(img)
    assert t.shape == (1, 3, 256, 256) and 0 <= t.min() and t.max() <= 1
    assert torch.isclose(t[0, :, 5, 7] * 255, torch.tensor(img[5, 7], dtype=torch.float32)).all()
    with pytest.raises(UserError, match="unknown sample image"):
        sample_image("nope")
