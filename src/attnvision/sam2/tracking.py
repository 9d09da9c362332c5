"""One frame of SAM 2's video tracking: memory in, mask and new memory out.

A frame's stride-16 features first attend to the memory bank (:func:`conditioned_features`):

- the memories (64 wide, one per grid cell) of every conditioning frame (a frame the user
  prompted), and of the ``num_maskmem - 1`` = 6 frames just before this one; each memory's
  keys get the grid's sine code plus a learned code of its slot (``maskmem_tpos_enc``: slot
  t - 1 for the frame t steps back, the last slot for conditioning frames);
- the object pointers (one 256-wide vector per frame, cut into four 64-wide tokens) of the
  conditioning frames in the past and of up to 15 previous frames; 2.1 adds a 1-D sine code
  of how far back each pointer is (signed, over the 15-frame span) projected to 64 wide,
  2.0 none.

:func:`assemble_memory` lays these out as keys and values; :func:`memory_attention_maps`
reads them back through the attention's weights (where a frame's queries look in each memory
frame, for pictures). The first conditioning frame has no memory to read: the learned
``no_mem_embed`` is added instead, as on a still image. SAM's heads then run on the
conditioned features (:func:`sam_heads`), with any clicks or box; the mask decoder's object
score says whether the object is there at all: if not, the mask becomes "absent" everywhere
(-1024) and the pointer is the learned ``no_obj_ptr``. A mask given by the user is taken as
the output itself (:func:`mask_as_output`); the decoder only turns it into a pointer. Last,
the memory encoder fuses the frame's features with its mask (:func:`encode_memory`) into the
frame's memory.

The memory bank (:class:`MemoryBank`) belongs to the caller: a video predictor decides which
frames are conditioning ones, what to forget when streaming (:meth:`MemoryBank.prune`), and in
which dtype and on which device memories are stored (the official predictor keeps them in
bfloat16). Numbers and behaviour follow the official ``SAM2Base.track_step`` with the
released configs' settings at inference; settings that no released model uses (memory
strides, a limit on conditioning frames, soft no-object pointers ...) are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from attnvision.sam2.model import SAM2
from attnvision.sam2.neck import sine_position_encoding

# The mask logit of "object absent" everywhere (the official NO_OBJ_SCORE).
NO_OBJECT_LOGIT = -1024.0
# A 0/1 mask as logits -10 / +10 (sigmoid(-10) = 4.5e-5); also how a mask's probabilities
# are scaled for the memory encoder, which was trained on that range.
MASK_SCALE, MASK_BIAS = 20.0, -10.0

Points = tuple[Tensor, Tensor]  # (B, N, 2) (x, y) model-input pixels, (B, N) int labels


@dataclass
class FrameFeatures:
    """What the image encoder gives for a frame, once per frame, whatever the prompts."""

    vision: Tensor  # (B, D, h, w) stride-16 features, no memory or no-memory embedding
    pos: Tensor  # (B or 1, D, h, w) their sine position code
    # [(B, D/8, 4h, 4w), (B, D/4, 2h, 2w)], projected for the decoder; [] for a model without
    # high-resolution features (its decoder reads none)
    high_res: list[Tensor]


@dataclass
class FrameMemory:
    """What later frames read of a frame."""

    maskmem: Tensor | None  # (B, mem_dim, h, w), None if the memory encoder did not run
    obj_ptr: Tensor  # (B, D)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> FrameMemory:
        """For storage: the memory moved and cast (the pointers are small and stay)."""
        maskmem = None if self.maskmem is None else self.maskmem.to(device=device, dtype=dtype)
        return replace(self, maskmem=maskmem,
                       obj_ptr=self.obj_ptr if device is None else self.obj_ptr.to(device))


@dataclass
class MemoryBank:
    """The memories of one video's frames: conditioning (prompted) frames and tracked ones."""

    conditioning: dict[int, FrameMemory] = field(default_factory=dict)
    tracked: dict[int, FrameMemory] = field(default_factory=dict)

    def add(self, frame_idx: int, memory: FrameMemory, conditioning: bool) -> None:
        """Store a frame's memory; a prompted frame replaces its tracked memory."""
        if conditioning:
            self.tracked.pop(frame_idx, None)
            self.conditioning[frame_idx] = memory
        else:
            self.tracked[frame_idx] = memory

    def prune(self, next_frame: int, num_maskmem: int = 7, max_obj_ptrs: int = 16,
              reverse: bool = False) -> None:
        """Forget what tracking ``next_frame`` (and frames beyond it) will not read: tracked
        frames more than ``max_obj_ptrs - 1`` frames back, and the spatial memories of
        those more than ``num_maskmem - 1`` back (their pointers stay). Streaming keeps the
        bank's size fixed; conditioning frames are all kept."""
        for t in list(self.tracked):
            back = t - next_frame if reverse else next_frame - t
            if back >= max_obj_ptrs:
                del self.tracked[t]
            elif back >= num_maskmem and self.tracked[t].maskmem is not None:
                self.tracked[t] = replace(self.tracked[t], maskmem=None)


