"""SAM training: COCO reading (against pycocotools), box corners as points, the simulated
interactive step, and ``attnvision train sam`` / ``eval sam`` end to end on tiny data."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from attnvision.cli import main
from attnvision.data.coco import polygons_to_mask, read_coco, segmentation_to_mask
from attnvision.errors import UserError
from attnvision.sam import build_sam
from attnvision.sam.evaluation import interior_point, iou
from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam.training import InteractiveSam, first_prompts
from attnvision.sam.training_data import CocoDataset, SceneAugment, SceneDataset, to_square
from attnvision.train.mask_losses import sam_loss

pycocotools_mask = pytest.importorskip("pycocotools.mask")


# --- COCO --------------------------------------------------------------------------------------


def _ellipse(h: int, w: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    ys, xs = np.mgrid[:h, :w]
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1


def test_rle_decoding_matches_pycocotools_exactly():
    mask = _ellipse(37, 53, 20, 15, 12, 9) | _ellipse(37, 53, 45, 30, 6, 5)
    compressed = pycocotools_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode()
    assert (segmentation_to_mask(compressed, 37, 53) == mask).all()
    # The uncompressed form: column-major runs, zeros first.
    flat = mask.T.reshape(-1)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat.astype(int), -1]) != 0))
    counts = ([0] if flat[0] else []) + runs.tolist()
    uncompressed = {"size": [37, 53], "counts": counts}
    assert (segmentation_to_mask(uncompressed, 37, 53) == mask).all()
    assert (pycocotools_mask.decode(pycocotools_mask.frPyObjects(uncompressed, 37, 53))
            == mask).all()


def test_polygons_rasterise_as_pycocotools_does():
    polygons = [[10.0, 5.0, 40.5, 8.0, 35.0, 30.0, 12.0, 25.5], [45, 40, 55, 40, 50, 52]]
    ours = polygons_to_mask(polygons, 60, 70)
    rles = pycocotools_mask.frPyObjects(polygons, 60, 70)
    theirs = pycocotools_mask.decode(pycocotools_mask.merge(rles)).astype(bool)
    assert iou(ours, theirs) > 0.9
    # Where they differ, it is on the boundary: one pixel from the other's edge.
    from scipy import ndimage
    edge = ndimage.binary_dilation(theirs) & ~ndimage.binary_erosion(theirs)
    assert (ours ^ theirs)[~edge].sum() == 0


def write_coco(folder, n_images: int = 3, size: tuple[int, int] = (48, 64)) -> tuple:
    """Images of ellipses on noise with polygon and RLE annotations, a crowd region too."""
    rng = np.random.default_rng(0)
    h, w = size
    images, annotations, truths = [], [], []
    for i in range(n_images):
        image = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
        a = _ellipse(h, w, 18 + i, 20, 10, 8)
        b = np.zeros((h, w), bool)
        b[30:44, 38:60] = True
        image[a] = (220, 40, 40)
        image[b] = (40, 200, 60)
        Image.fromarray(image).save(folder / f"img{i}.png")
        images.append({"id": i + 1, "file_name": f"img{i}.png", "height": h, "width": w})
        rle = pycocotools_mask.encode(np.asfortranarray(a.astype(np.uint8)))
        annotations.append({"id": 10 * i + 1, "image_id": i + 1, "iscrowd": 0,
                            "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}})
        annotations.append({"id": 10 * i + 2, "image_id": i + 1, "iscrowd": 0,
                            "segmentation": [[38, 30, 59, 30, 59, 43, 38, 43]]})
        annotations.append({"id": 10 * i + 3, "image_id": i + 1, "iscrowd": 1,
                            "segmentation": {"size": [h, w], "counts": [0, h * w]}})
        truths.append((a, b))
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "thing"}]}))
    return path, truths


def test_coco_dataset_reads_masks_at_the_model_size(tmp_path):
    path, truths = write_coco(tmp_path)
    records = read_coco(path)
    assert len(records) == 3 and all(len(r.segmentations) == 2 for r in records)  # no crowd
    data = CocoDataset(path, None, size=32, max_masks=4)
    inputs, targets = data[0]
    image, masks = inputs["image"], inputs["masks"]
    assert inputs["size"].tolist() == [24, 32]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert masks.shape == (4, 32, 32) and torch.equal(masks, targets)
    assert masks[:2].flatten(1).any(1).all() and not masks[2:].any()  # 2 objects, 2 empty
    assert not image[:, 24:].any() and not masks[:, 24:].any()  # 48x64 -> 24x32, padded
    # Largest first (the 14x22 box, then the ellipse); each resized as the image is.
    ellipse = torch.from_numpy(np.asarray(Image.fromarray(truths[0][0].astype(np.uint8) * 255)
                                          .resize((32, 24), Image.NEAREST)) > 127)
    assert torch.equal(masks[1, :24, :32], ellipse)
    _, objects = data.raw(0)
    assert (objects[0][0] == truths[0][0]).all()


def test_coco_mistakes_are_one_line_errors(tmp_path):
    path, _ = write_coco(tmp_path, n_images=1)
    with pytest.raises(UserError, match="not found"):
        read_coco(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_coco(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="needs 'images' and 'annotations'"):
        read_coco(bad)
    with pytest.raises(UserError, match="pass the images folder"):
        read_coco(path, images=tmp_path / "elsewhere")


def test_to_square_keeps_the_largest_objects():
    image = np.zeros((20, 10, 3), np.uint8)
    masks = np.zeros((3, 20, 10), bool)
    masks[0, :2, :2] = True
    masks[1, 5:15, :] = True
    masks[2, 0, 0] = True  # one pixel: the smallest, left out
    out, kept, index = to_square(image, masks, 10, max_masks=2)
    assert out.shape == (3, 10, 10) and kept.shape == (2, 10, 10)
    assert index == [1, 0]  # largest first: the band, then the corner square
    assert kept[0].sum() > kept[1].sum()


# --- the training step -------------------------------------------------------------------------


def test_box_corners_given_as_points_embed_as_a_box():
    torch.manual_seed(0)
    encoder = PromptEncoder(embed_dim=32, image_embedding_size=(8, 8),
                            input_image_size=(128, 128))
    boxes = torch.tensor([[10.0, 20.0, 90.0, 70.0], [0.0, 5.0, 127.0, 100.0]])
    as_box, _ = encoder(None, boxes, None)
    as_points, _ = encoder((boxes.view(2, 2, 2), torch.tensor([[2, 3], [2, 3]])), None, None,
                           pad=False)
    torch.testing.assert_close(as_points, as_box)


def test_first_prompts_are_points_inside_or_noisy_boxes():
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 10:25] = True
    coords, labels = first_prompts(masks, torch.tensor([True, False, True, False]))
    assert labels.tolist() == [[2, 3], [1, -1], [2, 3], [1, -1]]
    for i in (1, 3):
        x, y = coords[i, 0].long().tolist()
        assert masks[i, y, x]
    for i in (0, 2):
        x0, y0, x1, y1 = coords[i].reshape(4).tolist()
        assert x0 <= x1 and y0 <= y1 and abs(x0 - 10) <= 20 and abs(y1 - 19) <= 20


def test_sam_loss_answers_only_with_the_allowed_candidates():
    targets = torch.zeros(2, 8, 8)
    targets[:, 2:6, 2:6] = 1
    perfect = torch.where(targets.bool(), 9.0, -9.0)
    logits = torch.stack([perfect, -perfect, -perfect, perfect], dim=1)
    allowed = torch.tensor([[True, False, False, False], [False, True, True, False]])
    _, parts = sam_loss(logits, torch.zeros(2, 4), targets, allowed)
    assert parts["best"].tolist() == [0, 1]  # row 1 may not pick the perfect 4th mask
    assert parts["iou"].tolist() == [1.0, 0.0]


def tiny_batch(n: int = 2, size: int = 64) -> dict[str, torch.Tensor]:
    masks = torch.zeros(n, 3, size, size, dtype=torch.bool)
    images = torch.full((n, 3, size, size), 30, dtype=torch.uint8)
    for i in range(n):
        masks[i, 0, 8:30, 10 + i:40] = True
        masks[i, 1, 40:60, 5:25] = True  # the third row stays empty: padding
        images[i, :, 8:30, 10 + i:40] = 220
        images[i, 0, 40:60, 5:25] = 250
    return {"image": images, "masks": masks, "size": torch.tensor([[size, size]] * n)}


def small_model(img_size: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam("sam_tiny", img_size=img_size, embed_dim=32, depth=2, num_heads=2,
                     global_attn_indexes=(1,), window_size=2)


def test_interactive_step_learns_every_trained_part_and_replays():
    sam = small_model()
    net = InteractiveSam(sam, rounds=3)
    batch = tiny_batch()
    torch.manual_seed(5)
    loss = net(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert net.last["objects"] == 4 and "iou_round3" in net.last
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name  # every parameter is in the graph (DDP needs it)
    torch.manual_seed(5)
    assert net(batch).item() == loss.item()  # prompts come from the seeded global generator


def test_a_frozen_encoder_gets_no_gradient_and_the_decoder_learns():
    sam = small_model()
    sam.image_encoder.requires_grad_(False)
    net = InteractiveSam(sam, rounds=2)
    batch = tiny_batch()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    before = {k: v.clone() for k, v in sam.image_encoder.state_dict().items()}
    losses = []
    for _ in range(25):
        loss = net(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is None for p in sam.image_encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in sam.image_encoder.state_dict().items())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_scene_augment_flips_image_and_masks_together():
    batch = tiny_batch(4)
    images, masks = batch["image"], batch["masks"]
    gen = torch.Generator().manual_seed(0)
    out = SceneAugment(grey=0.0, brightness=0.0, contrast=0.0)(batch, gen)
    bright = out["image"][:, 0] > 100  # the objects, wherever they went
    assert torch.equal(bright, out["masks"][:, :2].any(1))
    assert not torch.equal(out["masks"], masks)  # some flips happened with this seed
    still = SceneAugment(flips=False, grey=0.0, brightness=0.0, contrast=0.0)(batch, gen)
    assert torch.equal(still["masks"], masks) and torch.equal(still["image"], images)
    assert torch.equal(still["size"], batch["size"])


def test_padding_is_zero_after_normalisation_and_never_clicked():
    """A non-square image: the encoder sees 0 in the padding, as Sam.preprocess pads, and no
    simulated click lands there."""
    sam = small_model()
    net = InteractiveSam(sam, rounds=3)
    batch = tiny_batch()
    batch["size"] = torch.tensor([[64, 40], [64, 40]])
    seen = []
    sam.image_encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    clicks = []
    original = sam.prompt_encoder.forward

    def spy(points, *args, **kwargs):
        if points is not None:
            clicks.append(points[0].clone())
        return original(points, *args, **kwargs)

    sam.prompt_encoder.forward = spy
    net(batch)
    assert (seen[0][..., 40:] == 0).all() and (seen[0][..., :40] != 0).any()
    later = torch.cat([c[:, :-2].reshape(-1, 2) for c in clicks[1:]])  # the added clicks
    assert (later[:, 0] < 40).all()


# --- evaluation helpers -------------------------------------------------------------------------


def test_interior_point_is_the_farthest_from_the_boundary():
    mask = np.zeros((30, 40), bool)
    mask[5:25, 2:12] = True  # a 20x10 bar...
    mask[10:21, 24:35] = True  # ...and an 11x11 square: its centre is deepest
    x, y = interior_point(mask)
    assert (x, y) == (29, 15)


def test_spread_clicks_lie_deep_inside_and_far_apart():
    from scipy import ndimage

    from attnvision.sam.evaluation import horse_clicks, horse_truth, spread_clicks

    mask = np.zeros((60, 100), bool)
    mask[10:50, 5:95] = True  # a 40 x 90 bar: 8 px inside leaves 24 x 74
    clicks = spread_clicks(mask, 4, margin=8)
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    assert tuple(clicks[0]) == interior_point(mask)  # the deepest first
    assert all(depth[int(y), int(x)] >= 8 for x, y in clicks)
    # Each next click is the deep pixel farthest from the clicks before it (brute force).
    ys, xs = np.nonzero(depth >= 8)
    deep = np.stack([xs, ys], 1).astype(float)
    for k in range(1, 4):
        gaps = np.min([np.linalg.norm(deep - c, axis=1) for c in clicks[:k]], axis=0)
        assert np.linalg.norm(deep[np.argmax(gaps)] - clicks[k]) == 0
    with pytest.raises(ValueError, match="fewer than 2"):
        spread_clicks(mask[:18], 2, margin=8)
    _, horse = horse_truth()
    clicks = horse_clicks(horse)
    assert len(clicks) == 8 and len({tuple(c) for c in clicks.tolist()}) == 8


# --- the commands -------------------------------------------------------------------------------


def official_style_checkpoint(path, sam) -> None:
    """A plain state dict in a .pth file, as the official checkpoints are."""
    torch.save(sam.state_dict(), path)


def run_json(argv, capsys) -> tuple[int, dict]:
    code = main([*argv, "--json", "--quiet"])
    return code, json.loads(capsys.readouterr().out)


def test_fine_tune_an_official_style_checkpoint_on_coco(tmp_path, capsys):
    annotations, _ = write_coco(tmp_path)
    init = tmp_path / "sam_tiny_official.pth"
    official_style_checkpoint(init, build_sam("sam_tiny"))
    out = tmp_path / "run"
    argv = ["train", "sam", "--coco", str(annotations), "--val-coco", str(annotations),
            "--init", str(init), "--model", "sam_tiny", "--freeze", "image_encoder",
            "--epochs", "1", "--batch-size", "2", "--rounds", "2", "--out", str(out)]
    code, result = run_json(argv, capsys)
    assert code == 0
    assert result["frozen"] == ["image_encoder"] and result["model"] == "sam_tiny"
    assert result["eval"]["objects"] == 6 and 0 <= result["eval"]["miou"] <= 1
    tuned = build_sam(None, result["files"]["checkpoint"])  # self-describing: no --model
    start = build_sam("sam_tiny", init)
    for part, same in (("image_encoder", True), ("mask_decoder", False)):
        a, b = getattr(tuned, part).state_dict(), getattr(start, part).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a) is same, part
    assert (out / "train_state.pt").exists() and (out / "best.safetensors").exists()
    code, again = run_json(argv, capsys)  # resumes: the epoch is done, nothing changes
    assert code == 0 and again["epochs"] == 1
    code = main([*argv[:-6], "--rounds", "3", "--out", str(out)])  # another recipe, same --out
    assert code == 2 and "other SAM settings (rounds 2 -> 3)" in capsys.readouterr().err


def test_train_sam_from_scratch_on_synthetic_scenes(tmp_path, capsys):
    out = tmp_path / "scratch"
    code, result = run_json(["train", "sam", "--scenes", "4", "--first-scene", "100",
                             "--eval-scenes", "1", "--epochs", "1", "--batch-size", "2",
                             "--rounds", "2", "--out", str(out),
                             "--export", str(tmp_path / "half.safetensors")], capsys)
    assert code == 0 and result["model"] == "sam_tiny" and result["frozen"] == []
    assert result["data"].startswith("4 (100-103) synthetic scenes")
    assert result["parameters_trained"] > 5_000_000
    full = build_sam(None, result["files"]["best"])
    assert full.img_size == 256
    # The float16 export: parameters in float16 (half the bytes), buffers (the positional
    # encoding's Gaussian frequencies) kept in float32; the same model to float16 rounding.
    from safetensors import safe_open
    params = {name for name, _ in full.named_parameters()}
    with safe_open(result["files"]["export"], "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert {dtypes[k] for k in params} == {"F16"}
    assert dtypes["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] == "F32"
    half_size = (tmp_path / "half.safetensors").stat().st_size
    assert half_size < 0.51 * (out / "best.safetensors").stat().st_size
    half = build_sam(None, result["files"]["export"])
    for (k, a), b in zip(full.state_dict().items(), half.state_dict().values(), strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=1e-3, rtol=1e-3, msg=k)


@pytest.mark.parametrize("argv, message", [
    (["--freeze", "decoder"], "unknown part 'decoder'"),
    (["--freeze", "image_encoder,prompt_encoder,mask_decoder"], "leaves nothing to train"),
    (["--coco", "missing.json"], "COCO annotations not found"),
    (["--epochs", "0"], "must be >= 1"),
    (["--first-scene", "-1"], "--first-scene >= 0"),
    (["--img-size", "100", "--scenes", "1"], "a multiple of 16"),
    (["--scene-style", "standard=0.5,repeated=0.2", "--scenes", "1"], "sum to 1"),
])
def test_train_sam_bad_input_exits_2(tmp_path, capsys, argv, message):
    code = main(["train", "sam", "--out", str(tmp_path / "o"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_scene_dataset_examples_are_model_ready():
    data = SceneDataset("test", 64, 3)
    inputs, targets = data[1]
    image, masks = inputs["image"], inputs["masks"]
    assert image.shape == (3, 64, 64) and masks.shape == (6, 64, 64)
    assert torch.equal(targets, masks) and inputs["size"].tolist() == [64, 64]
    image_raw, objects = data.raw(1)
    assert image_raw.shape == (64, 64, 3) and len(objects) == int(masks.flatten(1).any(1).sum())
