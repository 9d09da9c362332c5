"""SAM 2's per-frame tracking step against the official ``SAM2Base.track_step``.

The official models (hiera tiny, SAM 2.1 and 2.0) are built at 256 px from the package's
configs with seeded random weights (``reference.official_sam2``), with the official video
predictor's setting of thresholding clicked masks for the memory. Both sides get the same
frame features and run the same sequence, each keeping its own memory bank as the official
video predictor does: a click on frame 0, frames 1-4 tracked, a corrective click on frame 3
(refining its earlier logits), a mask on frame 5, a box and a negative click on an untracked
frame 7, an empty mask on frame 8, and a frame tracked backwards. The object-score head's
bias is pushed to +3 ("present") or -3 ("absent": every decoded mask is "no object").
"""

import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from skimage import data

import reference.official_sam2 as official_module
from attnvision.sam2 import SAM2_CONFIGS, build_sam2
from attnvision.sam2.build import sam2_from_config
from attnvision.sam2.tracking import (
    NO_OBJECT_LOGIT,
    FrameFeatures,
    MemoryBank,
    frame_features,
    pointer_time_code,
    track_step,
)
from reference.official_sam2 import official_sam2, official_state

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

SIZE = 256
NUM_FRAMES = 10
ATOL = 1e-3


def official_at(name: str, size: int = SIZE, score_bias: float = 3.0) -> torch.nn.Module:
    """The official model at ``size`` px, seeded and sharpened as official_sam2 does, the
    object-score bias moved by ``score_bias - 3``."""
    build = official_module.official_build_sam2
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(official_module, "official_build_sam2",
                   functools.partial(build, hydra_overrides_extra=[f"++model.image_size={size}"]))
        model = official_sam2(name)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(score_bias - 3.0)
        # Slot codes of a trained model's size, not 0.02: a memory in the wrong slot must show.
        model.maskmem_tpos_enc.mul_(20.0)
    model.binarize_mask_from_pts_for_mem_enc = True  # as build_sam2_video_predictor sets
    return model


def ours_like(official: torch.nn.Module, name: str, size: int = SIZE) -> torch.nn.Module:
    model = sam2_from_config(replace(SAM2_CONFIGS[name], image_size=size))
    model.load_state_dict(official.state_dict(), strict=True)
    return model.eval()


def frames(n: int = NUM_FRAMES, size: int = SIZE) -> torch.Tensor:
    """(n, 3, size, size) normalised frames: the cat sliding right 6 px per frame."""
    rgb = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    rgb = (rgb - mean) / std
    return torch.cat([torch.roll(rgb, shifts=6 * i, dims=-1) for i in range(n)])


def click(x: float, y: float, label: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[[x, y]]]), torch.tensor([[label]], dtype=torch.int32)


def disc(cx: float, cy: float, r: float, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r)[None, None]


# (frame, prompts, conditioning, is_init_cond_frame, reverse)
STEPS = [
    (0, {"points": click(128, 110)}, True, True, False),
    (1, {}, False, False, False),
    (2, {}, False, False, False),
    (3, {}, False, False, False),
    (4, {}, False, False, False),
    # a correction on a tracked frame reads the memory and refines the frame's logits
    (3, {"points": click(150, 140, 0), "refine": True}, True, False, False),
    (4, {}, False, False, False),
    (5, {"mask": disc(140, 120, 40)}, True, False, False),
    (6, {}, False, False, False),
    # a prompt on a frame not tracked yet starts afresh, as in the official predictor
    (7, {"box": torch.tensor([[60.0, 50.0, 200.0, 190.0]]), "points": click(70, 180, 0)},
     True, True, False),
    (8, {"mask": torch.zeros(1, 1, SIZE, SIZE, dtype=torch.bool)}, True, False, False),
    (9, {}, False, False, False),
    (2, {}, False, False, True),  # backwards: reads frames 3.. and pointers of later prompts
]


