"""The parts of SAM's training recipe: the losses against their equations and torchvision,
and the simulated prompts against the masks they come from."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnvision.sam.prompt_sampling import (
    error_points,
    mask_boxes,
    noisy_boxes,
    sample_points,
)
from attnvision.train.mask_losses import (
    FOCAL_WEIGHT,
    dice_loss,
    mask_iou,
    sam_loss,
    sigmoid_focal_loss,
)


def random_masks(batch: int, size: int, seed: int) -> torch.Tensor:
    """Rectangles and noise, never empty."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.rand(batch, size, size, generator=gen) > 0.8
    masks[:, size // 4: size // 2, size // 3: size // 2 + 2] = True
    return masks


# --- losses ------------------------------------------------------------------------------------


def test_focal_loss_matches_torchvision():
    from torchvision.ops import sigmoid_focal_loss as reference

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 16, 16, generator=gen) * 3
    targets = (torch.rand(3, 2, 16, 16, generator=gen) > 0.5).float()
    expected = reference(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets),
                               expected.flatten(-2).mean(-1))


def test_dice_loss_is_its_equation():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    p = torch.sigmoid(logits)
    expected = 1 - (2 * (p * targets).sum() + 1) / (p.sum() + targets.sum() + 1)
    torch.testing.assert_close(dice_loss(logits, targets), expected.reshape(1))
    # A confident, right prediction costs nothing; the exact opposite: 1 - 1 / (1 + 3 + 1).
    right = torch.where(targets.bool(), 20.0, -20.0)
    assert dice_loss(right, targets).item() < 1e-6
    assert dice_loss(-right, targets).item() == pytest.approx(0.8)


def test_mask_iou():
    targets = torch.zeros(1, 4, 4)
    targets[0, :2] = 1  # 8 pixels
    logits = torch.full((1, 4, 4), -1.0)
    logits[0, 1:3] = 1.0  # 8 pixels, 4 shared
    assert mask_iou(logits, targets).item() == pytest.approx(4 / 12)
    assert mask_iou(torch.full((1, 4, 4), -1.0), torch.zeros(1, 4, 4)).item() == 1.0


def test_sam_loss_learns_the_best_mask_only_and_every_iou():
    gen = torch.Generator().manual_seed(1)
    targets = random_masks(2, 16, seed=2).float()
    good = torch.where(targets.bool(), 8.0, -8.0)
    logits = torch.stack([torch.randn(2, 16, 16, generator=gen), good,
                          torch.randn(2, 16, 16, generator=gen)], dim=1).requires_grad_()
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    loss, parts = sam_loss(logits, iou_pred, targets)
    assert parts["best"].tolist() == [1, 1]
    expected = (FOCAL_WEIGHT * sigmoid_focal_loss(good, targets) + dice_loss(good, targets)
                ).mean() + parts["iou_mse"]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[:, [0, 2]].abs().sum() == 0  # the other candidates get no gradient
    assert logits.grad[:, 1].abs().sum() > 0
    assert (iou_pred.grad != 0).all()  # the IoU head learns every candidate's IoU


# --- simulated prompts --------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(4, 40))
def test_points_fall_inside_their_masks(seed, size):
    masks = random_masks(3, size, seed)
    points = sample_points(masks, torch.Generator().manual_seed(seed))
    x, y = points[:, 0].long(), points[:, 1].long()
    assert masks[torch.arange(3), y, x].all()


def test_points_are_uniform_over_the_mask():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2, 3] = mask[0, 7, 8] = True
    gen = torch.Generator().manual_seed(0)
    hits = torch.cat([sample_points(mask, gen) for _ in range(400)])
    share = (hits[:, 0] == 3).float().mean().item()
    assert 0.4 < share < 0.6


def test_boxes_and_their_noise():
    masks = torch.zeros(2000, 100, 100, dtype=torch.bool)
    masks[:, 20:60, 30:50] = True  # 40 rows x 20 columns
    assert mask_boxes(masks[:1]).tolist() == [[30.0, 20.0, 49.0, 59.0]]
    boxes = noisy_boxes(masks, torch.Generator().manual_seed(0))
    shift = boxes - mask_boxes(masks)
    assert shift.abs().max() <= 20.0 + 1e-6
    # 10 % of the side: 2 pixels in x (width 20), 4 in y (height 40).
    assert shift[:, 0].std().item() == pytest.approx(2.0, rel=0.1)
    assert shift[:, 1].std().item() == pytest.approx(4.0, rel=0.1)
    assert (boxes[:, :2] <= boxes[:, 2:]).all() and boxes.min() >= 0 and boxes.max() <= 99
    with pytest.raises(ValueError, match="empty mask"):
        sample_points(torch.zeros(1, 5, 5, dtype=torch.bool))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_error_points_correct_the_prediction(seed):
    masks = random_masks(4, 24, seed)
    gen = torch.Generator().manual_seed(seed)
    predicted = torch.rand(masks.shape, generator=gen) > 0.5
    predicted[3] = masks[3]  # a perfect prediction
    points, labels = error_points(predicted, masks, gen)
    x, y = points[:, 0].long(), points[:, 1].long()
    rows = torch.arange(4)
    for i in range(3):
        assert predicted[i, y[i], x[i]] != masks[i, y[i], x[i]]  # inside the error region
    # Missed object: positive; spilled over: negative.
    assert torch.equal(labels, masks[rows, y, x].long())
    assert labels[3] == 1 and masks[3, y[3], x[3]]
    assert np.isin(labels.numpy(), (0, 1)).all()
