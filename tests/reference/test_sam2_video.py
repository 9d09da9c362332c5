"""SAM2VideoPredictor against the official one, on a 16-frame synthetic clip.

The official predictor is built as ``build_sam2_video_predictor`` builds it (its hydra
overrides), at 256 px, with seeded random weights sharpened as ``official_sam2`` does and the
object-score bias pushed away from 0. It reads the clip from a JPEG folder; ours gets the
same decoded pixels as a (T, H, W, 3) array. The session: a click on frame 0 (object 1), a
box on frame 3 (object 2), propagation forward, a third object clicked on frame 6, a
corrective click on frame 9 (object 1), a mask on frame 13 (object 2), propagation forward
again, then backwards from frame 12. The official hole filling needs its CUDA extension; it
gets a CPU connected-components function here so that both sides fill holes.
"""

import numpy as np
import pytest
import sam2.utils.misc as official_misc
import torch
from PIL import Image

from attnvision.sam.masks import label_components
from attnvision.sam2 import SAM2VideoPredictor
from reference.official_sam2 import OFFICIAL_CONFIGS, perturb
from reference.test_sam2_tracking import ours_like

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

SIZE, T, H, W = 256, 16, 120, 160
MIN_AGREEMENT = 0.999


def official_video_predictor(name: str, seed: int = 0, size: int = SIZE) -> torch.nn.Module:
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    model = build_sam2_video_predictor(OFFICIAL_CONFIGS[name], device="cpu",
                                       hydra_overrides_extra=[f"++model.image_size={size}"])
    perturb(model, seed + 1)
    with torch.no_grad():  # as official_sam2(sharpen=True), and the tracking test's slots
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
            mlp.layers[-1].bias.mul_(40.0)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
        model.maskmem_tpos_enc.mul_(20.0)
    # The official stores memories in bfloat16 and, off CUDA autocast, feeds them to
    # float32 layers as they are, which CPU matmuls refuse: read them in float32, as ours
    # does (exact: every bfloat16 is a float32).
    attend = model.memory_attention.forward

    def attend_float32(curr, memory, curr_pos=None, memory_pos=None, **kwargs):
        return attend(curr, memory.float(), curr_pos, memory_pos.float(), **kwargs)

    model.memory_attention.forward = attend_float32
    return model.eval()


def cpu_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official CUDA kernel's output, (N, 1, H, W) labels and per-pixel areas, on CPU."""
    labels, areas = torch.zeros(mask.shape, dtype=torch.int32), torch.zeros(mask.shape,
                                                                          dtype=torch.int32)
    for i, m in enumerate(mask.cpu().numpy().astype(bool)):
        lab, sizes = label_components(m[0])
        labels[i, 0] = torch.from_numpy(lab)
        areas[i, 0] = torch.from_numpy(np.concatenate([[0], sizes])[lab].astype(np.int32))
    return labels, areas


def shapes(t: int) -> dict[int, np.ndarray]:
    """Object masks (H, W) on frame t: a disc moving right, a square moving down, an
    ellipse moving up-left."""
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - (25 + 4 * t)) ** 2 + (yy - 40) ** 2 <= 15**2
    square = (np.abs(xx - 110) <= 14) & (np.abs(yy - (20 + 3 * t)) <= 14)
    ellipse = ((xx - (130 - 3 * t)) / 18.0) ** 2 + ((yy - (100 - 2 * t)) / 10.0) ** 2 <= 1
    return {1: disc, 2: square, 3: ellipse}


def clip() -> np.ndarray:
    """(T, H, W, 3) uint8: the shapes in colour on a textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    background = np.stack([xx * 0.6 + 40, yy * 0.8 + 30, (xx + yy) * 0.3 + 60], -1)
    colours = {1: (230, 40, 40), 2: (40, 60, 220), 3: (40, 200, 70)}
    frames = []
    for t in range(T):
        frame = background + rng.normal(0, 8, background.shape)
        for k, m in shapes(t).items():
            frame[m] = colours[k]
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def session(predictor, state):
    """The same calls on either predictor; yields (what, frame, obj_ids, masks)."""
    s = shapes
    yield ("click", *predictor.add_new_points_or_box(state, 0, 1, points=[[25, 40]],
                                                     labels=[1]))
    yield ("box", *predictor.add_new_points_or_box(state, 3, 2, box=[94, 27, 126, 61]))
    for out in predictor.propagate_in_video(state):
        yield ("forward", *out)
    yield ("new object", *predictor.add_new_points_or_box(
        state, 6, 3, points=np.array([[112.0, 88.0]]), labels=np.array([1])))
    yield ("correction", *predictor.add_new_points_or_box(
        state, 9, 1, points=[[61, 40], [75, 60]], labels=[1, 0]))
    yield ("mask", *predictor.add_new_mask(state, 13, 2, s(13)[2]))
    for out in predictor.propagate_in_video(state):
        yield ("forward again", *out)
    for out in predictor.propagate_in_video(state, start_frame_idx=12, reverse=True):
        yield ("reverse", *out)


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny"])
def test_video_predictor_matches_the_official(name, tmp_path, monkeypatch):
    monkeypatch.setattr(official_misc, "get_connected_components", cpu_components)
    video = clip()
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(tmp_path / f"{t:05d}.jpg", quality=95)
    # What the official reads: the decoded JPEGs (ours gets them as an array).
    decoded = np.stack([np.asarray(Image.open(tmp_path / f"{t:05d}.jpg").convert("RGB"))
                        for t in range(T)])
    ref = official_video_predictor(name)
    ours = SAM2VideoPredictor(ours_like(ref, name), fill_hole_area=8)
    assert ref.fill_hole_area == 8 and ref.binarize_mask_from_pts_for_mem_enc

    ref_state = ref.init_state(str(tmp_path))
    state = ours.init_state(decoded)
    # Our folder reading gives the same model inputs as the official's.
    from_folder = ours.init_state(str(tmp_path))
    for t in (0, T - 1):
        torch.testing.assert_close(from_folder.frames.model_input(t, torch.device("cpu")),
                                   ref_state["images"][t:t + 1], atol=0, rtol=0)
    worst, absent, steps = 1.0, 0, 0
    for expected, got in zip(session(ref, ref_state), session(ours, state), strict=True):
        what, t, ref_ids, ref_masks = expected
        assert got[:3] == (what, t, ref_ids), (got[:3], expected[:3])
        masks = got[3]
        assert masks.shape == ref_masks.shape == (len(ref_ids), 1, H, W)
        for i, obj_id in enumerate(ref_ids):
            where = f"{what} frame {t} object {obj_id}"
            ref_absent = bool((ref_masks[i] == -1024).all())
            assert bool((masks[i] <= -32).all()) == ref_absent, where  # same presence
            agreement = ((masks[i] > 0) == (ref_masks[i] > 0)).float().mean().item()
            assert agreement >= MIN_AGREEMENT, f"{where}: {agreement:.4%} pixels agree"
            worst = min(worst, agreement)
            if not ref_absent:  # decisive masks, not all or nothing
                assert 0.0 < (ref_masks[i] > 0).float().mean() < 0.9, where
            absent += ref_absent
        steps += 1
    assert steps == 2 + 16 + 3 + 16 + 13
    # Kept compactly: memories in bfloat16, tracked frames' logits in float16.
    obj = state.objects[1]
    assert {m.maskmem.dtype for m in obj.bank.tracked.values()} == {torch.bfloat16}
    assert {m.dtype for m in obj.tracked_masks.values()} == {torch.float16}
    print(f"\n{name}: {steps} outputs, worst pixel agreement {worst:.4%}, "
          f"{absent} absent object-frames")