def official_point_inputs(prompts: dict) -> dict | None:
    """The official predictor's point inputs: box corners (labels 2, 3) first."""
    coords, labels = [], []
    if "box" in prompts:
        coords.append(prompts["box"].reshape(1, 2, 2))
        labels.append(torch.tensor([[2, 3]], dtype=torch.int32))
    if "points" in prompts:
        coords.append(prompts["points"][0])
        labels.append(prompts["points"][1])
    if not coords:
        return None
    return {"point_coords": torch.cat(coords, 1), "point_labels": torch.cat(labels, 1)}


def run_both(ref, ours, storage_dtype=torch.float32):
    """Both sides through STEPS; yields (step, official output, our output)."""
    video = frames()
    ref_bank = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    bank = MemoryBank()
    ref_last, our_last = {}, {}  # each frame's latest low-res logits
    with torch.no_grad():
        backbone = ref.forward_image(video)
    for step, (t, prompts, conditioning, init, reverse) in enumerate(STEPS):
        with torch.no_grad():
            out = {k: [x[t:t + 1] for x in v] for k, v in backbone.items()
                   if k in ("backbone_fpn", "vision_pos_enc")}
            _, feats, pos, sizes = ref._prepare_backbone_features(out)
            points = official_point_inputs(prompts)
            mask = prompts.get("mask")
            refine = prompts.get("refine", False)
            expected = ref.track_step(
                t, init, feats, pos, sizes, points, mask, ref_bank, NUM_FRAMES,
                track_in_reverse=reverse,
                prev_sam_mask_logits=ref_last[t].clamp(-32, 32) if refine else None)
            features = FrameFeatures(vision=out["backbone_fpn"][-1], pos=out["vision_pos_enc"][-1],
                                     high_res=out["backbone_fpn"][:-1])
            got = track_step(
                ours, t, features, bank, points=prompts.get("points"), boxes=prompts.get("box"),
                mask=mask, is_init_cond_frame=init, num_frames=NUM_FRAMES, reverse=reverse,
                prev_mask_logits=our_last[t].clamp(-32, 32) if refine else None,
                storage_dtype=storage_dtype)
        # The official predictor stores the memory in bfloat16; the pointer as it is.
        expected["maskmem_features"] = expected["maskmem_features"].to(storage_dtype)
        key = "cond_frame_outputs" if conditioning else "non_cond_frame_outputs"
        ref_bank[key][t] = expected
        if conditioning:
            ref_bank["non_cond_frame_outputs"].pop(t, None)
        bank.add(t, got.memory, conditioning)
        ref_last[t], our_last[t] = expected["pred_masks"], got.low_res_masks
        yield step, expected, got


CASES = [("sam2.1_hiera_tiny", 3.0, torch.float32), ("sam2.1_hiera_tiny", -3.0, torch.float32),
         ("sam2.1_hiera_tiny", 3.0, torch.bfloat16), ("sam2_hiera_tiny", 3.0, torch.float32),
         ("sam2_hiera_tiny", -3.0, torch.float32)]


@pytest.mark.parametrize(("name", "score_bias", "storage_dtype"), CASES,
                         ids=["2.1-present", "2.1-absent", "2.1-bf16", "2.0-present",
                              "2.0-absent"])
