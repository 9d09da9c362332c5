"""SAM's training step: simulated interactive prompting (Segment Anything, §3 and appendix A).

For each object of each image, the first prompt is a point drawn uniformly inside it or its
box with noise (half the objects each). The model answers; the loss (focal + dice 20:1 on the
best allowed candidate, MSE on the IoU head) is taken; the next prompt adds a point drawn from
the error region (positive where the object was missed, negative where the mask spilled over)
and feeds back the previous low-resolution logits as the mask prompt. ``rounds`` rounds per
example, each one's loss averaged in. A lone point is answered with the three ambiguous masks,
anything else with the single-mask output, as the official model is used.

With text (``text_share`` of the steps, on scenes whose objects have attributes), each object
is named by a phrase that fits it and no other object of its image ("the red star", "the big
ring on the left", paraphrases drawn at random); the first prompt is that phrase alone or with
a point, later clicks are added to it, and the answer is always the single-mask output. The
first round's mask prompt is the text locator's map of where the phrase points, which learns
from its own loss (binary cross-entropy + dice against the object's mask) besides SAM's.

With a frozen image encoder, inputs may carry the images' ``embeddings`` instead of the
images (:class:`~attnvision.sam.training_data.EncodedDataset`): the step then skips the
encoder, by far its most expensive part.

Prompt tokens carry no sequence position in SAM's decoder (attention is order-blind), so the
points and box corners of a batch line up as one tensor: a box is two points labelled 2 and
3, a lone point is followed by the padding token, and every later point is put in front.

:class:`InteractiveSam` holds the model's three parts under their own names, so its state dict
is SAM's and the training loop's checkpoints load with ``build_sam``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.data.scenes import grid_cells
from attnvision.sam.model import Sam
from attnvision.sam.prompt_encoder import BOX_BOTTOM_RIGHT, BOX_TOP_LEFT, NOT_A_POINT, POSITIVE
from attnvision.sam.prompt_sampling import error_points, noisy_boxes, sample_points
from attnvision.sam.training_data import normalised_input, valid_pixels
from attnvision.text.phrases import naming_phrases
from attnvision.train.mask_losses import dice_loss, mask_iou, sam_loss


def pick_phrases(b_idx: Tensor, attrs: Tensor, cells: Tensor) -> list[str | None]:
    """A random phrase naming each object among the objects of its image, or None when no
    phrase can (two objects alike in every attribute). b_idx (N,) image of each object,
    attrs (N, 3) shape, colour, size, cells (N, 2) row, column."""
    full = torch.cat([attrs, cells], dim=1).tolist()
    images = b_idx.tolist()
    out: list[str | None] = []
    for i, image in enumerate(images):
        members = [j for j, other in enumerate(images) if other == image]
        options = naming_phrases(members.index(i), [full[j] for j in members])
        out.append(options[int(torch.randint(len(options), ()))] if options else None)
    return out


def locator_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross-entropy + dice of the text locator's map (N, H, W) against the named
    objects' masks (N, H, W): the map must cover the object, not only peak inside it."""
    bce = F.binary_cross_entropy_with_logits(logits, targets.float())  # every map is H x W
    return bce + dice_loss(logits, targets).mean()


def first_prompts(masks: Tensor, use_box: Tensor) -> tuple[Tensor, Tensor]:
    """The first prompt of each object as a two-token point sequence: a uniform point and
    the padding token, or the noisy box's two corners. masks (N, H, W), use_box (N,) bool ->
    coords (N, 2, 2), labels (N, 2)."""
    n = masks.shape[0]
    points = torch.cat([sample_points(masks)[:, None], masks.new_zeros(n, 1, 2, dtype=torch.float)],
                       dim=1)  # (N, 2, 2): the point, then the padding token's place
    corners = noisy_boxes(masks).view(n, 2, 2)
    coords = torch.where(use_box[:, None, None], corners, points)
    point_labels = torch.tensor([POSITIVE, NOT_A_POINT], device=masks.device)
    box_labels = torch.tensor([BOX_TOP_LEFT, BOX_BOTTOM_RIGHT], device=masks.device)
    labels = torch.where(use_box[:, None], box_labels, point_labels)
    return coords, labels