@dataclass
class HeadsOutput:
    """SAM's heads on one frame."""

    multimasks: Tensor  # (B, M, 4h, 4w) low-res logits of every output, M = 3 or 1
    ious: Tensor  # (B, M)
    low_res_masks: Tensor  # (B, 1, 4h, 4w) the chosen mask (highest IoU of a multimask call)
    high_res_masks: Tensor  # (B, 1, S, S) it, at the model's input size
    obj_ptr: Tensor  # (B, D)
    object_score_logits: Tensor  # (B, 1), > 0: the object is in the frame


@dataclass
class TrackOutput(HeadsOutput):
    """A tracked frame: the heads' outputs and the frame's memory for later frames."""

    memory: FrameMemory


def frame_features(model: SAM2, images: Tensor) -> FrameFeatures:
    """Encode frames (B, 3, S, S), normalised as for the image predictor."""
    # images: (B, 3, S, S)
    out = model.forward_image(images, positions=True)
    assert out.vision_pos_enc is not None
    high_res = (list(out.backbone_fpn[:-1]) if model.config.use_high_res_features_in_sam
                else [])
    return FrameFeatures(vision=out.backbone_fpn[-1], pos=out.vision_pos_enc[-1],
                         high_res=high_res)


def pointer_time_code(offsets: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """(P,) offsets -> (P, dim): sines then cosines of offset / temperature^(2 (i // 2) /
    (dim / 2)), i < dim / 2 (the official 1-D code, each frequency used twice)."""
    half = dim // 2
    exponent = 2 * (torch.arange(half, dtype=torch.float32, device=offsets.device) // 2) / half
    angles = offsets.float()[:, None] / temperature**exponent  # (P, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _memory_frames(bank: MemoryBank, frame_idx: int, num_maskmem: int, reverse: bool
                   ) -> list[tuple[int, int, FrameMemory]]:
    """(frame index, slot of maskmem_tpos_enc, memory): conditioning frames, then the
    previous frames, farthest first."""
    chosen = [(t, num_maskmem - 1, m) for t, m in sorted(bank.conditioning.items())
              if m.maskmem is not None]
    for back in range(num_maskmem - 1, 0, -1):
        t = frame_idx + back if reverse else frame_idx - back
        memory = bank.tracked.get(t)
        if memory is not None and memory.maskmem is not None:
            chosen.append((t, back - 1, memory))
    return chosen


def _pointers(bank: MemoryBank, frame_idx: int, max_ptrs: int, num_frames: int | None,
              reverse: bool, signed: bool) -> list[tuple[int, int, Tensor]]:
    """(frame index, time offset, pointer (B, D)): past conditioning frames, then previous
    frames."""
    direction = -1 if reverse else 1  # +1: earlier frames are behind
    chosen = []
    for t, memory in sorted(bank.conditioning.items()):
        # At inference a frame reads only the pointers of conditioning frames behind it:
        # one far ahead would pull the start of the track towards a later appearance.
        if (t - frame_idx) * direction <= 0:
            offset = (frame_idx - t) * direction
            chosen.append((t, offset if signed else abs(offset), memory.obj_ptr))
    for back in range(1, max_ptrs):
        t = frame_idx - back * direction
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        memory = bank.tracked.get(t)
        if memory is not None:
            chosen.append((t, back, memory.obj_ptr))
    return chosen


@dataclass
class AssembledMemory:
    """What a frame's memory attention reads, laid out as its keys and values."""

    tokens: Tensor  # (B, M, mem_dim): each memory frame's h*w tokens, then the pointer tokens
    pos: Tensor  # (B, M, mem_dim) their position and time codes
    frames: list[int]  # the frame of each spatial memory, in order
    conditioning: list[bool]  # whether it is a conditioning (prompted) frame
    pointer_frames: list[int]  # the frame of each object pointer, in order
    num_ptr_tokens: int  # the last tokens: D / mem_dim per pointer


def assemble_memory(model: SAM2, frame_idx: int, features: FrameFeatures, bank: MemoryBank,
                    num_frames: int | None = None, reverse: bool = False) -> AssembledMemory:
    """The memories and object pointers that frame ``frame_idx`` reads (module doc), in the
    features' dtype and on their device. ``num_frames``: the video's length (None while
    streaming). ``reverse``: tracking backwards in time."""
    # features.vision: (B, D, h, w); memories (B, mem_dim, h, w); pointers (B, D)
    vision = features.vision
    b, d, h, w = vision.shape
    if not bank.conditioning:
        raise ValueError("a frame can be tracked only after a conditioning (prompted) frame; "
                         "give the first prompted frame is_init_cond_frame=True")
    video = model.config.video
    mem_dim = video.mem_dim

    memory, memory_pos, frames = [], [], []
    # One grid code for every memory; the slot's learned code tells the frames apart.
    grid_pos = sine_position_encoding(h, w, mem_dim, vision.device).to(vision.dtype)
    grid_pos = grid_pos.flatten(2).transpose(1, 2)  # (1, hw, mem_dim)
    for t, slot, frame in _memory_frames(bank, frame_idx, video.num_maskmem, reverse):
        assert frame.maskmem is not None  # _memory_frames skips frames without one
        # Stored in any dtype (bfloat16 to save memory); read in the features' dtype.
        maskmem = frame.maskmem.to(vision.device, vision.dtype)
        memory.append(maskmem.flatten(2).transpose(1, 2))  # (B, hw, mem_dim)
        memory_pos.append((grid_pos + model.maskmem_tpos_enc[slot].view(1, 1, mem_dim))
                          .expand(b, -1, -1))
        frames.append(t)

    max_ptrs = video.max_obj_ptrs if num_frames is None else min(num_frames, video.max_obj_ptrs)
    pointers = _pointers(bank, frame_idx, max_ptrs, num_frames, reverse,
                         video.use_signed_tpos_enc_to_obj_ptrs)
    num_ptr_tokens = 0
    if pointers:
        offsets = torch.tensor([o for _, o, _ in pointers], device=vision.device)
        ptrs = torch.stack([p.to(vision.device, vision.dtype) for _, _, p in pointers],
                           dim=1)  # (B, P, D)
        if video.add_tpos_enc_to_obj_ptrs:
            # Offsets over the pointer span, so codes do not depend on the video's length
            # beyond it (max() guards a one-frame video, where the official code divides
            # by zero).
            span = max(max_ptrs - 1, 1)
            width = d if video.proj_tpos_enc_in_obj_ptrs else mem_dim
            time = model.obj_ptr_tpos_proj(pointer_time_code(offsets / span, width))
        else:
            time = ptrs.new_zeros(len(pointers), mem_dim)
        # A D-wide pointer is D / mem_dim tokens of the memory's width, consecutive.
        pieces = d // mem_dim
        memory.append(ptrs.reshape(b, len(pointers) * pieces, mem_dim))
        memory_pos.append(time.to(vision.dtype).repeat_interleave(pieces, dim=0)
                          .expand(b, -1, -1))
        num_ptr_tokens = len(pointers) * pieces
    return AssembledMemory(torch.cat(memory, dim=1), torch.cat(memory_pos, dim=1), frames,
                           [t in bank.conditioning for t in frames],
                           [t for t, _, _ in pointers], num_ptr_tokens)


def _attend_memory(model: SAM2, features: FrameFeatures, memory: AssembledMemory,
                   return_attention: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
    """The memory attention on the frame's flattened tokens: (B, hw, D) [, weights]."""
    vision = features.vision
    b, _, h, w = vision.shape
    x = vision.flatten(2).transpose(1, 2)  # (B, hw, D)
    x_pos = features.pos.to(vision.dtype).flatten(2).transpose(1, 2).expand(b, -1, -1)
    return model.memory_attention(x, x_pos, memory.tokens, memory.pos,
                                  num_obj_ptr_tokens=memory.num_ptr_tokens, grid=(h, w),
                                  return_attention=return_attention)


def conditioned_features(model: SAM2, frame_idx: int, features: FrameFeatures, bank: MemoryBank,
                         is_init_cond_frame: bool, num_frames: int | None = None,
                         reverse: bool = False) -> Tensor:
    """The frame's stride-16 features after attending to the bank: (B, D, h, w).

    ``is_init_cond_frame``: the first prompted frame, which reads no memory. ``num_frames``:
    the video's length (None while streaming). ``reverse``: tracking backwards in time.
    """
    # features.vision: (B, D, h, w)
    vision = features.vision
    b, d, h, w = vision.shape
    if is_init_cond_frame:
        return vision + model.no_mem_embed.view(1, d, 1, 1)
    memory = assemble_memory(model, frame_idx, features, bank, num_frames, reverse)
    out = _attend_memory(model, features, memory)
    assert isinstance(out, Tensor)
    return out.transpose(1, 2).reshape(b, d, h, w)


@dataclass
class MemoryAttentionMaps:
    """Where a frame's queries attend in each memory frame, layer by layer.

    The weights of a query over all memory tokens sum to 1: ``maps`` summed over frames and
    cells, plus ``pointer_share``, give 1 for every layer, head and query.
    """

    maps: Tensor  # (L, B, H, Q, F, h, w): the weight on each cell of each memory frame
    pointer_share: Tensor  # (L, B, H, Q): the total weight on the object-pointer tokens
    frames: list[int]  # the F memory frames' indices, in the order of ``maps``
    conditioning: list[bool]  # whether each is a conditioning (prompted) frame
    pointer_frames: list[int]  # the frames whose object pointers were read
    queries: Tensor  # (Q,) the queries' flat indices in the frame's (h, w) grid
    grid: tuple[int, int]  # (h, w)


@torch.no_grad()
def memory_attention_maps(model: SAM2, frame_idx: int, features: FrameFeatures,
                          bank: MemoryBank, num_frames: int | None = None,
                          reverse: bool = False, queries: Tensor | list[int] | None = None
                          ) -> MemoryAttentionMaps:
    """The memory attention's cross-attention weights for frame ``frame_idx`` (tracked, not
    the first prompted frame: that one reads no memory), split by memory frame.

    ``queries``: flat indices into the frame's (h, w) grid to keep (default: every query);
    the weights of all queries are computed anyway (a 1024 px model: 4096 x up to 7 x 4096
    per layer), so keep few to hold less.
    """
    # features.vision: (B, D, h, w)
    _, _, h, w = features.vision.shape
    memory = assemble_memory(model, frame_idx, features, bank, num_frames, reverse)
    kept = (torch.arange(h * w) if queries is None
            else torch.as_tensor(queries, dtype=torch.long).reshape(-1))
    _, weights = _attend_memory(model, features, memory, return_attention=True)
    n_spatial = len(memory.frames) * h * w
    maps, shares = [], []
    for attn in weights:  # (B, H, hw, M)
        attn = attn[:, :, kept.to(attn.device)].float()  # (B, H, Q, M)
        maps.append(attn[..., :n_spatial].unflatten(-1, (len(memory.frames), h, w)).cpu())
        shares.append(attn[..., n_spatial:].sum(-1).cpu())
    return MemoryAttentionMaps(torch.stack(maps), torch.stack(shares), memory.frames,
                               memory.conditioning, memory.pointer_frames, kept, (h, w))


def _prompt_points(points: Points | None, boxes: Tensor | None, batch: int,
                   device: torch.device) -> Points:
    """Box corners (labels 2, 3) first, then the clicks; with neither, one "not a point"
    (label -1), as the decoder was trained."""
    coords, labels = [], []
    if boxes is not None:  # (B, 4) -> two corner points
        coords.append(boxes.reshape(-1, 2, 2).float())
        labels.append(torch.tensor([[2, 3]], dtype=torch.int32, device=device)
                      .expand(boxes.shape[0], -1))
    if points is not None:
        coords.append(points[0].float())
        labels.append(points[1].to(torch.int32))
    if not coords:
        return (torch.zeros(batch, 1, 2, device=device),
                -torch.ones(batch, 1, dtype=torch.int32, device=device))
    return torch.cat(coords, dim=1), torch.cat(labels, dim=1)


def _mix_absent(model: SAM2, obj_ptr: Tensor, present: Tensor) -> Tensor:
    """The pointer where the object is present (present = 1), else ``no_obj_ptr``."""
    # obj_ptr: (B, D), present: (B, 1) of 0 / 1
    return present * obj_ptr + (1 - present) * model.no_obj_ptr


def sam_heads(model: SAM2, embed: Tensor, high_res: list[Tensor], points: Points | None = None,
              boxes: Tensor | None = None, mask_input: Tensor | None = None,
              multimask: bool = False) -> HeadsOutput:
    """SAM's prompt encoder and mask decoder on (memory-conditioned) features.

    ``points``: ((B, N, 2) model-input pixels, (B, N) labels 1 / 0); ``boxes``: (B, 4);
    ``mask_input``: (B, 1, 4h, 4w) logits (resized if another size).
    """
    # embed: (B, D, h, w); high_res: [(B, D/8, 4h, 4w), (B, D/4, 2h, 2w)]
    b = embed.shape[0]
    prompt_encoder = model.sam_prompt_encoder
    coords, labels = _prompt_points(points, boxes, b, embed.device)
    if mask_input is not None and tuple(mask_input.shape[-2:]) != prompt_encoder.mask_input_size:
        mask_input = F.interpolate(mask_input.float(), size=prompt_encoder.mask_input_size,
                                   mode="bilinear", align_corners=False, antialias=True)
    # pad=True: the official heads always end the points with a padding token.
    sparse, dense = prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input,
                                   pad=True)
    masks, ious, tokens, scores = model.sam_mask_decoder(
        embed, prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=multimask,
        high_res_features=high_res)
    # The mask is a hard choice between the object and nothing, as the memory will be.
    present = (scores > 0).float()  # (B, 1)
    masks = torch.where(present[:, :, None, None] > 0, masks, NO_OBJECT_LOGIT).float()

    rows = torch.arange(b, device=embed.device)
    best = ious.argmax(dim=-1) if multimask else torch.zeros_like(rows)
    low = masks[rows, best][:, None]  # (B, 1, 4h, 4w)
    token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]  # (B, D)
    high = F.interpolate(low, size=(model.image_size, model.image_size), mode="bilinear",
                         align_corners=False)
    obj_ptr = _mix_absent(model, model.obj_ptr_proj(token), present)
    return HeadsOutput(multimasks=masks, ious=ious, low_res_masks=low, high_res_masks=high,
                       obj_ptr=obj_ptr, object_score_logits=scores)


