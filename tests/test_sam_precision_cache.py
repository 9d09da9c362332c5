"""SAM's precision option and the on-disk embedding cache, through the API and the CLI."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from sam_helpers import small_sam_checkpoint

from attnvision.cli import main
from attnvision.errors import UserError
from attnvision.sam import SamPredictor, build_sam
from attnvision.sam.embedding_cache import EmbeddingCache


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_sam_checkpoint(tmp_path_factory.mktemp("ckpt") / "sam_small.safetensors")


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((120, 160, 3), 30, np.uint8)
    img[20:80, 40:120] = (210, 80, 40)
    return img + rng.integers(0, 12, img.shape, dtype=np.uint8)


def test_bf16_masks_agree_with_fp32(checkpoint):
    image = _scene()
    results = {}
    for precision in ("fp32", "bf16"):
        predictor = SamPredictor(build_sam(None, checkpoint, precision=precision))
        predictor.set_image(image)
        embedding = predictor.get_image_embedding()
        masks, scores, logits = predictor.predict(point_coords=[[80, 50]], point_labels=[1])
        results[precision] = embedding.float(), masks, scores
        assert masks.dtype == bool and scores.dtype == np.float32
        assert logits.dtype == np.float32
    (e32, m32, s32), (e16, m16, s16) = results["fp32"], results["bf16"]
    assert ((e16 - e32).norm() / e32.norm()).item() < 0.02
    assert (m16 == m32).mean() >= 0.99
    np.testing.assert_allclose(s16, s32, atol=0.05)


def test_precision_is_checked(checkpoint):
    with pytest.raises(UserError, match="choose one of"):
        build_sam(None, checkpoint, precision="fp8")
    model = build_sam(None, checkpoint, precision="fp16")
    with pytest.raises(UserError, match="GPUs only"):
        SamPredictor(model).set_image(_scene())


def test_cache_hit_gives_the_same_embedding_without_encoding(checkpoint, tmp_path):
    model = build_sam(None, checkpoint)
    cache = EmbeddingCache(tmp_path / "cache")
    image = _scene()
    first = SamPredictor(model)
    assert cache.set_image(first, image) is False  # computed, then written
    assert len(list(cache.directory.glob("*.safetensors"))) == 1

    second = SamPredictor(model)
    calls = []
    handle = model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        assert cache.set_image(second, image) is True
    finally:
        handle.remove()
    assert calls == []  # the encoder did not run
    assert torch.equal(second.get_image_embedding(), first.get_image_embedding())
    assert second.original_size == first.original_size == (120, 160)
    a = first.predict(point_coords=[[80, 50]], point_labels=[1])
    b = second.predict(point_coords=[[80, 50]], point_labels=[1])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_key_follows_pixels_model_and_precision(checkpoint, tmp_path):
    cache = EmbeddingCache(tmp_path)
    p32 = SamPredictor(build_sam(None, checkpoint))
    image = _scene()
    other = image.copy()
    other[0, 0, 0] ^= 1  # one bit of one pixel
    assert cache.path_for(p32, image) == cache.path_for(p32, image.copy())
    assert cache.path_for(p32, image) != cache.path_for(p32, other)
    p16 = SamPredictor(build_sam(None, checkpoint, precision="bf16"))
    assert cache.path_for(p32, image) != cache.path_for(p16, image)
    changed = build_sam(None, checkpoint)
    with torch.no_grad():
        changed.image_encoder.patch_embed.proj.weight.add_(1e-3)
    assert cache.path_for(p32, image) != cache.path_for(SamPredictor(changed), image)


def test_corrupt_cache_file_is_recomputed(checkpoint, tmp_path):
    cache = EmbeddingCache(tmp_path)
    predictor = SamPredictor(build_sam(None, checkpoint))
    image = _scene()
    path = cache.path_for(predictor, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a safetensors file")
    assert cache.set_image(predictor, image) is False
    assert path.stat().st_size > 1000  # rewritten with the real embedding
    assert cache.set_image(SamPredictor(predictor.model), image) is True


def test_cache_keeps_under_its_size_by_dropping_the_oldest(checkpoint, tmp_path):
    model = build_sam(None, checkpoint)
    cache = EmbeddingCache(tmp_path)
    paths = []
    for seed in range(3):
        image = _scene(seed)
        predictor = SamPredictor(model)
        cache.set_image(predictor, image)
        paths.append(cache.path_for(predictor, image))
        os.utime(paths[-1], (seed, seed))  # distinct ages, oldest first
    size = paths[0].stat().st_size
    cache.max_bytes = 2 * size
    cache.prune()
    assert [p.exists() for p in paths] == [False, True, True]


def test_segment_twice_reads_the_cache(checkpoint, tmp_path, capsys):
    image = tmp_path / "scene.png"
    Image.fromarray(_scene()).save(image)
    runs = []
    for _ in range(2):
        code = main(["segment", str(image), "--checkpoint", str(checkpoint), "--point", "80,50",
                     "--out", str(tmp_path / "out"), "--json", "--quiet"])
        assert code == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert [r["embedding"] for r in runs] == ["computed", "cache"]
    assert runs[0]["masks"] == runs[1]["masks"]
    cache_dir = os.environ["ATTNVISION_CACHE"]
    assert list((tmp_path.parent / cache_dir).glob("embeddings/*.safetensors"))

    code = main(["segment", str(image), "--checkpoint", str(checkpoint), "--point", "80,50",
                 "--out", str(tmp_path / "out"), "--json", "--quiet", "--no-cache",
                 "--precision", "bf16"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["embedding"] == "computed" and result["precision"] == "bf16"
