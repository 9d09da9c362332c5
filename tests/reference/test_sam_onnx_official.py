"""Our decoder graph in ONNX Runtime against the official ``SamOnnxModel`` run in PyTorch.

The official model is built by the official package (a 2-block encoder at 256 px, the full-size
prompt encoder and mask decoder), its weights perturbed with seeded noise and saved as an
official .pth, which ours loads through ``build_sam``. Both answer the same prompts, laid out
in the official input format: the masks must be the same (IoU >= 0.99) and the scores within
1e-3.
"""

import inspect

import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything.modeling import (
    Sam,
)
from segment_anything.utils.onnx import SamOnnxModel

from attnvision.sam import build_sam
from attnvision.sam.onnx import DECODER_INPUTS, decoder_inputs, export_decoder
from reference.official_sam import official_sam

ENCODER = {"embed_dim": 64, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,),
           "window_size": 4}
IMG_SIZE = 256
SIZE = (180, 240)  # (H, W) of the "original" image


def official_small_sam() -> Sam:
    return official_sam(img_size=IMG_SIZE, **ENCODER)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ref = official_small_sam()
    path = tmp_path_factory.mktemp("sam") / "sam_small.pth"
    torch.save(ref.state_dict(), path)
    ours = build_sam("vit_b", checkpoint=path, img_size=IMG_SIZE, **ENCODER)
    image = torch.rand(1, 3, 192, IMG_SIZE, generator=torch.Generator().manual_seed(2)) * 255
    with torch.no_grad():
        embedding = ref.image_encoder(ref.preprocess(image)).numpy()
    return ref, ours, embedding


@pytest.fixture(scope="module")
def graphs(models, tmp_path_factory):
    _, ours, _ = models
    folder = tmp_path_factory.mktemp("onnx")
    threads = ort.SessionOptions()
    threads.intra_op_num_threads = 1  # small graphs: no thread pool spinning beside pytest
    options = {"all": {}, "single": {"return_single_mask": True},
               "stability": {"return_single_mask": True, "use_stability_score": True}}
    return {name: (kw, ort.InferenceSession(
        str(export_decoder(ours, folder / f"{name}.onnx", **kw)["decoder"]), threads,
        providers=["CPUExecutionProvider"])) for name, kw in options.items()}


def test_input_names_are_the_official_forward_arguments():
    assert list(inspect.signature(SamOnnxModel.forward).parameters)[1:] == list(DECODER_INPUTS)


PROMPTS = {
    "one click": {"point_coords": [[120, 90]], "point_labels": [1]},
    "three points": {"point_coords": [[120, 90], [30, 40], [200, 150]],
                     "point_labels": [1, 0, 1]},
    "box": {"box": [40, 30, 200, 160]},
    "points and box": {"point_coords": [[120, 90], [60, 60]], "point_labels": [1, 0],
                       "box": [40, 30, 200, 160]},
    "click and mask": {"point_coords": [[120, 90]], "point_labels": [1], "mask": True},
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("graph", ["all", "single", "stability"])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_decoder_graph_gives_the_official_masks_and_scores(models, graphs, graph, prompt):
    ref, _, embedding = models
    options, session = graphs[graph]
    spec = dict(PROMPTS[prompt])
    mask = None
    if spec.pop("mask", False):
        mask = np.random.default_rng(3).normal(0, 4, (1, 64, 64)).astype(np.float32)
    feed = decoder_inputs(embedding, SIZE, mask_input=mask, img_size=IMG_SIZE,
                          **{k: np.array(v, dtype=float) for k, v in spec.items()})
    official = SamOnnxModel(ref, return_single_mask=options.get("return_single_mask", False),
                            use_stability_score=options.get("use_stability_score", False))
    with torch.no_grad():
        ref_masks, ref_scores, ref_low = (t.numpy() for t in official(
            **{k: torch.from_numpy(v) for k, v in feed.items()}))
    masks, scores, low_res = session.run(None, feed)

    assert masks.shape == ref_masks.shape == (1, 1 if graph != "all" else 4, *SIZE)
    for ours_mask, ref_mask in zip(masks[0] > 0, ref_masks[0] > 0, strict=True):
        assert ref_mask.any()  # a real mask, not two empty ones
        assert _iou(ours_mask, ref_mask) >= 0.99
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3, rtol=0)
    np.testing.assert_allclose(low_res, ref_low, atol=1e-3, rtol=0)
