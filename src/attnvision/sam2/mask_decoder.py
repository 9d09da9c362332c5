"""SAM 2's mask decoder: SAM's, with what SAM 2 added for video and for detail.

Built on :class:`attnvision.sam.mask_decoder.MaskDecoder` and its two-way transformer; the
additions are options, each off by default (so the defaults are SAM's decoder) and on in the
released models:

- ``use_high_res_features``: the stride-4 and stride-8 feature maps of the image encoder,
  projected by ``conv_s0`` (to D/8) and ``conv_s1`` (to D/4), are added inside the 4x
  upscaling, after each transposed convolution: masks follow edges finer than the 64x64
  embedding. The projections run once per image (``SAM2.forward_image``), not per prompt.
- ``pred_obj_scores``: one more output token (``obj_score_token``, first of all) whose head
  (``pred_obj_score_head``, an MLP with ``pred_obj_scores_mlp``) says whether the object is
  in the image at all (a logit; without it the decoder reports 10, "present").
- ``iou_prediction_use_sigmoid``: IoU predictions squashed to [0, 1].
- ``dynamic_multimask_via_stability``: asked for one mask (in eval mode), the decoder keeps
  the single-mask token's mask only if it is stable (IoU of its cuts at +-delta >= thresh),
  otherwise the multimask output with the best predicted IoU.
- ``use_multimask_token_for_obj_ptr``: which mask token(s) the video side turns into object
  pointers; returned as ``sam_tokens_out``.

The transformer's MLPs are stored as ``mlp.layers.0/1`` in SAM 2's checkpoints (``mlp.lin1/2``
in SAM's): :class:`SAM2TwoWayTransformer` is SAM's with that one naming difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from attnvision.sam.mask_decoder import HeadMLP, MaskDecoder
from attnvision.sam.masks import stability_score
from attnvision.sam.two_way import ImageContext, TwoWayTransformer


class SAM2TwoWayTransformer(TwoWayTransformer):
    """SAM's two-way transformer with each block's MLP named as SAM 2 stores it."""

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, activation: type[nn.Module] = nn.ReLU,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__(depth, embedding_dim, num_heads, mlp_dim, activation,
                         attention_downsample_rate)
        for layer in self.layers:
            # The same lin2(act(lin1(x))) under the names layers.0 / layers.1.
            layer.mlp = HeadMLP(embedding_dim, mlp_dim, embedding_dim, 2, activation=activation)


class SAM2MaskDecoder(MaskDecoder):
    """Masks, IoU, output tokens and object scores from image and prompt embeddings.

    ``forward`` returns the official four: low-resolution mask logits (B, M, 4H, 4W), IoU
    predictions (B, M), the mask tokens for object pointers (B, 3 or 1, D) and object-score
    logits (B, 1); M = 3 with ``multimask_output``, else 1.
    """

    def __init__(self, transformer_dim: int = 256, transformer: nn.Module | None = None,
                 num_multimask_outputs: int = 3, activation: type[nn.Module] = nn.GELU,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256,
                 use_high_res_features: bool = False,
                 high_res_in_chans: tuple[int, int] | None = None,
                 iou_prediction_use_sigmoid: bool = False,
                 dynamic_multimask_via_stability: bool = False,
                 dynamic_multimask_stability_delta: float = 0.05,
                 dynamic_multimask_stability_thresh: float = 0.98,
                 pred_obj_scores: bool = False, pred_obj_scores_mlp: bool = False,
                 use_multimask_token_for_obj_ptr: bool = False) -> None:
        if transformer is None:
            transformer = SAM2TwoWayTransformer(depth=2, embedding_dim=transformer_dim,
                                                num_heads=8, mlp_dim=2048)
        super().__init__(transformer_dim, transformer, num_multimask_outputs, activation,
                         iou_head_depth, iou_head_hidden_dim)
        self.iou_prediction_head.sigmoid_output = iou_prediction_use_sigmoid
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
            self.pred_obj_score_head = (HeadMLP(transformer_dim, transformer_dim, 1, 3)
                                        if pred_obj_scores_mlp
                                        else nn.Linear(transformer_dim, 1))
            self.iou_token_index = 1  # after the object-score token
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # The encoder's stride-4 and stride-8 widths: the FPN's D unless given.
            in_s0, in_s1 = high_res_in_chans or (transformer_dim, transformer_dim)
            self.conv_s0 = nn.Conv2d(in_s0, transformer_dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(in_s1, transformer_dim // 4, kernel_size=1)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def output_tokens(self) -> Tensor:
        """[object score,] IoU, then the mask tokens: (1 + 1 + M, D) or (1 + M, D)."""
        tokens = super().output_tokens()
        return torch.cat([self.obj_score_token.weight, tokens]) if self.pred_obj_scores else (
            tokens)

    def upscale(self, maps: Tensor, high_res: Sequence[Tensor] | None = None) -> Tensor:
        """(B, D, H, W) -> (B, D/8, 4H, 4W), with the projected stride-8 (D/4) and stride-4
        (D/8) features added after each transposed convolution."""
        if not self.use_high_res_features:
            return super().upscale(maps)  # as the official decoder, ignores any given
        if high_res is None:
            raise ValueError("this decoder needs the high-resolution features "
                             "(SAM2.forward_image's backbone_fpn[0] and [1])")
        feat_s0, feat_s1 = high_res  # (B or 1, D/8, 4H, 4W), (B or 1, D/4, 2H, 2W)
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        x = act1(norm1(deconv1(maps) + feat_s1))
        return act2(deconv2(x) + feat_s0)

    def stable_or_best(self, masks: Tensor, iou: Tensor) -> tuple[Tensor, Tensor]:
        """From all four masks (B, 4, h, w) and IoU (B, 4): the single-mask token's mask where
        it is stable, else the multimask output of highest IoU; (B, 1, h, w), (B, 1)."""
        best = iou[:, 1:].argmax(dim=-1) + 1  # (B,)
        rows = torch.arange(len(best), device=best.device)
        # An empty mask counts as stable (0 / 0 -> 1), as in the official decoder.
        stability = stability_score(masks[:, 0], 0.0, self.dynamic_multimask_stability_delta)
        stable = torch.nan_to_num(stability, nan=1.0) >= self.dynamic_multimask_stability_thresh
        pick = torch.where(stable, torch.zeros_like(best), best)  # (B,)
        return masks[rows, pick][:, None], iou[rows, pick][:, None]

    def forward(self, image_embeddings: Tensor, image_pe: Tensor,
                sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor,
                multimask_output: bool, high_res_features: Sequence[Tensor] | None = None,
                context: ImageContext | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # image_embeddings: (1 or B, D, H, W), image_pe: (1, D, H, W),
        # sparse_prompt_embeddings: (B, N, D), dense_prompt_embeddings: (1 or B, D, H, W),
        # high_res_features: [(1 or B, D/8, 4H, 4W), (1 or B, D/4, 2H, 2W)]
        # context: prepare_image(image_embeddings, image_pe, no-mask dense) of this image
        tokens, image = self.run_transformer(image_embeddings, image_pe,
                                             sparse_prompt_embeddings, dense_prompt_embeddings,
                                             context)
        dynamic = (not multimask_output and self.dynamic_multimask_via_stability
                   and not self.training)
        selected = slice(1, None) if multimask_output else (
            slice(None) if dynamic else slice(0, 1))
        masks = self.masks_from(tokens, image, image_embeddings.shape[-2:], selected,
                                high_res_features)
        iou = self.iou_from(tokens, selected)
        if dynamic:
            masks, iou = self.stable_or_best(masks, iou)

        mask_tokens = self.mask_tokens_from(tokens)  # (B, 1 + M, D)
        # The video side's object pointer comes from the single-mask token, except after a
        # multimask call in models trained to use the multimask tokens.
        sam_tokens_out = (mask_tokens[:, 1:] if multimask_output
                          and self.use_multimask_token_for_obj_ptr else mask_tokens[:, :1])
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(tokens[:, 0])  # (B, 1)
        else:
            object_score_logits = iou.new_full((iou.shape[0], 1), 10.0)  # "present"
        return masks, iou, sam_tokens_out, object_score_logits
