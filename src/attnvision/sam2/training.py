"""SAM 2's training step: clips tracked with memory, prompts simulated from the true masks.

The recipe of the SAM 2 paper and of its released training code, run through
the same per-frame functions the video predictors use (:mod:`attnvision.sam2.tracking`), with
gradients flowing through memories and object pointers from frame to frame:

- Every object of every clip is one batch entry; the image encoder runs once per frame of
  each clip (B·T frames in one call) and every object of the clip reads those features.
- One kind of first prompt per step, as the official step draws one for its whole batch
  (shares ``prompt_shares``, default click 0.5, box 0.25, mask 0.25; the official recipe
  gives masks 0.5, but our per-epoch measure and the predictors' common use start from one
  click): a click drawn uniformly inside the object, its box with noise
  (:func:`~attnvision.sam.prompt_sampling.noisy_boxes`), or its mask, which is the frame's
  output (:func:`~attnvision.sam2.tracking.mask_as_output`). The prompted frames are frame 0
  and, with probability ``second_prompt_share`` (the official "1 to 2 initial conditioning
  frames"), one more random frame; for clicks and boxes only a frame where every object of
  the batch shows, so that each has something to click or box. Prompted frames read no
  memory (``is_init_cond_frame``), as the predictors treat a prompt on an untracked frame.
- Prompted frames go first, then every other frame in order, each tracked from the memory
  bank: the conditioning frames' memories and the last ``num_maskmem - 1`` frames', the
  object pointers of past conditioning frames and of recent frames, the decoder's three masks
  and the best by predicted IoU, then the frame's memory from that mask (its sigmoid, also on
  clicked frames: thresholding, which the predictors do there, has no gradient; the official
  training does the same). Memories stay in the model's dtype (the predictors store bfloat16
  to save memory; here they carry gradients).
- With click or box prompts, ``corrected_frames`` random later frames (default 2 of the 7)
  get a correction click once tracked: drawn from the error region of the tracked mask
  (:func:`~attnvision.sam.prompt_sampling.error_points`: positive where the object was missed,
  negative where the mask spilled over; a negative click anywhere when the object is absent
  and none was predicted), answered with the tracked low-res logits fed back as the mask
  prompt (clamped to ±32, as the video predictor feeds them), and the frame becomes a
  conditioning frame (the official ``add_all_frames_to_correct_as_cond``). As the official
  step, mask prompts get no corrections. Unlike it, the first prompted frames get no
  correction clicks either: our measure tracks from one click, and the memory the later frames
  learn to read should be the one-click mask they will read then.
- Losses (:func:`attnvision.train.mask_losses.sam2_loss`), summed over frames and over the
  decoder's answers on a frame (a corrected frame has two), each averaged over objects: focal
  + dice 20:1 on the best of the candidates, L1 on every candidate's predicted IoU, binary
  cross-entropy on the object score; mask and IoU terms only where the object is present.
  A mask prompt's own frame is not a prediction and adds no loss. Masks are compared at
  ``loss_scale`` times the decoder's low-res size (SAM's training does the same here: full
  resolution costs 4x more for boundaries within a pixel).

Not taken from the official step: object pointers of conditioning frames *ahead* of a frame
(the official training reads them, inference does not; our step reads what inference reads),
the 7 correction clicks per corrected frame (one here), and clicks sampled from the object
instead of the error (10 %).

:class:`SAM2Train` holds the model's parts under the model's own names, so the training loop's
checkpoints are SAM 2 state dicts that :func:`~attnvision.sam2.build.build_sam2` loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.sam.prompt_encoder import POSITIVE
from attnvision.sam.prompt_sampling import error_points, noisy_boxes, sample_points
from attnvision.sam2.model import SAM2
from attnvision.sam2.tracking import (
    FrameFeatures,
    FrameMemory,
    HeadsOutput,
    MemoryBank,
    conditioned_features,
    encode_memory,
    mask_as_output,
    sam_heads,
)
from attnvision.sam2.transforms import normalise
from attnvision.sam2.video_state import REFINE_CLAMP
from attnvision.train.mask_losses import mask_iou, sam2_loss

if TYPE_CHECKING:
    from attnvision.data.moving_scenes import Clip
    from attnvision.sam2.training_data import HeldOutClips

PROMPT_KINDS = ("click", "box", "mask")
DEFAULT_SHARES = (0.5, 0.25, 0.25)  # click, box, mask


def normalised_frames(frames: Tensor) -> Tensor:
    """(..., 3, S, S) uint8 -> float32 image-encoder input, as the video predictors make it
    (/255, then the ImageNet mean and standard deviation)."""
    return normalise(frames.float() / 255)


def encode_frames(model: SAM2, images: Tensor, encoder_learns: bool = True) -> FrameFeatures:
    """:func:`attnvision.sam2.tracking.frame_features` for training: a frozen image encoder
    runs without keeping activations, while the decoder's projections of the high-resolution
    maps (``conv_s0`` / ``conv_s1``, as in ``SAM2.forward_image``) still learn."""
    # images: (F, 3, S, S) normalised
    with torch.set_grad_enabled(encoder_learns and torch.is_grad_enabled()):
        out = model.image_encoder(images, positions=True)
    assert out.vision_pos_enc is not None
    fpn = list(out.backbone_fpn)
    high_res: list[Tensor] = []
    if model.config.use_high_res_features_in_sam:
        high_res = [model.sam_mask_decoder.conv_s0(fpn[0]),  # (F, D/8, 4h, 4w)
                    model.sam_mask_decoder.conv_s1(fpn[1])]  # (F, D/4, 2h, 2w)
    return FrameFeatures(vision=fpn[-1], pos=out.vision_pos_enc[-1][:1], high_res=high_res)


def _rows(features: FrameFeatures, rows: Tensor) -> FrameFeatures:
    """The features of some frames (one per object), read by those objects."""
    return FrameFeatures(vision=features.vision[rows], pos=features.pos,
                         high_res=[h[rows] for h in features.high_res])


def correction_clicks(predicted: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """A correction click per object: (N, S, S) predicted and true masks (bool) -> points
    (N, 2) x, y and labels (N,) 1 / 0. From the error region (:func:`error_points`); where
    the object is absent and nothing was predicted, a negative click anywhere (the official
    sampler's click on the background when nothing is wrong)."""
    predicted, targets = predicted.bool(), targets.bool()
    empty = ~(predicted | targets).flatten(1).any(dim=1)  # (N,)
    points = torch.zeros(len(targets), 2, device=targets.device)
    labels = torch.zeros(len(targets), dtype=torch.long, device=targets.device)
    some = ~empty
    if some.any():
        points[some], labels[some] = error_points(predicted[some], targets[some])
    if empty.any():
        points[empty] = sample_points(~targets[empty])
    return points, labels


@torch.no_grad()
def _chosen_iou(heads: HeadsOutput, targets: Tensor) -> Tensor:
    """IoU of the answer's chosen mask with the targets (N, L, L), at their size: (N,)."""
    up = F.interpolate(heads.low_res_masks.float(), targets.shape[-2:], mode="bilinear",
                       align_corners=False)[:, 0]
    return mask_iou(up, targets)


@dataclass
class FrameRecord:
    """What happened on one frame of an episode (for tests and figures; no graph kept)."""

    kind: str  # "click", "box", "mask" (prompted), "tracked" or "corrected"
    conditioning: bool  # its memory went into the bank's conditioning frames
    answers: int  # decoder answers with a loss (0: a mask prompt's own frame)
    loss: Tensor  # () this frame's part of the episode's loss (detached)
    object_score: Tensor  # (N,) the final answer's object-score logits
    iou: Tensor  # (N,) IoU of the final answer's chosen mask at the loss resolution
    points: Tensor | None = None  # (N, P, 2) the clicks (or box corners) given on the frame


@dataclass
class Episode:
    """One training step's simulated session on a batch of clips."""

    loss: Tensor  # the scalar to minimise
    kind: str  # the first prompt's kind
    prompt_frames: list[int]
    corrected_frames: list[int]
    order: list[int]  # the frames in the order they were processed
    bank: MemoryBank
    frames: dict[int, FrameRecord] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)  # summed over frames


