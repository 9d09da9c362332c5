"""The text locator (where a phrase points, the first mask prompt of a text prompt) and
training on embeddings encoded once."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from attnvision.cli import main
from attnvision.sam import SamPredictor, build_sam
from attnvision.sam.text_locator import TextLocator, peak_click
from attnvision.sam.training import InteractiveSam, locator_loss
from attnvision.sam.training_data import EncodedDataset, SceneDataset

TEXT_DIM = 384  # MiniLM's width; these tests need no sentence encoder


def small_text_model(img_size: int = 64):
    torch.manual_seed(0)
    return build_sam("sam_tiny", img_size=img_size, embed_dim=32, depth=2, num_heads=2,
                     global_attn_indexes=(1,), window_size=2, text_dim=TEXT_DIM)


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 3), grid=st.integers(2, 9), hidden=st.sampled_from([8, 16]))
def test_locator_scores_every_cell_per_phrase(b, grid, hidden):
    torch.manual_seed(0)
    locator = TextLocator(embed_dim=16, text_dim=12, hidden=hidden)
    emb, text = torch.randn(b, 16, grid, grid), torch.randn(b, 12)
    pe = torch.randn(1, 16, grid, grid)
    out = locator(emb, pe, text)
    assert out.shape == (b, 1, grid, grid)
    # One image, many phrases: the image broadcasts, and each phrase scores alone.
    shared = locator(emb[:1], pe, text)
    torch.testing.assert_close(shared[0], locator(emb[:1], pe, text[:1])[0])
    if b > 1:
        assert not torch.allclose(shared[0], shared[1])


def test_locator_learns_which_region_a_phrase_names():
    # Two "phrases" name two kinds of cells, told apart by one embedding channel; neither is
    # visible from the phrase or the image alone, only from both.
    torch.manual_seed(0)
    locator = TextLocator(embed_dim=8, text_dim=4, hidden=32)
    phrases = torch.eye(4)[:2]
    opt = torch.optim.Adam(locator.parameters(), lr=3e-3)
    pe = torch.zeros(1, 8, 8, 8)

    def batch(n: int):
        emb = torch.randn(n, 8, 8, 8)
        which = torch.randint(2, (n,))
        target = torch.where(which[:, None, None] == 0, emb[:, 0] > 0.5, emb[:, 1] > 0.5)
        return emb, phrases[which], target

    for _ in range(300):
        emb, text, target = batch(32)
        loss = locator_loss(locator(emb, pe, text)[:, 0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    emb, text, target = batch(64)
    with torch.no_grad():
        found = locator(emb, pe, text)[:, 0] > 0
    iou = ((found & target).sum() / (found | target).sum()).item()
    assert iou > 0.8, iou


def test_a_phrase_alone_is_a_click_at_its_peak_with_its_map_as_the_mask_prompt():
    sam = small_text_model()
    predictor = SamPredictor(sam)
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))
    text = torch.randn(2, TEXT_DIM)
    located = sam.prompt_encoder.locate_text(predictor.features, text)
    assert located.shape == (2, 1, 16, 16)
    _, _, by_text = predictor.predict_torch(None, None, text_embeddings=text,
                                            multimask_output=False)
    coords, labels = peak_click(located, predictor.input_size, sam.img_size)
    _, _, explicit = predictor.predict_torch(coords, labels, mask_input=located,
                                             text_embeddings=text, multimask_output=False)
    torch.testing.assert_close(by_text, explicit)
    # With a click of the user's, the phrase adds its map but no click of its own.
    click = torch.tensor([[[10.0, 20.0]]]).expand(2, 1, 2)
    ones = torch.ones(2, 1, dtype=torch.int)
    _, _, with_click = predictor.predict_torch(click, ones, text_embeddings=text,
                                               multimask_output=False)
    _, _, expected = predictor.predict_torch(click, ones, mask_input=located,
                                             text_embeddings=text, multimask_output=False)
    torch.testing.assert_close(with_click, expected)
    # A mask given by the user takes the map's place, and the phrase adds no click to it.
    mine = torch.randn(2, 1, 16, 16)
    _, _, given_mask = predictor.predict_torch(None, None, mask_input=mine,
                                               text_embeddings=text, multimask_output=False)
    sparse, dense = sam.prompt_encoder(None, None, mine, text=text)
    low, _ = sam.mask_decoder(predictor.features, sam.prompt_encoder.get_dense_pe(), sparse,
                              dense, multimask_output=False)
    torch.testing.assert_close(given_mask, low)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_peak_click_is_the_centre_of_the_strongest_cell_inside_the_image(h, w, seed):
    located = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    coords, labels = peak_click(located, (h, w), img_size=64)  # 4-pixel cells
    assert coords.shape == (3, 1, 2) and labels.tolist() == [[1]] * 3
    for i in range(3):
        x, y = coords[i, 0].tolist()
        col, row = int((x + 0.5) // 4), int((y + 0.5) // 4)
        assert 0 <= x <= w - 1 and 0 <= y <= h - 1  # a pixel of the image
        # The centre of a cell overlapping the image, or the image's border within that cell.
        assert (x + 0.5) % 4 == 2 or x == w - 1
        assert (y + 0.5) % 4 == 2 or y == h - 1
        assert row * 4 < h and col * 4 < w
        inside = located[i, 0, : -(-h // 4), : -(-w // 4)]
        assert located[i, 0, row, col] == inside.max()


def test_text_step_trains_the_locator(monkeypatch):
    sam = small_text_model()
    net = InteractiveSam(sam, rounds=2, text_share=1.0)
    monkeypatch.setattr(net, "_text", lambda b, k, t, a: (torch.randn(len(b), TEXT_DIM),
                                                          torch.ones(len(b), dtype=torch.bool)))
    data = SceneDataset("train", 64, 2, attributes=True)
    loss = net(default_collate([data[i][0] for i in range(2)]))
    loss.backward()
    assert 0 <= net.last["iou_located"] <= 1
    assert sam.prompt_encoder.text_locator.image_proj.weight.grad.abs().sum() > 0
    assert sam.prompt_encoder.text_projection[1].weight.grad.abs().sum() > 0


def test_a_step_on_stored_embeddings_is_the_step_on_images():
    sam = small_text_model()
    sam.image_encoder.requires_grad_(False)
    data = SceneDataset("train", 64, 3, attributes=True)
    encoded = EncodedDataset(data, sam.image_encoder, sam.pixel_mean, sam.pixel_std,
                             batch_size=2, progress=False)
    assert len(encoded) == 3
    for i in range(3):
        inputs, masks = encoded[i]
        assert torch.equal(masks, data[i][1]) and torch.equal(inputs["masks"], masks)
        assert "image" not in inputs and inputs["embeddings"].dtype == torch.float16
    net = InteractiveSam(sam, rounds=2)
    losses = []
    for batch in (default_collate([data[i][0] for i in range(3)]),
                  default_collate([encoded[i][0] for i in range(3)])):
        torch.manual_seed(1)  # the same prompts for both
        losses.append(net(batch))
    torch.testing.assert_close(losses[0], losses[1], rtol=2e-3, atol=2e-3)  # float16 storage


def test_stored_embeddings_refuse_a_trained_encoder():
    sam = small_text_model()
    data = SceneDataset("train", 64, 1)
    encoded = EncodedDataset(data, sam.image_encoder, sam.pixel_mean, sam.pixel_std,
                             progress=False)
    with pytest.raises(ValueError, match="freeze it"):
        InteractiveSam(sam)(default_collate([encoded[0][0]]))


def test_encode_once_needs_a_frozen_encoder(tmp_path, capsys):
    code = main(["train", "sam", "--encode-once", "--scenes", "2", "--epochs", "1",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--freeze image_encoder" in err[-1]
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_train_with_encode_once_end_to_end(tmp_path, capsys):
    from attnvision.sam.checkpoints import save_sam

    torch.manual_seed(0)
    plain = build_sam("sam_tiny", img_size=64, embed_dim=32, depth=2, num_heads=2,
                      global_attn_indexes=(1,), window_size=2)
    base = save_sam(plain, tmp_path / "base.safetensors", "sam_tiny",
                    build={"img_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2,
                           "global_attn_indexes": [1], "window_size": 2})
    code = main(["train", "sam", "--init", str(base), "--freeze", "image_encoder",
                 "--encode-once", "--scenes", "4", "--eval-scenes", "1", "--epochs", "1",
                 "--batch-size", "2", "--rounds", "2", "--out", str(tmp_path / "run"),
                 "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["epochs"] == 1
    assert json.loads((tmp_path / "run" / "model.json").read_text())["metadata"]["encode_once"]


def test_locator_loss_is_bce_plus_dice():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    target = torch.tensor([[[True, False], [True, False]]])
    p = logits.sigmoid()
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    expected = F.binary_cross_entropy_with_logits(logits, target.float()) + dice
    torch.testing.assert_close(locator_loss(logits, target), expected)


def test_heat_overlay_glows_where_the_map_is_high():
    from attnvision.viz.overlays import heat_overlay

    image = np.full((4, 6, 3), 100, np.uint8)
    heat = np.zeros((4, 6))
    heat[1, 2] = 1.0
    heat[3, 5] = 0.5
    out = np.asarray(heat_overlay(image, heat, colour=(255, 0, 0)))
    assert out.shape == (4, 6, 3)
    assert tuple(out[1, 2]) == (255, 0, 0) and tuple(out[0, 0]) == (60, 60, 60)
    assert tuple(out[3, 5]) == (158, 30, 30)  # halfway between grey 60 and red


def test_a_step_without_sizes_takes_every_image_as_whole():
    sam = small_text_model()
    data = SceneDataset("train", 64, 2)
    batch = default_collate([data[i][0] for i in range(2)])
    del batch["size"]
    assert torch.isfinite(InteractiveSam(sam, rounds=1)(batch))


def test_low_precision_keeps_the_locator_scores_in_float32():
    sam = small_text_model()
    emb = torch.randn(1, 256, 4, 4)  # the small model's 64 px input, 16 px patches
    with torch.autocast("cpu", dtype=torch.bfloat16):
        located = sam.prompt_encoder.locate_text(emb, torch.randn(3, TEXT_DIM))
    assert located.dtype == torch.float32


def test_a_text_model_from_before_the_locator_gets_one_line():
    from attnvision.errors import UserError
    from attnvision.sam.checkpoints import load_sam_weights

    sam = small_text_model()
    old = {k: v for k, v in sam.state_dict().items()
           if "text_locator" not in k and "text_projection.0." not in k}
    for new_index, old_index in (("1", "0"), ("3", "2")):  # Linear, GELU, Linear
        for kind in ("weight", "bias"):
            key = f"prompt_encoder.text_projection.{new_index}.{kind}"
            old[key.replace(f".{new_index}.", f".{old_index}.")] = old.pop(key)
    with pytest.raises(UserError, match="before the text locator") as e:
        load_sam_weights(small_text_model(), old, "old.safetensors", "sam_tiny")
    assert "\n" not in str(e.value)


def test_encode_once_refuses_what_memory_cannot_hold(tmp_path, capsys, monkeypatch):
    from attnvision.commands import sam_train

    monkeypatch.setattr(sam_train, "_memory_bytes", lambda: 2**20)  # a 1 MiB machine
    code = main(["train", "sam", "--freeze", "image_encoder", "--encode-once", "--scenes", "64",
                 "--epochs", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "GiB of embeddings" in err[-1] and "drop --encode-once" in err[-1]
