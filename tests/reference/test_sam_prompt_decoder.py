"""Parity with the official Segment Anything prompt encoder and mask decoder.

The official modules are built at SAM's sizes, every parameter and buffer is perturbed with
seeded noise (so no weight sits at a symmetric init value that could hide a swapped name),
and their state dicts load into ours with ``strict=True``.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_anything.modeling import MaskDecoder as RefMaskDecoder
from segment_anything.modeling import PromptEncoder as RefPromptEncoder
from segment_anything.modeling import TwoWayTransformer as RefTwoWayTransformer

from attnvision.sam.mask_decoder import MaskDecoder
from attnvision.sam.prompt_encoder import PromptEncoder
from attnvision.sam.two_way import TwoWayTransformer

IMAGE_SIZE = 1024
EMBED_HW = 64
MASK_TOL = {"atol": 1e-4, "rtol": 1e-4}
IOU_TOL = {"atol": 1e-5, "rtol": 1e-5}


def _perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.add_(torch.randn(t.shape, generator=gen) * 0.05)
    return module.eval()


@pytest.fixture(scope="module")
def prompt_encoders():
    torch.manual_seed(0)
    ref = _perturb(RefPromptEncoder(embed_dim=256, image_embedding_size=(EMBED_HW, EMBED_HW),
                                    input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16),
                   seed=1)
    ours = PromptEncoder().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def mask_decoders():
    torch.manual_seed(0)
    ref = _perturb(RefMaskDecoder(
        transformer_dim=256,
        transformer=RefTwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256), seed=2)
    ours = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(
        depth=2, embedding_dim=256, num_heads=8, mlp_dim=2048, attention_downsample_rate=2),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _points(batch: int, n: int, seed: int, labels=(0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, n, 2, generator=gen) * (IMAGE_SIZE - 1)
    choices = torch.tensor(labels)
    idx = torch.randint(len(labels), (batch, n), generator=gen)
    return coords, choices[idx]


def _boxes(batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, 2, 2, generator=gen) * (IMAGE_SIZE - 1)
    return torch.cat([xy.min(dim=1).values, xy.max(dim=1).values], dim=1)  # (B, 4) x0y0x1y1


def _compare_prompts(encoders, points, boxes, masks):
    ref, ours = encoders
    with torch.no_grad():
        ref_sparse, ref_dense = ref(points, boxes, masks)
        sparse, dense = ours(points, boxes, masks)
    assert sparse.shape == ref_sparse.shape
    assert dense.shape == ref_dense.shape
    torch.testing.assert_close(sparse, ref_sparse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, ref_dense, atol=1e-5, rtol=1e-5)
    return sparse, dense


@pytest.mark.parametrize("labels", [(0, 1), (0,), (1,), (-1, 0, 1)],
                         ids=["mixed", "negative", "positive", "with-padding-labels"])
@pytest.mark.parametrize("with_box", [False, True], ids=["points", "points+box"])
def test_point_prompts_match(prompt_encoders, labels, with_box):
    points = _points(3, 4, seed=3, labels=labels)
    boxes = _boxes(3, seed=4) if with_box else None
    sparse, _ = _compare_prompts(prompt_encoders, points, boxes, None)
    # Without a box, one padding token follows the points.
    assert sparse.shape[1] == 4 + (2 if with_box else 1)


def test_float_labels_match(prompt_encoders):
    coords, labels = _points(2, 3, seed=5, labels=(-1, 0, 1))
    _compare_prompts(prompt_encoders, (coords, labels.float()), None, None)


def test_box_only_matches(prompt_encoders):
    sparse, _ = _compare_prompts(prompt_encoders, None, _boxes(2, seed=6), None)
    assert sparse.shape == (2, 2, 256)


def test_mask_prompt_matches(prompt_encoders):
    masks = torch.randn(2, 1, 4 * EMBED_HW, 4 * EMBED_HW,
                        generator=torch.Generator().manual_seed(7))
    _, dense = _compare_prompts(prompt_encoders, _points(2, 1, seed=8), None, masks)
    assert dense.shape == (2, 256, EMBED_HW, EMBED_HW)


def test_no_prompt_gives_the_no_mask_embedding(prompt_encoders):
    sparse, dense = _compare_prompts(prompt_encoders, None, None, None)
    assert sparse.shape == (1, 0, 256)
    assert dense.shape == (1, 256, EMBED_HW, EMBED_HW)


def test_dense_pe_matches_and_is_cached(prompt_encoders):
    ref, ours = prompt_encoders
    pe = ours.get_dense_pe()
    assert pe.shape == (1, 256, EMBED_HW, EMBED_HW)
    torch.testing.assert_close(pe, ref.get_dense_pe(), atol=1e-5, rtol=1e-5)
    assert ours.get_dense_pe() is pe  # computed once


def test_dense_pe_cache_follows_the_buffer():
    ours = PromptEncoder()
    stale = ours.get_dense_pe()
    ref = _perturb(RefPromptEncoder(256, (EMBED_HW, EMBED_HW), (IMAGE_SIZE, IMAGE_SIZE), 16), 9)
    ours.load_state_dict(ref.state_dict(), strict=True)  # in-place copy into the same buffer
    fresh = ours.get_dense_pe()
    assert not torch.allclose(fresh, stale)
    torch.testing.assert_close(fresh, ref.get_dense_pe(), atol=1e-5, rtol=1e-5)

    # A new tensor in place of the buffer (what .to() and .cuda() do).
    ours.pe_layer.positional_encoding_gaussian_matrix = fresh.new_zeros(2, 128)
    assert torch.equal(ours.get_dense_pe()[:, 128:], torch.ones(1, 128, EMBED_HW, EMBED_HW))

    # An in-place edit of the buffer itself.
    with torch.no_grad():
        ours.pe_layer.positional_encoding_gaussian_matrix.copy_(
            ref.pe_layer.positional_encoding_gaussian_matrix)
    torch.testing.assert_close(ours.get_dense_pe(), fresh, atol=1e-5, rtol=1e-5)


def _image(seed: int, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 256, EMBED_HW, EMBED_HW, generator=gen)


def _compare_masks(decoders, image, pe, sparse, dense, multimask):
    ref, ours = decoders
    with torch.no_grad():
        ref_masks, ref_iou = ref(image, pe, sparse, dense, multimask)
        masks, iou = ours(image, pe, sparse, dense, multimask)
    n = 3 if multimask else 1
    assert masks.shape == ref_masks.shape == (sparse.shape[0], n, 4 * EMBED_HW, 4 * EMBED_HW)
    assert iou.shape == ref_iou.shape == (sparse.shape[0], n)
    torch.testing.assert_close(masks, ref_masks, **MASK_TOL)
    torch.testing.assert_close(iou, ref_iou, **IOU_TOL)


@settings(max_examples=3, deadline=None)
@given(batch=st.integers(1, 3), n_points=st.integers(1, 4), with_box=st.booleans(),
       multimask=st.booleans(), seed=st.integers(0, 2**16))
def test_decoder_matches_for_prompts_on_one_image(prompt_encoders, mask_decoders, batch,
                                                  n_points, with_box, multimask, seed):
    ref_pe, _ = prompt_encoders
    points = _points(batch, n_points, seed=seed, labels=(-1, 0, 1))
    boxes = _boxes(batch, seed=seed + 1) if with_box else None
    with torch.no_grad():
        sparse, dense = ref_pe(points, boxes, None)
    # One image embedding for all prompts: the official call repeats it per prompt.
    _compare_masks(mask_decoders, _image(seed), ref_pe.get_dense_pe(), sparse, dense, multimask)


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multi"])
def test_decoder_matches_with_mask_prompts(prompt_encoders, mask_decoders, multimask):
    # Dense prompts that differ per prompt: the image is no longer shared after the sum.
    ref_pe, _ = prompt_encoders
    masks = torch.randn(2, 1, 4 * EMBED_HW, 4 * EMBED_HW,
                        generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        sparse, dense = ref_pe(_points(2, 2, seed=11), None, masks)
    _compare_masks(mask_decoders, _image(12), ref_pe.get_dense_pe(), sparse, dense, multimask)


def test_decoder_matches_sparse_free_prompt(prompt_encoders, mask_decoders):
    ref_pe, _ = prompt_encoders
    with torch.no_grad():
        sparse, dense = ref_pe(None, None, None)
    _compare_masks(mask_decoders, _image(13), ref_pe.get_dense_pe(), sparse, dense, True)


@pytest.mark.parametrize("n_points", [10, 11, 20], ids=["10-points", "11-points", "20-points"])
def test_decoder_matches_with_many_points(prompt_encoders, mask_decoders, n_points):
    # Up to 15 tokens (10 points + padding + 5 output tokens) the cross-attentions fold the
    # image tokens' projections into the tokens' side; beyond, they project the image tokens.
    ref_pe, _ = prompt_encoders
    with torch.no_grad():
        sparse, dense = ref_pe(_points(2, n_points, seed=30), None, None)
    _compare_masks(mask_decoders, _image(31), ref_pe.get_dense_pe(), sparse, dense, True)


@settings(max_examples=3, deadline=None)
@given(batch=st.integers(1, 3), n_points=st.integers(1, 3), multimask=st.booleans(),
       seed=st.integers(0, 2**16))
def test_image_context_gives_the_official_masks(prompt_encoders, mask_decoders, batch,
                                                n_points, multimask, seed):
    # The image-only work done once (prepare_image) and reused by calls on the same image.
    ref_pe, ours_pe = prompt_encoders
    ref, ours = mask_decoders
    image, pe = _image(seed), ref_pe.get_dense_pe()
    with torch.no_grad():
        context = ours.prepare_image(image, pe, ours_pe(None, None, None)[1])
        for call in range(2):  # the same context serves call after call
            points = _points(batch, n_points, seed=seed + call)
            sparse, dense = ref_pe(points, None, None)
            ref_masks, ref_iou = ref(image, pe, sparse, dense, multimask)
            masks, iou = ours(image, pe, sparse, dense, multimask, context=context)
            torch.testing.assert_close(masks, ref_masks, **MASK_TOL)
            torch.testing.assert_close(iou, ref_iou, **IOU_TOL)
        # A mask prompt changes the image tokens: the context is left aside, still right.
        mask = torch.randn(batch, 1, 4 * EMBED_HW, 4 * EMBED_HW)
        sparse, dense = ref_pe(points, None, mask)
        masks, _ = ours(image, pe, sparse, dense, multimask, context=context)
        torch.testing.assert_close(masks, ref(image, pe, sparse, dense, multimask)[0],
                                   **MASK_TOL)


def test_decoder_takes_one_image_per_prompt(prompt_encoders, mask_decoders):
    # Beyond the official call: image batch B pairs image i with prompt i.
    ref_pe, _ = prompt_encoders
    ref, ours = mask_decoders
    images = _image(14, batch=2)
    pe = ref_pe.get_dense_pe()
    with torch.no_grad():
        sparse, dense = ref_pe(_points(2, 2, seed=15), None, None)
        masks, iou = ours(images, pe, sparse, dense, True)
        for i in range(2):
            ref_masks, ref_iou = ref(images[i:i + 1], pe, sparse[i:i + 1], dense[i:i + 1], True)
            torch.testing.assert_close(masks[i:i + 1], ref_masks, **MASK_TOL)
            torch.testing.assert_close(iou[i:i + 1], ref_iou, **IOU_TOL)
        with pytest.raises(ValueError, match="expected 1"):
            ours(_image(16, batch=3), pe, sparse, dense, True)


def test_full_chain_matches(prompt_encoders, mask_decoders):
    # Our prompt encoder feeding our decoder, against the official pair.
    ref_pe, ours_pe = prompt_encoders
    ref, ours = mask_decoders
    points, boxes, image = _points(2, 2, seed=17), _boxes(2, seed=18), _image(19)
    with torch.no_grad():
        ref_masks, ref_iou = ref(image, ref_pe.get_dense_pe(), *ref_pe(points, boxes, None), True)
        masks, iou = ours(image, ours_pe.get_dense_pe(), *ours_pe(points, boxes, None), True)
    torch.testing.assert_close(masks, ref_masks, **MASK_TOL)
    torch.testing.assert_close(iou, ref_iou, **IOU_TOL)


def test_gradients_reach_every_parameter_and_match(prompt_encoders, mask_decoders):
    # Single-mask calls skip the other masks' products, yet every parameter stays in the
    # graph (DistributedDataParallel needs that), and the shared image gets the official
    # gradient summed over prompts.
    ref_pe, _ = prompt_encoders
    ref, ours = mask_decoders
    with torch.no_grad():
        sparse, dense = ref_pe(_points(2, 2, seed=20), None, None)
    grads = []
    for model in (ref, ours):
        model.zero_grad()
        image = _image(21).requires_grad_()
        masks, iou = model(image, ref_pe.get_dense_pe(), sparse, dense, False)
        (masks.square().mean() + iou.sum()).backward()
        grads.append(image.grad)
    assert all(p.grad is not None for p in ours.parameters())
    torch.testing.assert_close(grads[1], grads[0], atol=1e-8, rtol=1e-4)
    ours.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
