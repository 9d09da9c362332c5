"""SAM's mask decoder: output tokens read the image through the two-way transformer.

One IoU token and 1 + ``num_multimask_outputs`` mask tokens are prepended to the prompt
tokens. After the transformer, the image tokens are upscaled 4× (two transposed
convolutions) to a (D/8, 4H, 4W) feature map; each mask token goes through its own
hypernetwork MLP to a D/8 vector, and its mask is that vector's dot product with the map at
every pixel. The IoU token predicts each mask's quality.

Beyond the official decoder: B prompts on one image may pass the image embedding with batch 1
(as the official call does, which then copies it B times with ``repeat_interleave``); here it
is broadcast instead, and the transformer shares the image work across prompts until the
image tokens first differ (see :mod:`attnvision.sam.two_way`). Single-mask calls multiply out
only the mask they return.

Parameter names follow the official checkpoints (``iou_token``, ``mask_tokens``,
``output_upscaling.0``, ``output_hypernetworks_mlps.N.layers.M``, ``iou_prediction_head``).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from attnvision.sam.common import LayerNorm2d
from attnvision.sam.two_way import ImageContext, TwoWayTransformer


class HeadMLP(nn.Module):
    """``num_layers`` linear layers with ReLU (or ``activation``) between them, not after the last.

    SAM's hypernetworks and IoU head; ``layers.M`` matches the official names. SAM 2 uses the
    same layered MLP everywhere (``mlp.layers.M`` in its Hiera blocks, with ``activation``
    GELU, and in its two-way transformer), so it is built from this one.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 sigmoid_output: bool = False, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., input_dim) -> (..., output_dim)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        x = self.layers[-1](x)
        return torch.sigmoid(x) if self.sigmoid_output else x


def _shared_across_batch(t: Tensor) -> bool:
    """True when every batch row of t is the same memory (batch 1, or expanded with stride 0)."""
    return t.shape[0] == 1 or t.stride(0) == 0


def _is_constant(dense: Tensor, vector: Tensor | None) -> bool:
    """True when the (B, D, H, W) dense prompt is ``vector`` at every cell, as an expanded
    view (the "no mask" prompt); a mask prompt is never such a view."""
    return (vector is not None and dense.stride(2) == dense.stride(3) == 0
            and torch.equal(dense[0, :, 0, 0], vector))


