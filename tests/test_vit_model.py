import json

import pytest
import torch
from safetensors.torch import save_file

from attnvision.errors import UserError
from attnvision.vit import CONFIGS, create_model, get_config, load_checkpoint, save_checkpoint
from attnvision.vit.model import VisionTransformer


def count(name: str, **kw) -> int:
    with torch.device("meta"):  # shapes only: ViT-H is 632 M parameters
        return VisionTransformer(get_config(name, **kw)).num_parameters()


@pytest.mark.parametrize("name, course", [("vit_base", 86e6), ("vit_large", 307e6),
                                          ("vit_huge", 632e6)])
def test_parameter_counts_match_the_course_table(name, course):
    assert abs(count(name) - course) / course < 0.015


def test_vit_base_has_exactly_timms_parameter_count():
    assert count("vit_base_patch16_224", num_classes=1000) == 86_567_656


def test_configs_are_consistent():
    for name, cfg in CONFIGS.items():
        assert cfg.img_size % cfg.patch_size == 0, name
        assert cfg.embed_dim % cfg.num_heads == 0, name
    with pytest.raises(UserError, match="unknown ViT config"):
        get_config("vit_gigantic")


def test_class_token_and_shapes():
    model = create_model("vit_digits").eval()
    x = torch.rand(3, 1, 8, 8)
    logits, maps = model(x, return_attention=True)
    assert logits.shape == (3, 10)
    assert len(maps) == 4 and maps[0].shape == (3, 4, 17, 17)  # 16 patches + class token
    torch.testing.assert_close(maps[-1].sum(-1), torch.ones(3, 4, 17))
    torch.testing.assert_close(logits, model(x))


def test_sincos_positions_are_fixed_and_not_saved():
    model = create_model("vit_digits", pos_embed="sincos")
    assert "pos_embed" not in model.state_dict()
    assert not any(n == "pos_embed" for n, _ in model.named_parameters())
    out = model(torch.rand(1, 1, 12, 12))  # another size: code regenerated, no error
    assert out.shape == (1, 10)


@pytest.mark.parametrize("shape, message", [
    ((1, 3, 8, 8), "expects 1-channel images"),
    ((1, 1, 9, 8), "not a multiple of the patch size 2"),
    ((1, 8, 8), "shape \\(B, C, H, W\\)"),
])
def test_bad_tensors_get_clear_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        create_model("vit_digits")(torch.zeros(shape))


def test_save_and_load_round_trip(tmp_path):
    model = create_model("vit_digits", depth=2).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", extra={"accuracy": 0.5})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))


def test_checkpoint_for_another_config_lists_the_problems(tmp_path):
    model = create_model("vit_digits", depth=2)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    with pytest.raises(UserError) as e:
        load_checkpoint(tmp_path / "w.safetensors", config="vit_mnist")
    msg = str(e.value)
    assert "missing keys: blocks.2." in msg and "shape mismatches" in msg
    assert "\n" not in msg


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.safetensors")
    model = create_model("vit_digits", depth=1)
    save_checkpoint(model, tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(UserError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "w.txt")
    for text in ["hello", "not a checkpoint"]:  # torch's unpickler fails differently
        (tmp_path / "text.pt").write_text(text)
        with pytest.raises(UserError, match="corrupt"):
            load_checkpoint(tmp_path / "text.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"weights": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="unsafe to load"):
        load_checkpoint(tmp_path / "evil.pth")


def test_config_json_beside_a_timm_hub_file(tmp_path):
    model = create_model("vit_tiny_patch16_224", num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(
        {"architecture": "vit_tiny_patch16_224.augreg_in21k", "num_classes": 3}))
    assert load_checkpoint(tmp_path / "model.safetensors").config.num_classes == 3
