"""The released SAM 2 and SAM 2.1 models, as the official yaml files describe them.

Four sizes (hiera tiny, small, base_plus, large) in two versions. The image model of a size is
the same in both versions; 2.1 changed only the video side (a "no object" embedding in the
memories, signed and projected temporal encodings of the object pointers). Names are the stems
of the official checkpoint files (``sam2.1_hiera_tiny.pt``).

Every released model sets the same image-side flags (high-resolution features in the mask
decoder, sigmoid IoU head, an object-score token with an MLP head, the "no memory" embedding
added to the image features) and is built by the official ``build_sam2`` with the dynamic
multimask fallback on; they are fields here, not forty constructor flags, so that a test or a
new model can turn one off.

Beside the released models, ours: ``sam2_tiny``, a SAM 2 whose image encoder is the ViT of
SAM's shipped ``sam_tiny`` (:class:`~attnvision.sam.image_encoder.EncoderConfig` as its
trunk, one stride-16 level, no high-resolution features), initialised from ``sam_tiny`` by
:func:`attnvision.sam2.from_sam.sam2_from_sam` and trained here; ``sam2_tiny_hr`` is the same
with a pixel stem for the high-resolution features (what ships). They live in the same dict,
so names, lists and command lines know them as they know the official ones; ``OFFICIAL_NAMES``
tells the released models apart (what parity tests and download hints are about).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from attnvision.sam.image_encoder import ENCODER_CONFIGS, EncoderConfig


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk: ``stages[i]`` blocks at stage i, width and heads doubling per stage."""

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # window side per stage (0: global)
    # The background position embedding's grid, interpolated to the token grid.
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3  # stage changes that pool the queries (and so halve the grid)
    q_stride: int = 2
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Width of every stage's output, lowest resolution first (the neck's order)."""
        dims, dim = [], self.embed_dim
        for i in range(len(self.stages)):
            dims.append(dim)
            if i < len(self.stages) - 1:
                dim = int(dim * self.dim_mul)
        return tuple(reversed(dims))


@dataclass(frozen=True)
class VideoConfig:
    """Numbers of the video side (memory encoder, memory attention, object pointers).

    The last four fields are where SAM 2.0 and 2.1 differ. Flags that every released model
    sets the same way are not fields: they are how :mod:`attnvision.sam2.tracking` works
    (no-memory embedding added directly, a mask input used as the output, multimask output
    for at most one click, mask logits through sigmoid x 20 - 10 into the memory encoder,
    only past pointers at inference, every conditioning frame attended to).
    """

    num_maskmem: int = 7  # memory slots: the conditioning frames' + the 6 previous frames
    mem_dim: int = 64
    memory_attention_layers: int = 4
    # Hidden width of each memory-attention layer's MLP (every released model: 2048; ours
    # narrower, as the MLPs are most of the memory attention's weights).
    dim_feedforward: int = 2048
    # Dropout in the memory attention while training (every released model: 0.1; ours 0:
    # a few thousand steps on a CPU underfit rather than overfit, and without dropout the
    # attention runs in the fused kernel).
    memory_attention_dropout: float = 0.1
    max_obj_ptrs: int = 16  # object pointers attended to (frames back, or the video's length)
    # The official video predictor (apply_postprocessing=True): on clicked frames the memory
    # encoder sees the thresholded 0/1 mask, not its sigmoid.
    binarize_mask_from_pts: bool = True
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True


SAM20_VIDEO = VideoConfig(no_obj_embed_spatial=False, add_tpos_enc_to_obj_ptrs=False,
                          proj_tpos_enc_in_obj_ptrs=False, use_signed_tpos_enc_to_obj_ptrs=False)


@dataclass(frozen=True)
class SAM2Config:
    """One SAM 2 model: its trunk, neck, prompt/decoder width and the image-side flags.

    The trunk is a Hiera (the released models: four stages and an FPN neck, then
    ``fpn_top_down_levels`` and ``scalp`` apply) or SAM's ViT (ours: its own neck gives the
    one stride-16 level, ``backbone_stride`` = its patch size). A ViT is built at
    ``image_size`` whatever its config's ``img_size`` says, as a Hiera is, so a smaller test
    model changes one number.
    """

    version: str  # "2.1" or "2.0" (the video side's version)
    trunk: HieraConfig | EncoderConfig
    image_size: int = 1024
    d_model: int = 256  # neck width = prompt embeddings = mask decoder width
    fpn_top_down_levels: tuple[int, ...] = (2, 3)  # levels fused with the level below
    scalp: int = 1  # lowest-resolution neck levels dropped
    backbone_stride: int = 16  # image pixels per cell of the image embedding
    use_high_res_features_in_sam: bool = True
    # A ViT trunk only: its high-res features from a small CNN on the pixels (pixel_stem.py).
    pixel_stem: bool = False
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    directly_add_no_mem_embed: bool = True
    # The official build_sam2(apply_postprocessing=True): a single mask whose stability is
    # below the threshold is replaced by the best of the three multimask outputs.
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    video: VideoConfig = field(default_factory=VideoConfig)

    def with_trunk(self, **changes: object) -> SAM2Config:
        """This config with some trunk settings changed (small test models)."""
        return replace(self, trunk=replace(self.trunk, **changes))


_TRUNKS = {
    "tiny": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2),
                        global_att_blocks=(5, 7, 9), window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2),
                         global_att_blocks=(7, 10, 13), window_pos_embed_bkg_spatial_size=(7, 7)),
    # base_plus keeps Hiera's defaults for its stages, windows and background grid.
    "base_plus": HieraConfig(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3),
                             global_att_blocks=(12, 16, 20)),
    "large": HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4),
                         global_att_blocks=(23, 33, 43), window_spec=(8, 4, 16, 8),
                         window_pos_embed_bkg_spatial_size=(7, 7)),
}

SAM2_CONFIGS: dict[str, SAM2Config] = {
    **{f"sam2.1_hiera_{size}": SAM2Config(version="2.1", trunk=trunk)
       for size, trunk in _TRUNKS.items()},
    **{f"sam2_hiera_{size}": SAM2Config(version="2.0", trunk=trunk, video=SAM20_VIDEO)
       for size, trunk in _TRUNKS.items()},
}
# The released models (official checkpoints and yaml files exist for these only).
OFFICIAL_NAMES: tuple[str, ...] = tuple(SAM2_CONFIGS)

# Ours: SAM's shipped sam_tiny encoder (run at 256 px, a 16x16 grid) with its prompt encoder
# and mask decoder, and a 2.1 video side with a lighter memory attention (2 layers, MLPs 1024
# wide: 1.9M parameters instead of the released 4 x 2048's 5.9M), 12.1M parameters in all:
# 24.3 MB as float16 safetensors (48.5 MB float32), within the package's 25 MB. The IoU head
# stays linear (sam_tiny's was trained so); the object-score token and head are SAM 2's, new.
# One level of features: no FPN (fpn_top_down_levels, scalp unused), no high-res features.
SAM2_CONFIGS["sam2_tiny"] = SAM2Config(
    version="2.1", trunk=ENCODER_CONFIGS["sam_tiny"], image_size=256,
    fpn_top_down_levels=(), scalp=0, backbone_stride=ENCODER_CONFIGS["sam_tiny"].patch_size,
    use_high_res_features_in_sam=False, iou_prediction_use_sigmoid=False,
    video=VideoConfig(memory_attention_layers=2, dim_feedforward=1024,
                      memory_attention_dropout=0.0))

# sam2_tiny with the decoder's high-resolution skip features, which SAM's ViT cannot give,
# drawn from the pixels by a small CNN (attnvision.sam2.pixel_stem: 43k parameters more). The
# shipped model since stage 5 of recipes/sam2_tiny.sh (its file keeps the name
# sam2_tiny.safetensors).
SAM2_CONFIGS["sam2_tiny_hr"] = replace(SAM2_CONFIGS["sam2_tiny"], pixel_stem=True,
                                       use_high_res_features_in_sam=True)

# The official config file names ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2_hiera_b+")
# name the same models.
_SHORT = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


def resolve_name(name: str) -> str | None:
    """The key of SAM2_CONFIGS that ``name`` means (a key, an official config file name or
    path), or None."""
    stem = name.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".pt")
    if stem in SAM2_CONFIGS:
        return stem
    prefix, _, size = stem.rpartition("_")
    if not prefix.endswith("_hiera"):  # short names are the official yaml files' only
        return None
    full = f"{prefix}_{_SHORT.get(size, size)}"
    return full if full in SAM2_CONFIGS else None
