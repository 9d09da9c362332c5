"""Parity of the whole SAM pipeline with the official package on identical weights.

The official model is built by the official package, every parameter and buffer perturbed
with seeded noise (relative positions and position embeddings included), saved as an official
.pth, and loaded by ours through ``build_sam``. The encoder is SAM vit_b's with 4 blocks
instead of 12 (two windowed, two global) to keep CI fast; the input is the real 1024 px.
"""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as RefPredictor
from segment_anything.modeling import (
    Sam,
)
from skimage import data

from attnvision.sam import SamPredictor, build_sam
from reference.official_sam import official_sam

SMALL = {"depth": 4, "global_attn_indexes": (1, 3)}


def official_small_sam() -> Sam:
    return official_sam(depth=4, embed_dim=768, num_heads=12, global_attn_indexes=(1, 3))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ref = official_small_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_small.pth"
    torch.save(ref.state_dict(), path)
    ours = build_sam("vit_b", checkpoint=path, **SMALL)
    return ref, ours


IMAGES = {"chelsea": data.chelsea(), "coffee_portrait": data.coffee().transpose(1, 0, 2).copy()}


def prompts(h: int, w: int) -> dict[str, dict]:
    cx, cy = w * 0.5, h * 0.45
    return {
        "point": {"point_coords": np.array([[cx, cy]]), "point_labels": np.array([1])},
        "negative": {"point_coords": np.array([[cx, cy], [w * 0.2, h * 0.8]]),
                     "point_labels": np.array([1, 0])},
        "box": {"box": np.array([w * 0.25, h * 0.2, w * 0.75, h * 0.7])},
        "points_box": {"point_coords": np.array([[cx, cy]]), "point_labels": np.array([1]),
                       "box": np.array([w * 0.25, h * 0.2, w * 0.75, h * 0.7])},
    }


@pytest.mark.parametrize("name", list(IMAGES))
def test_embeddings_and_masks_match_the_official_predictor(models, name):
    ref_model, ours_model = models
    image = IMAGES[name]
    ref, ours = RefPredictor(ref_model), SamPredictor(ours_model)
    ref.set_image(image)
    ours.set_image(image)
    e_ref, e_ours = ref.get_image_embedding(), ours.get_image_embedding()
    assert ((e_ours - e_ref).abs().max() / e_ref.abs().max()).item() < 1e-4

    h, w = image.shape[:2]
    cases = prompts(h, w)
    for case, kwargs in cases.items():
        for multimask in (True, False):
            m_ref, s_ref, l_ref = ref.predict(**kwargs, multimask_output=multimask)
            m_our, s_our, l_our = ours.predict(**kwargs, multimask_output=multimask)
            assert m_our.shape == m_ref.shape == ((3 if multimask else 1), h, w), case
            assert np.abs(l_our - l_ref).max() < 1e-3, case
            assert np.abs(s_our - s_ref).max() < 1e-4, case
            assert (m_our == m_ref).mean() >= 0.999, case
            assert 0.001 < m_ref.mean() < 0.999 or case == "negative"  # masks are not trivial
    # a mask input: the previous low-res logits fed back, as in interactive refinement
    _, s, logits = ref.predict(**cases["point"], multimask_output=True)
    mask_input = logits[np.argmax(s)][None]
    m_ref, s_ref, l_ref = ref.predict(**cases["negative"], mask_input=mask_input,
                                      multimask_output=False)
    m_our, s_our, l_our = ours.predict(**cases["negative"], mask_input=mask_input,
                                       multimask_output=False)
    assert np.abs(l_our - l_ref).max() < 1e-3
    assert np.abs(s_our - s_ref).max() < 1e-4
    assert (m_our == m_ref).mean() >= 0.999


def test_several_boxes_in_one_call_equal_one_by_one(models):
    _, model = models
    predictor = SamPredictor(model)
    image = IMAGES["chelsea"]
    predictor.set_image(image)
    h, w = image.shape[:2]
    boxes = np.array([[10, 20, 200, 250], [150, 40, 440, 290], [0, 0, w, h]], dtype=float)
    masks, scores, logits = predictor.predict(box=boxes, multimask_output=True)
    assert masks.shape == (3, 3, h, w) and scores.shape == (3, 3)
    for i, b in enumerate(boxes):
        _, s, lo = predictor.predict(box=b, multimask_output=True)
        np.testing.assert_allclose(lo, logits[i], atol=1e-4)
        np.testing.assert_allclose(s, scores[i], atol=1e-5)
    points = np.array([[[100, 100]], [[300, 200]]], dtype=float)
    masks, scores, _ = predictor.predict(point_coords=points, point_labels=np.ones((2, 1)),
                                         multimask_output=False)
    assert masks.shape == (2, 1, h, w)