class SAM2Train(nn.Module):
    """``forward(inputs)`` -> the loss of one simulated session per clip (module doc).

    inputs (:mod:`attnvision.sam2.training_data`): ``frames`` (B, T, 3, S, S) uint8 at the
    model's input size, ``masks`` (B, K, T, S, S) bool, ``valid`` (B, K) bool. Random draws
    (prompt kind, frames, clicks) come from torch's global generator, which the training loop
    saves with each checkpoint, so a resumed run replays. ``last`` holds the latest step's
    figures.

    The model's parts and its own parameters are registered here under their names, so this
    module's state dict is the model's; the model itself is ``self.sam2``.
    """

    def __init__(self, model: SAM2, prompt_shares: Sequence[float] = DEFAULT_SHARES,
                 second_prompt_share: float = 0.5, corrected_frames: int = 2,
                 loss_scale: int = 2) -> None:
        super().__init__()
        if len(prompt_shares) != 3 or min(prompt_shares) < 0 or sum(prompt_shares) <= 0:
            raise ValueError(f"prompt_shares must be three shares >= 0 (click, box, mask), "
                             f"got {prompt_shares}")
        if not 0 <= second_prompt_share <= 1 or corrected_frames < 0 or loss_scale < 1:
            raise ValueError("second_prompt_share must be in [0, 1], corrected_frames >= 0 "
                             "and loss_scale >= 1")
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        # Not registered (its parts are, above): the tracking functions take the model.
        self.__dict__["_model"] = model
        total = float(sum(prompt_shares))
        self.prompt_shares = tuple(float(s) / total for s in prompt_shares)
        self.second_prompt_share = second_prompt_share
        self.corrected_frames = corrected_frames
        self.loss_scale = loss_scale
        self.last: dict[str, object] = {}

    @property
    def sam2(self) -> SAM2:
        """The model, its own parameters those registered here (``.to()`` may replace them)
        and its mode this module's."""
        model: SAM2 = self.__dict__["_model"]
        for name, p in self._parameters.items():
            model._parameters[name] = p
        model.training = self.training
        return model

    # -- random draws (torch's global generator) --------------------------------------------

    def _draw_kind(self) -> str:
        r, edge = float(torch.rand(())), 0.0
        for kind, share in zip(PROMPT_KINDS, self.prompt_shares, strict=True):
            edge += share
            if r < edge:
                return kind
        return next(k for k, s in zip(PROMPT_KINDS, self.prompt_shares, strict=True) if s > 0)

    def _draw_prompt_frames(self, kind: str, present: Tensor) -> list[int]:
        # present: (N, T) bool
        frames = [0]
        if float(torch.rand(())) < self.second_prompt_share:
            everywhere = present.all(dim=0)  # (T,)
            options = [t for t in range(1, present.shape[1])
                       if kind == "mask" or bool(everywhere[t])]
            if options:
                frames.append(options[int(torch.randint(len(options), ()))])
        return frames

    def _draw_corrected(self, kind: str, num_frames: int, prompted: list[int]) -> list[int]:
        if kind == "mask" or self.corrected_frames == 0:
            return []
        rest = [t for t in range(num_frames) if t not in prompted]
        order = torch.randperm(len(rest)).tolist()
        return sorted(rest[i] for i in order[:self.corrected_frames])

    # -- one frame ----------------------------------------------------------------------------

    def _prompted(self, model: SAM2, t: int, features: FrameFeatures, bank: MemoryBank,
                  kind: str, target: Tensor, num_frames: int
                  ) -> tuple[HeadsOutput, Tensor | None]:
        """A frame prompted first: no memory read (``is_init_cond_frame``)."""
        # target: (N, S, S) bool
        if kind == "mask":
            return mask_as_output(model, features.vision, features.high_res,
                                  target[:, None]), None
        embed = conditioned_features(model, t, features, bank, is_init_cond_frame=True,
                                     num_frames=num_frames)
        if kind == "click":
            point = sample_points(target)[:, None]  # (N, 1, 2)
            labels = torch.full(point.shape[:2], POSITIVE, dtype=torch.long,
                                device=target.device)
            # One click: the three ambiguous masks, the best kept (track_step's rule).
            return sam_heads(model, embed, features.high_res, points=(point, labels),
                             multimask=True), point
        boxes = noisy_boxes(target)  # (N, 4)
        return sam_heads(model, embed, features.high_res, boxes=boxes,
                         multimask=False), boxes.view(-1, 2, 2)

    def _tracked(self, model: SAM2, t: int, features: FrameFeatures, bank: MemoryBank,
                 target: Tensor, num_frames: int, correct: bool
                 ) -> tuple[list[HeadsOutput], Tensor | None]:
        """A frame tracked from the bank (three masks, the best kept), then corrected by a
        click if ``correct``: the same memory-conditioned features, the click, and the
        tracked logits as the mask prompt."""
        embed = conditioned_features(model, t, features, bank, is_init_cond_frame=False,
                                     num_frames=num_frames)
        tracked = sam_heads(model, embed, features.high_res, multimask=True)
        if not correct:
            return [tracked], None
        with torch.no_grad():  # the user's click, from what they see
            point, label = correction_clicks(tracked.high_res_masks[:, 0] > 0, target)
        prev = tracked.low_res_masks.clamp(-REFINE_CLAMP, REFINE_CLAMP)
        corrected = sam_heads(model, embed, features.high_res,
                              points=(point[:, None], label[:, None]), mask_input=prev,
                              multimask=True)
        return [tracked, corrected], point[:, None]

    # -- the episode --------------------------------------------------------------------------

    def _touch_every_parameter(self) -> Tensor:
        # Parts a step may not use (the mask prompt's downsampler, box embeddings ...) still
        # join the graph with a zero gradient: DistributedDataParallel waits for every one.
        zero = torch.zeros((), device=self.sam2.device)
        return zero + sum(p.view(-1)[0] * 0.0 for p in self.parameters() if p.requires_grad)

    def run(self, inputs: dict[str, Tensor], kind: str | None = None,
            prompt_frames: list[int] | None = None,
            corrected_frames: list[int] | None = None) -> Episode:
        """One session per clip; ``kind``, ``prompt_frames`` (frame 0 first) and
        ``corrected_frames`` replace the random draws (tests, figures)."""
        model = self.sam2
        frames, masks, valid = inputs["frames"], inputs["masks"], inputs["valid"]
        # frames: (B, T, 3, S, S) uint8; masks: (B, K, T, S, S) bool; valid: (B, K) bool
        num_frames = frames.shape[1]
        size = frames.shape[-1]
        if size != model.image_size or frames.shape[-2] != size:
            raise ValueError(f"frames must be {model.image_size} px squares (the model's input "
                             f"size), got {tuple(frames.shape[-2:])}")
        b_idx, k_idx = valid.nonzero(as_tuple=True)
        n = len(b_idx)
        if n == 0:  # no object in the whole batch: nothing to learn
            self.last = {"objects": 0}
            return Episode(self._touch_every_parameter(), "none", [], [], [], MemoryBank())
        targets = masks[b_idx, k_idx].bool()  # (N, T, S, S)
        present = targets.flatten(2).any(dim=-1)  # (N, T)
        kind = kind or self._draw_kind()
        if kind not in PROMPT_KINDS:
            raise ValueError(f"kind must be one of {PROMPT_KINDS}, got {kind!r}")
        prompt_frames = prompt_frames or self._draw_prompt_frames(kind, present)
        if prompt_frames[0] != 0:
            raise ValueError("frame 0 is always prompted (first in prompt_frames)")
        if kind != "mask" and not present[:, prompt_frames].all():
            raise ValueError("a click or box needs every object visible on its prompted "
                             "frames; the datasets keep objects visible on frame 0")
        corrected = (corrected_frames if corrected_frames is not None
                     else self._draw_corrected(kind, num_frames, prompt_frames))

        # Every frame of every clip encoded once; object i reads row b_idx[i] * T + t.
        learns = any(p.requires_grad for p in model.image_encoder.parameters())
        encoded = encode_frames(model, normalised_frames(frames.flatten(0, 1)), learns)
        low = 4 * encoded.vision.shape[-1]
        loss_size = (low * self.loss_scale,) * 2
        small = F.interpolate(targets.float(), loss_size, mode="area") > 0.5  # (N, T, L, L)

        bank = MemoryBank()
        order = prompt_frames + [t for t in range(num_frames) if t not in prompt_frames]
        episode = Episode(torch.zeros((), device=frames.device), kind, list(prompt_frames),
                          list(corrected), order, bank)
        # Figures kept as tensors until the end: one device sync per figure, not per frame.
        sums = {k: torch.zeros((), device=frames.device)
                for k in ("focal", "dice", "iou_l1", "object")}
        tracked_iou: list[Tensor] = []
        total = self._touch_every_parameter()
        for t in order:
            features = _rows(encoded, b_idx * num_frames + t)
            target = targets[:, t]
            if t in prompt_frames:
                heads, points = self._prompted(model, t, features, bank, kind, target,
                                               num_frames)
                answers = [] if kind == "mask" else [heads]
                conditioning, from_clicks, label = True, kind != "mask", kind
            else:
                answers, points = self._tracked(model, t, features, bank, target, num_frames,
                                                t in corrected)
                heads = answers[-1]
                conditioning = from_clicks = t in corrected
                label = "corrected" if conditioning else "tracked"
            # The frame's memory, from its final answer, for the frames after it.
            maskmem = encode_memory(model, features.vision, heads.high_res_masks,
                                    heads.object_score_logits, from_clicks=from_clicks)
            bank.add(t, FrameMemory(maskmem, heads.obj_ptr), conditioning=conditioning)

            frame_loss = torch.zeros((), device=frames.device)
            for answer in answers:
                up = F.interpolate(answer.multimasks, loss_size, mode="bilinear",
                                   align_corners=False)  # (N, M, L, L)
                per_object, parts = sam2_loss(up, answer.ious, answer.object_score_logits,
                                              small[:, t], present[:, t])
                frame_loss = frame_loss + per_object.mean()
                for key in sums:
                    sums[key] = sums[key] + parts[key].mean()
            chosen_iou = _chosen_iou(heads, small[:, t])
            if label in ("tracked", "corrected"):  # how well tracking alone did
                alone = (chosen_iou if answers[0] is heads
                         else _chosen_iou(answers[0], small[:, t]))
                tracked_iou.append(torch.where(present[:, t], alone, -1.0))
            total = total + frame_loss
            episode.frames[t] = FrameRecord(
                label, conditioning, len(answers), frame_loss.detach(),
                heads.object_score_logits.detach().float().view(-1), chosen_iou,
                None if points is None else points.detach())
        episode.loss = total
        episode.parts = {k: float(v) for k, v in sums.items()}
        seen = torch.cat(tracked_iou) if tracked_iou else torch.zeros(0)
        seen = seen[seen >= 0]  # frames where the object is present
        self.last = {"objects": n, "kind": kind, "prompt_frames": list(prompt_frames),
                     "corrected_frames": list(corrected),
                     "iou_tracked": float(seen.mean()) if len(seen) else None,
                     **episode.parts}
        return episode

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        return self.run(inputs).loss