def mask_as_output(model: SAM2, vision: Tensor, high_res: list[Tensor], mask: Tensor
                   ) -> HeadsOutput:
    """A user's mask (B, 1, S, S), 0/1 or bool, taken as the frame's output: logits of
    +-10, object score +-10 by whether the mask is empty, and a pointer that the decoder
    makes from the mask alone on the frame's own features (no memory)."""
    # vision: (B, D, h, w) raw stride-16 features; mask: (B, 1, S, S)
    mask = mask.float()
    high = mask * MASK_SCALE + MASK_BIAS
    low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                        align_corners=False, antialias=True)
    from_decoder = sam_heads(model, vision, high_res, mask_input=model.mask_downsample(mask))
    present = mask.flatten(1).gt(0).any(dim=1, keepdim=True).float()  # (B, 1)
    return HeadsOutput(multimasks=low, ious=mask.new_ones(mask.shape[0], 1), low_res_masks=low,
                       high_res_masks=high,
                       obj_ptr=_mix_absent(model, from_decoder.obj_ptr, present),
                       object_score_logits=present * MASK_SCALE + MASK_BIAS)


def encode_memory(model: SAM2, vision: Tensor, high_res_masks: Tensor,
                  object_score_logits: Tensor, from_clicks: bool) -> Tensor:
    """The frame's memory (B, mem_dim, h, w) from its raw features and its mask logits
    (B, 1, S, S). ``from_clicks``: the mask was predicted from clicks or a box."""
    # vision: (B, D, h, w); object_score_logits: (B, 1)
    if from_clicks and model.config.video.binarize_mask_from_pts and not model.training:
        # What the user settled on by clicking, without the decoder's hesitations.
        mask = (high_res_masks > 0).float()
    else:
        mask = torch.sigmoid(high_res_masks)
    mask = mask * MASK_SCALE + MASK_BIAS
    maskmem, _ = model.memory_encoder(vision, mask, is_logits=False)
    if model.no_obj_embed_spatial is not None:  # 2.1: mark memories of absent objects
        absent = (object_score_logits <= 0).to(maskmem.dtype)[:, :, None, None]  # (B,1,1,1)
        maskmem = maskmem + absent * model.no_obj_embed_spatial[:, :, None, None]
    return maskmem