class InteractiveSam(nn.Module):
    """``forward(inputs)`` -> the mean loss over ``rounds`` of simulated clicks.

    inputs (:mod:`attnvision.sam.training_data`): ``image`` (B, 3, S, S) uint8 at the model's
    input size, padded bottom/right, or ``embeddings`` (B, 256, g, g) from a frozen encoder;
    ``masks`` (B, K, S, S) bool, empty rows ignored; ``size`` (B, 2) the (h, w) inside the
    padding; optionally ``attributes`` (B, K, 3) shape, colour and size indices of each
    object, for text prompts (a model with ``text_projection``; ``text_share`` of the steps).
    Randomness (prompts, phrases) comes from torch's global generator, which the training
    loop seeds and
    saves, so a resumed run replays. ``last`` holds the latest step's figures.
    """

    def __init__(self, sam: Sam, rounds: int = 3, box_share: float = 0.5,
                 loss_scale: int = 2, text_share: float = 0.0) -> None:
        super().__init__()
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if text_share > 0:
            sam.prompt_encoder.require_text()
        self.image_encoder = sam.image_encoder
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.register_buffer("pixel_mean", sam.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", sam.pixel_std.clone(), False)
        # The loss compares masks at loss_scale x the decoder's low-res size (its logits
        # upsampled, the objects area-averaged down): full resolution costs 4x more for the
        # same boundaries, to within a pixel at 256 px.
        self.rounds, self.box_share, self.loss_scale = rounds, box_share, loss_scale
        self.text_share = text_share
        self.last: dict[str, float] = {}

    def _text(self, b_idx: Tensor, k_idx: Tensor, targets: Tensor, attrs: Tensor
              ) -> tuple[Tensor | None, Tensor]:
        """Phrase vectors (N', text_dim) of the objects some phrase names, and which they are."""
        from attnvision.text.sentence_encoder import sentence_encoder

        phrases = pick_phrases(b_idx, attrs[b_idx, k_idx].cpu(), grid_cells(targets).cpu())
        keep = torch.tensor([p is not None for p in phrases], device=targets.device)
        if not keep.any():
            return None, keep
        vectors = sentence_encoder().encode([p for p in phrases if p is not None])
        return vectors.to(targets.device), keep

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        masks = inputs["masks"]
        s = masks.shape[-1]
        size = inputs.get("size", torch.tensor([[s, s]], device=masks.device).expand(
            masks.shape[0], 2))
        valid = valid_pixels(size, s)  # (B, S, S)
        learns = any(p.requires_grad for p in self.image_encoder.parameters())
        if "embeddings" in inputs:  # encoded once, before training
            if learns:
                raise ValueError("inputs hold embeddings, but the image encoder is trained: "
                                 "freeze it, or give images")
            embeddings = inputs["embeddings"].float()  # (B, 256, g, g)
        else:
            # A frozen encoder (fine-tuning the decoder) keeps no activations for backward.
            x = normalised_input(inputs["image"], valid, self.pixel_mean, self.pixel_std)
            with torch.set_grad_enabled(learns and torch.is_grad_enabled()):
                embeddings = self.image_encoder(x)  # (B, 256, g, g)
        b_idx, k_idx = masks.flatten(2).any(-1).nonzero(as_tuple=True)
        text = None
        attrs = inputs.get("attributes")
        if attrs is not None and self.text_share > 0 and float(torch.rand(())) < self.text_share:
            text, keep = self._text(b_idx, k_idx, masks[b_idx, k_idx], attrs)
            if text is not None:
                b_idx, k_idx = b_idx[keep], k_idx[keep]
        if len(b_idx) == 0:  # no object in the whole batch: nothing to learn
            return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)
        targets = masks[b_idx, k_idx]  # (N, S, S): one prompt per object
        clickable = valid[b_idx]  # users click on the image, never on the padding
        n, size = targets.shape[0], targets.shape[-2:]
        embeddings = embeddings[b_idx]  # (N, 256, g, g)
        image_pe = self.prompt_encoder.get_dense_pe()
        if text is None:
            use_box = torch.rand(n, device=masks.device) < self.box_share
            coords, labels = first_prompts(targets, use_box)
            lone_point = ~use_box
        else:  # the phrase alone, or with a point
            with_point = float(torch.rand(())) < 0.5
            lone_point = torch.zeros(n, dtype=torch.bool, device=masks.device)
            coords, labels = (first_prompts(targets, lone_point) if with_point
                              else (None, None))
        multimask = torch.tensor([False, True, True, True], device=masks.device)
        low = 4 * embeddings.shape[-1]
        loss_size = (low * self.loss_scale,) * 2
        small = F.interpolate(targets[:, None].float(), loss_size, mode="area")[:, 0] > 0.5
        rows = torch.arange(n, device=masks.device)
        mask_input = None
        total = embeddings.new_zeros((), dtype=torch.float)
        ious = []
        located = {}
        if text is not None:  # the first mask prompt: where the phrase points
            mask_input = self.prompt_encoder.locate_text(embeddings, text)  # (N, 1, 4g, 4g) fp32
            up = F.interpolate(mask_input, loss_size, mode="bilinear",
                               align_corners=False)[:, 0]
            total = total + locator_loss(up, small)
            located = {"iou_located": float(mask_iou(up, small).mean())}
        for r in range(self.rounds):
            points = None if coords is None else (coords, labels)
            sparse, dense = self.prompt_encoder(points, None, mask_input, pad=False, text=text)
            logits, iou_pred = self.mask_decoder.predict_masks(embeddings, image_pe, sparse,
                                                               dense)  # (N, 4, 4g, 4g), (N, 4)
            if r == 0:  # a lone point gets the 3 ambiguous masks, anything else the single one
                allowed = torch.where(lone_point[:, None], multimask, ~multimask)  # (N, 4)
            else:  # several points: the single-mask output only
                logits, iou_pred = logits[:, :1], iou_pred[:, :1]
                allowed = torch.ones_like(iou_pred, dtype=torch.bool)
            up = F.interpolate(logits.float(), loss_size, mode="bilinear", align_corners=False)
            loss, parts = sam_loss(up, iou_pred, small, allowed)
            total = total + loss / self.rounds
            ious.append(float(parts["iou"].mean()))
            if r + 1 == self.rounds:
                break
            with torch.no_grad():  # the next click, as a user would give it
                shown = iou_pred.float().masked_fill(~allowed, -torch.inf).argmax(1)  # (N,)
                chosen = F.interpolate(logits[rows, shown][:, None].float(), size,
                                       mode="bilinear", align_corners=False)[:, 0]
                point, label = error_points((chosen > 0) & clickable, targets)
                if coords is None:  # the first click after a phrase: the point, then padding
                    coords = torch.cat([point[:, None], torch.zeros_like(point)[:, None]], 1)
                    labels = torch.stack([label, torch.full_like(label, NOT_A_POINT)], 1)
                else:
                    coords = torch.cat([point[:, None], coords], dim=1)
                    labels = torch.cat([label[:, None], labels], dim=1)
                mask_input = logits[rows, shown][:, None].float()  # (N, 1, 4g, 4g)
        self.last = {"objects": n, "text": text is not None, **located,
                     **{f"iou_round{r + 1}": v for r, v in enumerate(ious)}}
        # Parts a step may not use (the mask-prompt path when rounds == 1) still join the
        # graph with a zero gradient: DistributedDataParallel waits for every parameter.
        return total + sum(p.view(-1)[0] * 0.0 for p in self.parameters() if p.requires_grad)