def sam2_of(module: nn.Module) -> SAM2:
    """The SAM 2 a training module trains (or a SAM 2 itself)."""
    if isinstance(module, SAM2Train):
        return module.sam2
    if isinstance(module, SAM2):
        return module
    raise TypeError(f"expected a SAM2 or SAM2Train, got {type(module).__name__}")


def evaluate_tracking(module: nn.Module, clips: Sequence[Clip] | HeldOutClips,
                      prompt: str = "click",
                      memory: bool = True) -> dict:
    """The per-epoch measure: J&F of tracking each held-out clip's objects from one click
    on frame 0 (:func:`attnvision.sam2.synthetic_eval.evaluate_clips`); ``clips`` a list of
    clips or :class:`~attnvision.sam2.training_data.HeldOutClips`. The model's mode is
    restored afterwards; the clips' own records (``per_clip``) are left out."""
    from attnvision.sam2.synthetic_eval import evaluate_clips

    model = sam2_of(module)
    modules = [module, model, *model.modules()]
    modes = [m.training for m in modules]
    chosen = clips.clips() if hasattr(clips, "clips") else list(clips)
    try:
        model.eval()
        result = evaluate_clips(model, chosen, prompt=prompt, memory=memory, progress=False)
    finally:  # every module's flag as it was (a part may be held in eval mode on purpose)
        for m, mode in zip(modules, modes, strict=True):
            m.training = mode
    # The figures, not each clip's record: they go into every checkpoint's JSON.
    return {k: v for k, v in result.items() if k != "per_clip"}
