"""CoTracker3: the model against the official code's outputs, and its weight files.

The official outputs are stored fixtures (``shared/fixtures/cotracker3``, README there): the
official model run on seeded random weights, full size and a small one. Ours must be within
the bar the README sets from the official code's own run-to-run differences: tracks within
0.05 px, probabilities within 1e-3, the same visibility booleans.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cotracker_fixtures import COORDS_TOL, PROB_TOL, fixture, load_cases, load_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from attnvision.cotracker import (
    COTRACKER_CONFIGS,
    CoTracker3,
    CoTrackerConfig,
    build_cotracker,
)
from attnvision.cotracker.update_transformer import Attention
from attnvision.errors import UserError


@pytest.fixture(scope="module")
def cases() -> dict[str, torch.Tensor]:
    return load_cases()


@pytest.fixture(scope="module")
def spec() -> dict:
    return load_spec()



def weights(size: str) -> dict[str, torch.Tensor]:
    return load_file(fixture(f"{size}_weights.safetensors"))


def resolution(size: str, spec: dict) -> tuple[int, int]:
    return tuple(spec["small_config"]["model_resolution"]) if size == "small" else (384, 512)


@pytest.mark.parametrize("size", ["small", "full"])
def test_model_forward_matches_official(size, cases, spec):
    name = f"{size}_model_forward"
    res = resolution(size, spec)
    model = build_cotracker(fixture(f"{size}_weights.safetensors"), model_resolution=res)
    video = F.interpolate(cases[f"{name}.video"].float(), res, mode="bilinear",
                          align_corners=True)[None]
    with torch.no_grad():
        coords, vis, conf = model(video=video, queries=cases[f"{name}.queries"][None],
                                  iters=spec["cases"][name]["iters"])
    want_vis, want_conf = cases[f"{name}.vis"], cases[f"{name}.conf"]
    assert coords.shape == (1, *cases[f"{name}.coords"].shape)
    assert (coords[0] - cases[f"{name}.coords"]).abs().max() < COORDS_TOL
    assert (vis[0] - want_vis).abs().max() < PROB_TOL
    assert (conf[0] - want_conf).abs().max() < PROB_TOL
    # The booleans the predictors make: offline vis > 0.9, online vis * conf > 0.6.
    assert torch.equal(vis[0] > 0.9, want_vis > 0.9)
    assert torch.equal(vis[0] * conf[0] > 0.6, want_vis * want_conf > 0.6)


@pytest.mark.parametrize("size", ["small", "full"])
@pytest.mark.parametrize("offline", [True, False])
def test_builds_strictly_from_each_weights_file(size, offline, spec):
    sd = weights(size)
    model = build_cotracker(fixture(f"{size}_weights.safetensors"), offline=offline,
                            model_resolution=resolution(size, spec))
    state = model.state_dict()
    assert set(state) == set(sd)
    assert all(torch.equal(state[k], v.float()) for k, v in sd.items())
    assert not model.training and model.config.offline == offline
    small = spec["small_config"]
    if size == "full":
        released = COTRACKER_CONFIGS["cotracker3_offline"]
        assert model.config == replace(released, offline=offline)
        assert sum(p.numel() for p in model.parameters()) == 25_385_700
    else:
        c = model.config
        assert (c.window_len, c.model_resolution, c.latent_dim, c.corr_mlp_hidden,
                c.hidden_size, c.num_heads, c.time_depth, c.space_depth,
                c.num_virtual_tracks) == (
            small["window_len"], tuple(small["model_resolution"]), small["latent_dim"],
            small["corr_mlp_hidden"], small["hidden_size"], small["num_heads"],
            small["time_depth"], small["space_depth"], small["num_virtual_tracks"])


def test_official_pth_format_loads(tmp_path, spec):
    """The released files are flat state dicts saved with torch.save."""
    sd = weights("small")
    torch.save(sd, tmp_path / "scaled_offline.pth")
    torch.save({"model": sd}, tmp_path / "wrapped.pth")
    for path in (tmp_path / "scaled_offline.pth", tmp_path / "wrapped.pth"):
        model = build_cotracker(path, model_resolution=resolution("small", spec))
        assert torch.equal(model.updateformer.virual_tracks, sd["updateformer.virual_tracks"])


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not the small model's, each with a word its error must name."""
    sd = weights("small")
    files: dict[str, tuple[dict | bytes, str]] = {
        "missing": ({k: v for k, v in sd.items() if k != "fnet.layer1.0.conv1.bias"},
                    "missing keys: fnet.layer1.0.conv1.bias"),
        "unexpected": ({**sd, "fnet.extra.weight": torch.zeros(3)},
                       "unexpected keys: fnet.extra.weight"),
        "shape": ({**sd, "fnet.layer1.0.conv1.weight": torch.zeros(16, 16, 5, 5)},
                  "shape mismatches: fnet.layer1.0.conv1.weight"),
        "foreign": ({"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)},
                    "not a CoTracker3 checkpoint"),
        "cotracker2": ({**sd, "pos_emb": torch.zeros(1, 456, 96, 128)}, "CoTracker2"),
        "radius": ({**sd, "corr_mlp.fc1.weight": torch.zeros(32, 2400)}, "(2r+1)^4"),
        "corrupt": (b"\x00\x01 this is not a weights file", "corrupt"),
    }
    out = {}
    for name, (content, word) in files.items():
        path = tmp_path / f"{name}.safetensors"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            save_file({k: v.contiguous() for k, v in content.items()}, str(path))
        out[name] = (path, word)
    good = fixture("small_weights.safetensors").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(good[: len(good) // 2])
    out["truncated"] = (tmp_path / "truncated.pth", "corrupt")
    out["absent"] = (tmp_path / "absent.pth", "not found")
    return out


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape", "foreign", "cotracker2",
                                  "radius", "corrupt", "truncated", "absent"])
def test_wrong_files_fail_in_one_line(tmp_path, case):
    path, word = _bad_files(tmp_path)[case]
    with pytest.raises(UserError) as err:
        build_cotracker(path, model_resolution=(64, 96))
    message = str(err.value)
    assert "\n" not in message and word in message, message


def test_attention_fast_path_equals_explicit():
    attn = Attention(16, num_heads=2, context_dim=12)
    x, context = torch.randn(3, 5, 16), torch.randn(3, 7, 12)
    fast = attn(x, context)
    explicit, maps = attn(x, context, return_attention=True)
    assert torch.allclose(fast, explicit, atol=1e-6)
    assert maps.shape == (3, 2, 5, 7) and torch.allclose(maps.sum(-1), torch.ones(3, 2, 5))


def tiny_config(offline: bool, levels: int, time_depth: int, window: int) -> CoTrackerConfig:
    return CoTrackerConfig(window_len=window, model_resolution=(32, 48), latent_dim=8,
                           corr_levels=levels, corr_mlp_hidden=8, corr_emb_dim=8,
                           hidden_size=16, num_heads=2, time_depth=time_depth, space_depth=1,
                           num_virtual_tracks=2, offline=offline)


@settings(max_examples=12, deadline=None)
@given(offline=st.booleans(), t=st.integers(1, 11), n=st.integers(1, 5), b=st.integers(1, 2),
       levels=st.integers(1, 4), time_depth=st.integers(1, 2), window=st.sampled_from([4, 6]))
def test_outputs_have_one_value_per_frame_and_track(offline, t, n, b, levels, time_depth,
                                                    window):
    torch.manual_seed(0)
    model = CoTracker3(tiny_config(offline, levels, time_depth, window)).eval()
    video = torch.rand(b, t, 3, 32, 48) * 255
    queries = torch.cat([torch.randint(0, t, (b, n, 1)).float(),
                         torch.rand(b, n, 2) * torch.tensor([47.0, 31.0])], dim=-1)
    with torch.no_grad():
        coords, vis, conf = model(video, queries, iters=2)
    assert coords.shape == (b, t, n, 2) and vis.shape == conf.shape == (b, t, n)
    assert torch.isfinite(coords).all()
    assert ((vis >= 0) & (vis <= 1) & (conf >= 0) & (conf <= 1)).all()
    if offline:
        return
    # Online: chunks of a window, half a window apart; every call covers all frames so far.
    step = window // 2
    long = torch.rand(b, 3 * window, 3, 32, 48) * 255
    model.init_video_online_processing()
    with torch.no_grad():
        for ind in range(0, long.shape[1] - step, step):
            coords, vis, conf = model(long[:, ind:ind + 2 * step], queries, iters=1,
                                      is_online=True)
            assert coords.shape == (b, min(ind + 2 * step, long.shape[1]), n, 2)
            assert vis.shape == conf.shape == coords.shape[:3]


def test_online_mode_needs_its_start_and_an_online_model():
    model = CoTracker3(tiny_config(False, 2, 1, 4)).eval()
    video, queries = torch.zeros(1, 4, 3, 32, 48), torch.zeros(1, 1, 3)
    with pytest.raises(ValueError, match="init_video_online_processing"):
        model(video, queries, is_online=True)
    with pytest.raises(ValueError, match="no online mode"):
        CoTracker3(tiny_config(True, 2, 1, 4))(video, queries, is_online=True)


def test_uint8_frames_and_integer_queries_are_accepted():
    model = CoTracker3(tiny_config(True, 2, 1, 4)).eval()
    video = (torch.rand(1, 3, 3, 32, 48) * 255).to(torch.uint8)
    queries = torch.tensor([[[0, 10, 20]]])
    with torch.no_grad():
        coords, _, _ = model(video, queries, iters=1)
        want, _, _ = model(video.float(), queries.float(), iters=1)
    assert coords.dtype == torch.float32 and torch.equal(coords, want)
