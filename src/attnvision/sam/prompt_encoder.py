"""SAM's prompt encoder: points, boxes and a coarse mask become decoder inputs.

Sparse prompts (points, box corners) become one token each: the random-Fourier encoding of
the pixel centre plus a learned embedding saying what the token is (negative point, positive
point, top-left corner, bottom-right corner, or "not a point" for padding). A dense prompt
(a 256×256 low-resolution mask) is downscaled 4× by two strided convolutions to the image
embedding's grid; without one, a learned "no mask" vector fills that grid.

A text prompt (ours; the official model has none) is a sentence encoder's vector for a phrase,
turned by a small learned MLP into one more sparse token that the decoder attends to like the
others, and, through :class:`~attnvision.sam.text_locator.TextLocator`, into a coarse map of
where the phrase points, which is the dense prompt when no mask is given (``locate_text``); a
model built with ``text_dim`` has both.

Parameter names follow the official checkpoints (``prompt_encoder.point_embeddings.0.weight``,
``mask_downscaling.0.weight``, ...), so official files load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.nn.positional import PositionEmbeddingRandom
from attnvision.sam.common import LayerNorm2d
from attnvision.sam.text_locator import TextLocator

# Point labels, as in the official predictor; 2 and 3 mark a box's corners given as points
# (as SAM 2 takes them), which lets one batch mix point and box prompts.
NOT_A_POINT, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PromptEncoder(nn.Module):
    """Embeds points, boxes and masks for :class:`~attnvision.sam.mask_decoder.MaskDecoder`.

    ``forward(points, boxes, masks)`` returns sparse embeddings (B, N, embed_dim) and dense
    embeddings (B, embed_dim, H, W) with (H, W) = ``image_embedding_size``.
    """

    def __init__(self, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16,
                 activation: type[nn.Module] = nn.GELU, text_dim: int | None = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)

        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right.
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)

        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        # Phrase vector (text_dim) -> one prompt token; absent in the official models.
        self.text_dim: int | None = None
        self.text_projection: nn.Sequential | None = None
        self.text_locator: TextLocator | None = None
        if text_dim is not None:
            self.add_text(text_dim, activation)
        # (key, value) of the last dense PE; see get_dense_pe.
        self._dense_pe_cache: tuple[tuple, Tensor] | None = None

    def get_dense_pe(self) -> Tensor:
        """The positional encoding of every cell of the image embedding: (1, embed_dim, H, W).

        It depends only on the Gaussian matrix, so it is computed once and reused until that
        buffer changes: replaced (``.to()``, ``.half()``), or written in place
        (``load_state_dict``, which bumps its version counter). The returned tensor is shared
        between calls: do not modify it in place.
        """
        gaussian = self.pe_layer.positional_encoding_gaussian_matrix
        key = (id(gaussian), gaussian.data_ptr(), gaussian._version, gaussian.device,
               gaussian.dtype, torch.is_inference_mode_enabled())
        if self._dense_pe_cache is None or self._dense_pe_cache[0] != key:
            # No graph: the encoding of a buffer never needs gradients. Nor autocast: the
            # cached encoding then serves full and low precision alike.
            with torch.no_grad(), torch.autocast(gaussian.device.type, enabled=False):
                pe = self.pe_layer(self.image_embedding_size).unsqueeze(0)
            self._dense_pe_cache = (key, pe)
        return self._dense_pe_cache[1]

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        # points: (B, N, 2) as (x, y) pixels of the input image, labels: (B, N)
        points = points + 0.5  # pixel centres
        if pad:
            # The decoder was trained with a padding token whenever no box follows the points.
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), NOT_A_POINT)],
                               dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)  # (B, N, D)
        labels = labels[..., None]  # (B, N, 1), broadcasts over D
        # A padding token carries no position: only the "not a point" embedding.
        emb = torch.where(labels == NOT_A_POINT, self.not_a_point_embed.weight, pe)
        for label in (NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT):
            emb = emb + (labels == label) * self.point_embeddings[label].weight
        return emb

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        # boxes: (B, 4) as (x0, y0, x1, y1) pixels -> (B, 2, D), one token per corner
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight,
                                  self.point_embeddings[3].weight])  # (2, D)
        return pe + corner_embed

    def _embed_masks(self, masks: Tensor) -> Tensor:
        # masks: (B, 1, 4H, 4W) -> (B, D, H, W)
        return self.mask_downscaling(masks)

    def add_text(self, text_dim: int, activation: type[nn.Module] = nn.GELU) -> None:
        """Give a model without text prompts a new (untrained) text projection and locator."""
        self.text_dim = text_dim
        # Layer-normalised first: unit-length sentence vectors differ by little per coordinate
        # (see text_locator).
        self.text_projection = nn.Sequential(nn.LayerNorm(text_dim),
                                             nn.Linear(text_dim, self.embed_dim), activation(),
                                             nn.Linear(self.embed_dim, self.embed_dim))
        self.text_locator = TextLocator(self.embed_dim, text_dim)
        self.text_projection.to(self.no_mask_embed.weight.device)
        self.text_locator.to(self.no_mask_embed.weight.device)

    def require_text(self) -> None:
        """One line saying why when this model takes no text prompts."""
        if self.text_projection is None:
            from attnvision.errors import UserError

            raise UserError("this SAM has no text prompts (the official models have none): "
                            "use the shipped sam_tiny (no --checkpoint), or train text into "
                            "this one with 'attnvision train sam --init ... --text'")

    def _embed_text(self, text: Tensor) -> Tensor:
        # text: (B, text_dim) phrase vectors -> (B, 1, D)
        self.require_text()
        return self.text_projection(text.to(self.no_mask_embed.weight.dtype))[:, None]

    def locate_text(self, image_embeddings: Tensor, text: Tensor) -> Tensor:
        """Where each phrase points, as the low-resolution mask logits a mask prompt takes.

        image_embeddings (1 or B, D, H, W), text (B, text_dim) -> (B, 1, 4H, 4W)."""
        self.require_text()
        weight = self.no_mask_embed.weight
        logits = self.text_locator(image_embeddings.to(weight.dtype), self.get_dense_pe(),
                                   text.to(weight.dtype))  # (B, 1, H, W)
        return F.interpolate(logits.float(), self.mask_input_size, mode="bilinear",
                             align_corners=False)

    @staticmethod
    def _batch_size(points: tuple[Tensor, Tensor] | None, boxes: Tensor | None,
                    masks: Tensor | None, text: Tensor | None = None) -> int:
        if text is not None:
            return text.shape[0]
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(self, points: tuple[Tensor, Tensor] | None, boxes: Tensor | None,
                masks: Tensor | None, pad: bool | None = None, text: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        # points: ((B, N, 2) coords, (B, N) labels), boxes: (B, 4), masks: (B, 1, 4H, 4W),
        # text: (B, text_dim) phrase vectors, one token after the points and box
        # pad: add the padding token after the points; by default when no box follows, as
        # the official encoder does. Training pads its point sequences itself.
        bs = self._batch_size(points, boxes, masks, text)
        weight = self.no_mask_embed.weight
        parts: list[Tensor] = []
        if points is not None:
            pad = boxes is None if pad is None else pad
            parts.append(self._embed_points(points[0], points[1], pad=pad))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if text is not None:
            parts.append(self._embed_text(text))
        if not parts:
            sparse = weight.new_empty(bs, 0, self.embed_dim)
        else:
            sparse = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, N, D)

        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            # A view, not a copy: every prompt and every cell share the same vector.
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