def prompted_memory(model: SAM2, vision: Tensor, low_res_masks: Tensor,
                    object_score_logits: Tensor) -> Tensor:
    """The memory of a prompted frame, encoded once its prompts are final: from the low-res
    mask the user saw (B, 1, 4h, 4w, holes filled), upscaled to the model's input."""
    size = model.image_size
    high = F.interpolate(low_res_masks, size=(size, size), mode="bilinear", align_corners=False)
    return encode_memory(model, vision, high, object_score_logits, from_clicks=True)


def track_step(model: SAM2, frame_idx: int, features: FrameFeatures, bank: MemoryBank, *,
               points: Points | None = None, boxes: Tensor | None = None,
               mask: Tensor | None = None, is_init_cond_frame: bool = False,
               num_frames: int | None = None, reverse: bool = False,
               prev_mask_logits: Tensor | None = None, run_memory_encoder: bool = True,
               storage_dtype: torch.dtype | None = None) -> TrackOutput:
    """Segment frame ``frame_idx`` given the bank, and encode its memory.

    The prompts of a conditioning frame: ``points`` / ``boxes`` (model-input pixels), or a
    ``mask`` (B, 1, S, S) taken as the output; a tracked frame has none. ``prev_mask_logits``
    (B, 1, 4h, 4w): the frame's earlier low-res logits, refined together with new clicks.
    With at most one click and no box the decoder gives three masks and the best is kept.
    The bank is not changed: the caller stores ``out.memory`` (see :class:`MemoryBank`),
    whose spatial memory is cast to ``storage_dtype`` if given (None with
    ``run_memory_encoder=False``, e.g. between clicks on one frame).
    """
    # features: see FrameFeatures; points: ((B, N, 2), (B, N)); boxes: (B, 4)
    if mask is not None:
        if points is not None or boxes is not None or prev_mask_logits is not None:
            raise ValueError("a mask input is the frame's output: give it without clicks")
        heads = mask_as_output(model, features.vision, features.high_res, mask)
    else:
        if prev_mask_logits is not None and points is None and boxes is None:
            raise ValueError("prev_mask_logits refine a frame with new clicks: give points")
        embed = conditioned_features(model, frame_idx, features, bank, is_init_cond_frame,
                                     num_frames, reverse)
        clicks = (0 if points is None else points[1].shape[1]) + (0 if boxes is None else 2)
        # Released models give three masks for an ambiguous prompt (one click, or none
        # when tracking) and keep the best; a box counts as two clicks.
        heads = sam_heads(model, embed, features.high_res, points, boxes,
                          mask_input=prev_mask_logits, multimask=clicks <= 1)
    maskmem = None
    if run_memory_encoder:
        maskmem = encode_memory(model, features.vision, heads.high_res_masks,
                                heads.object_score_logits,
                                from_clicks=points is not None or boxes is not None)
        if storage_dtype is not None:
            maskmem = maskmem.to(storage_dtype)
    return TrackOutput(**vars(heads), memory=FrameMemory(maskmem, heads.obj_ptr))