def test_track_step_matches_the_official(name, score_bias, storage_dtype):
    ref = official_at(name, score_bias=score_bias)
    ours = ours_like(ref, name)
    worst = {"masks": 0.0, "scores": 0.0, "pointers": 0.0, "memories": 0.0}
    for step, expected, got in run_both(ref, ours, storage_dtype):
        where = f"step {step} (frame {STEPS[step][0]})"
        masks, ref_masks = got.low_res_masks, expected["pred_masks"]
        assert masks.shape == ref_masks.shape == (1, 1, SIZE // 4, SIZE // 4), where
        assert got.high_res_masks.shape == (1, 1, SIZE, SIZE)
        scores, ref_scores = got.object_score_logits, expected["object_score_logits"]
        assert torch.equal(scores > 0, ref_scores > 0), where
        memory, ref_memory = got.memory.maskmem, expected["maskmem_features"]
        assert memory.dtype == ref_memory.dtype == storage_dtype
        errors = {"masks": (masks - ref_masks).abs().max().item(),
                  "scores": (scores - ref_scores).abs().max().item(),
                  "pointers": (got.obj_ptr - expected["obj_ptr"]).abs().max().item(),
                  "memories": (memory.float() - ref_memory.float()).abs().max().item()}
        if storage_dtype != torch.float32:
            # Both sides round the same memory, but a value a hair from a rounding boundary
            # may land one step (2^-7 relative in bfloat16) apart.
            step_size = 2.0 ** -7 * ref_memory.float().abs()
            errors["memories"] = ((memory.float() - ref_memory.float()).abs() - step_size
                                  ).clamp_min(0).max().item()
        for what, error in errors.items():
            assert error <= ATOL, f"{where}: {what} differ by {error:.2e}"
            worst[what] = max(worst[what], error)
        if score_bias < 0 and "mask" not in STEPS[step][1]:
            # Decoded but absent: "no object" everywhere and the learned no-object pointer.
            assert (masks == NO_OBJECT_LOGIT).all(), where
            torch.testing.assert_close(got.obj_ptr, ours.no_obj_ptr.detach())
        elif "mask" not in STEPS[step][1]:
            assert 0.01 < (masks > 0).float().mean() < 0.99, where  # decisive, not trivial
    print(f"\n{name} bias {score_bias:+} {storage_dtype}: worst "
          + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


def test_our_frame_features_match_the_official():
    ref = official_at("sam2.1_hiera_tiny")
    ours = ours_like(ref, "sam2.1_hiera_tiny")
    video = frames(2)
    with torch.no_grad():
        expected = ref.forward_image(video)
        got = frame_features(ours, video)
    pairs = [(got.vision, expected["backbone_fpn"][-1]),
             (got.pos, expected["vision_pos_enc"][-1]),
             *zip(got.high_res, expected["backbone_fpn"][:-1], strict=True)]
    for a, b in pairs:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_pointer_time_code_is_the_official_1d_sine_code():
    from sam2.modeling.sam2_utils import get_1d_sine_pe

    offsets = torch.tensor([0, 1, -3, 15]) / 15
    torch.testing.assert_close(pointer_time_code(offsets, 256), get_1d_sine_pe(offsets, 256))


def test_streaming_with_a_pruned_bank_gives_the_same_masks():
    # Tracking frame t reads at most 6 memories and 15 pointers back: forgetting the rest
    # after each frame changes nothing, with no video length given (streaming).
    name = "sam2.1_hiera_tiny"
    ours = ours_like(official_at(name), name)
    video = frames(19)
    full, pruned = MemoryBank(), MemoryBank()
    with torch.no_grad():
        for t in range(len(video)):
            features = frame_features(ours, video[t:t + 1])
            prompts = {"points": click(128, 110), "is_init_cond_frame": True} if t == 0 else {}
            a = track_step(ours, t, features, full, **prompts)
            b = track_step(ours, t, features, pruned, **prompts)
            torch.testing.assert_close(a.low_res_masks, b.low_res_masks, atol=0, rtol=0)
            full.add(t, a.memory, conditioning=t == 0)
            pruned.add(t, b.memory, conditioning=t == 0)
            pruned.prune(t + 1)
    assert len(full.tracked) == 18
    assert sorted(pruned.tracked) == list(range(4, 19))  # the last 15 pointers
    assert [t for t, m in pruned.tracked.items() if m.maskmem is not None] == list(range(13, 19))


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2_hiera_tiny"])
def test_official_state_dicts_load_strictly_with_nothing_left_over(name, tmp_path):
    ref = official_sam2(name, sharpen=False)
    sd = official_state(ref)["model"]
    ours = sam2_from_config(SAM2_CONFIGS[name])
    result = ours.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert set(ours.state_dict()) == set(sd)
    path = tmp_path / f"{name}.pt"
    torch.save(official_state(ref), path)
    built = build_sam2(None, path)
    assert built.size_name == name
    for key, value in built.state_dict().items():
        assert torch.equal(value, sd[key]), key
    assert (built.no_obj_embed_spatial is None) == (name == "sam2_hiera_tiny")