class MaskDecoder(nn.Module):
    """Masks and their predicted IoU from image and prompt embeddings.

    ``forward(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
    multimask_output)`` returns low-resolution mask logits (B, 1 or num_multimask_outputs,
    4H, 4W) and IoU predictions (B, 1 or num_multimask_outputs).
    """

    def __init__(self, transformer_dim: int = 256, transformer: nn.Module | None = None,
                 num_multimask_outputs: int = 3, activation: type[nn.Module] = nn.GELU,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        if transformer is None:
            transformer = TwoWayTransformer(depth=2, embedding_dim=transformer_dim,
                                            num_heads=8, mlp_dim=2048)
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs

        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1  # + the single-mask token, first
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2,
                               stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            HeadMLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = HeadMLP(transformer_dim, iou_head_hidden_dim,
                                           self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: Tensor, image_pe: Tensor,
                sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor,
                multimask_output: bool, context: ImageContext | None = None
                ) -> tuple[Tensor, Tensor]:
        # image_embeddings: (1 or B, D, H, W), image_pe: (1 or B, D, H, W),
        # sparse_prompt_embeddings: (B, N, D), dense_prompt_embeddings: (1 or B, D, H, W)
        # context: prepare_image(image_embeddings, image_pe) of this image, or None
        # The first mask token is trained for one unambiguous mask, the others for three.
        selected = slice(1, None) if multimask_output else slice(0, 1)
        return self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                  dense_prompt_embeddings, selected, context)

    def prepare_image(self, image_embeddings: Tensor, image_pe: Tensor,
                      no_mask_embeddings: Tensor) -> ImageContext:
        """The prompt-independent work on one image's embedding, done once for many calls
        without mask prompts (see :class:`~attnvision.sam.two_way.ImageContext`)."""
        # image_embeddings, image_pe, no_mask_embeddings: (1, D, H, W), the last constant
        context = self.transformer.prepare_image(image_embeddings + no_mask_embeddings[:1],
                                                 image_pe)
        context.dense = no_mask_embeddings[0, :, 0, 0]
        return context

    def predict_masks(self, image_embeddings: Tensor, image_pe: Tensor,
                      sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor,
                      selected: slice = slice(None), context: ImageContext | None = None
                      ) -> tuple[Tensor, Tensor]:
        """Masks (B, M, 4H, 4W) and IoU (B, M) of the mask tokens in ``selected`` (all: M = 4).

        ``context``, from :meth:`prepare_image` for this image, is used when the dense prompt
        is the "no mask" one it was made with; a mask prompt changes the image tokens, and the
        context is then left aside. In inference on a CPU, prompts go through a few at a time
        (``cpu_prompt_chunk``): each prompt's image tokens then stay in cache.
        """
        b = sparse_prompt_embeddings.shape[0]
        step = self.cpu_prompt_chunk
        if (b > step and sparse_prompt_embeddings.device.type == "cpu"
                and not torch.is_grad_enabled()):
            def rows(t: Tensor, i: int) -> Tensor:
                return t if t.shape[0] == 1 else t[i:i + step]

            parts = [self.predict_masks(rows(image_embeddings, i), image_pe,
                                        sparse_prompt_embeddings[i:i + step],
                                        rows(dense_prompt_embeddings, i), selected, context)
                     for i in range(0, b, step)]
            return torch.cat([m for m, _ in parts]), torch.cat([q for _, q in parts])
        tokens, image = self.run_transformer(image_embeddings, image_pe,
                                             sparse_prompt_embeddings, dense_prompt_embeddings,
                                             context)
        masks = self.masks_from(tokens, image, image_embeddings.shape[-2:], selected)
        return masks, self.iou_from(tokens, selected)

    # Prompts decoded at once in CPU inference: 15 ms a point at 2, 34 ms at 64 (measured).
    cpu_prompt_chunk: int = 2

    def run_transformer(self, image_embeddings: Tensor, image_pe: Tensor,
                        sparse_prompt_embeddings: Tensor, dense_prompt_embeddings: Tensor,
                        context: ImageContext | None = None) -> tuple[Tensor, Tensor]:
        """The two-way transformer on the output and prompt tokens: tokens (B, 1+M+N, D) and
        image tokens (B or 1, HW, D), from which :meth:`iou_from` and :meth:`masks_from` read.

        Callers that filter on the predicted IoU (the automatic generator) upscale only the
        prompts that survive: the upscaling is a third of the decoder's work per prompt.
        """
        # image_embeddings, image_pe, dense_prompt_embeddings: (1 or B, D, H, W);
        # sparse_prompt_embeddings: (B, N, D)
        b = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(f"image_embeddings has batch {image_embeddings.shape[0]}; "
                             f"expected 1 (one image for all prompts) or {b} (one per prompt)")
        output_tokens = self.output_tokens()  # (1+M, D)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        # The official call repeats the image per prompt. When neither the image nor the dense
        # prompt differs between prompts (the usual "no mask" prompt is an expanded view),
        # keep one copy and let the transformer broadcast it.
        shared = image_embeddings.shape[0] == 1 and _shared_across_batch(
            dense_prompt_embeddings)
        if shared and context is not None and _is_constant(dense_prompt_embeddings,
                                                           context.dense):
            return self.transformer(None, None, tokens, context=context)
        src = (image_embeddings + dense_prompt_embeddings[:1] if shared
               else image_embeddings + dense_prompt_embeddings)  # (1 or B, D, H, W)
        return self.transformer(src, image_pe, tokens)

    # Where the IoU token sits among the output tokens; the mask tokens follow it. SAM 2's
    # decoder puts an object-score token first (see output_tokens).
    iou_token_index: int = 0

    def output_tokens(self) -> Tensor:
        """The learned tokens put before the prompt tokens: IoU, then mask tokens (1+M, D)."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight])

    def iou_from(self, tokens: Tensor, selected: slice = slice(None)) -> Tensor:
        """Predicted IoU (B, M') of the selected masks, from the transformer's tokens."""
        return self.iou_prediction_head(tokens[:, self.iou_token_index])[:, selected]

    def mask_tokens_from(self, tokens: Tensor) -> Tensor:
        """The mask tokens (B, M, D) among the transformer's output tokens."""
        first = self.iou_token_index + 1
        return tokens[:, first:first + self.num_mask_tokens]

    def upscale(self, maps: Tensor, high_res: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The image tokens' map (B, D, H, W) upscaled 4x to (B, D/8, 4H, 4W). SAM takes no
        ``high_res`` features (SAM 2's decoder adds them here)."""
        if high_res is not None:
            raise ValueError("this mask decoder takes no high-resolution features")
        return self.output_upscaling(maps)

    def masks_from(self, tokens: Tensor, image: Tensor, size: tuple[int, int],
                   selected: slice = slice(None),
                   high_res: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Mask logits (B, M', 4H, 4W) from the transformer's tokens (B, 1+M+N, D) and image
        tokens (B or 1, HW, D) on an H x W grid (and, in SAM 2, ``high_res`` features)."""
        b = tokens.shape[0]
        h, w = size
        mask_tokens_out = self.mask_tokens_from(tokens)  # (B, M, D)
        # (B, HW, D) -> (B, D, H, W) -> (B, D/8, 4H, 4W). The image tokens are a channels-last
        # map already: a view, which the convolutions keep channels-last (no channel-major
        # copies around LayerNorm2d; half the time for one prompt on a CPU).
        maps = image.view(-1, h, w, image.shape[-1]).permute(0, 3, 1, 2)
        upscaled = self.upscale(maps, high_res)
        # Every hypernetwork runs (they are tiny), so every parameter stays in the graph, as
        # DistributedDataParallel expects; only the selected masks are multiplied out.
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i])
                                for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=1)[:, selected]  # (B, M', D/8)
        _, c, uh, uw = upscaled.shape
        pixels = upscaled.permute(0, 2, 3, 1).reshape(-1, uh * uw, c)  # (B or 1, 16HW, D/8)
        # One matmul, a dot product per pixel; batch-1 maps (a depth-0 transformer) broadcast.
        masks = pixels @ hyper_in.transpose(1, 2)  # (B, 16HW, M')
        return masks.transpose(1, 2).reshape(b, hyper_in.shape[1], uh, uw)
