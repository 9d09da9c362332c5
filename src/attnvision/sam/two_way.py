"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Each block runs, on N prompt tokens ("queries") and H·W image tokens ("keys"):
(1) self-attention of the queries, (2) queries attend to the image, (3) an MLP on the
queries, (4) the image attends to the queries; every step is residual and post-normed.
Positional encodings are added to what is compared (Q and K), never to what is mixed (V).

Many prompts, one image: the image tokens may have batch 1 while the queries have batch B
(one row per prompt). Until step (4) of the first block the image tokens are the same for
every prompt, so they are projected once, and step (2) folds the B prompts into one long
query sequence over the shared keys instead of copying the image B times. From step (4) on,
each prompt has its own image tokens. With image batch B this is exactly the official
arithmetic.

Many calls, one image: what the first block computes from the image alone (the image tokens'
keys and values for step (2), their queries for step (4)) is the same for every prompt of
every call. :meth:`TwoWayTransformer.prepare_image` computes it once, as an
:class:`ImageContext`, and ``forward(..., context=...)`` starts from it: a third of the
transformer's work on a 64x64 image is then done once per image instead of once per call.

Parameter names follow the official checkpoints (``layers.N.self_attn.q_proj``, ``norm1``,
``cross_attn_token_to_image``, ``mlp.lin1``, ``final_attn_token_to_image``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from attnvision.nn.attention import MultiHeadAttention, attend_heads, split_heads
from attnvision.sam.common import MLPBlock


@dataclass
class ImageContext:
    """The image-only part of the first two-way block, for one image and any prompts.

    ``keys`` / ``key_pe``: the image tokens and their positions (1, HW, D); ``k_tok`` /
    ``v_tok``: their keys and values in the first token->image attention, and ``q_img``:
    their queries in the first image->token attention, each split in heads (1, H, HW, d).
    ``dense``: the (D,) dense prompt vector added to every image token before, if any (the
    mask decoder's "no mask" embedding), so a call with another dense prompt can tell.
    """

    keys: Tensor
    key_pe: Tensor
    k_tok: Tensor
    v_tok: Tensor
    q_img: Tensor
    dense: Tensor | None = None


def _tokens_to_image(attn: MultiHeadAttention, q: Tensor, k: Tensor | None, v: Tensor,
                     kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Queries attend to image tokens, which may be shared by every query batch row.

    q: (B, Nq, D), k, v: (B or 1, Nk, D) -> (B, Nq, D). ``kv``: k and v already projected
    and split in heads, (1, H, Nk, d) each.
    """
    b, nq, d = q.shape
    shared = v.shape[0] == 1 and b > 1
    # Queries never interact in attention: B rows of Nq queries over the same keys are one
    # row of B·Nq queries, with no copy of the keys.
    rows = q.reshape(1, b * nq, d) if shared else q
    if kv is None:
        out = attn(rows, k, v)
    else:
        qh = split_heads(attn.q_proj(rows), attn.num_heads)
        out = attend_heads(qh, kv[0], kv[1], attn.out_proj, None, None, False, 0.0)
    return out.reshape(b, nq, d)


def _image_to_tokens(attn: MultiHeadAttention, q: Tensor | None, k: Tensor, v: Tensor,
                     qh: Tensor | None = None) -> Tensor:
    """Image tokens, possibly shared (batch 1), attend to each prompt's tokens.

    q: (B or 1, Nq, D), k, v: (B, Nk, D) -> (B, Nq, D). ``qh``: q already projected and
    split in heads, (1, H, Nq, d).
    """
    b = k.shape[0]
    if qh is None:
        qh = split_heads(attn.q_proj(q), attn.num_heads)  # (1 or B, H, Nq, d): projected once
    kh = split_heads(attn.k_proj(k), attn.num_heads)  # (B, H, Nk, d)
    vh = split_heads(attn.v_proj(v), attn.num_heads)  # (B, H, Nk, d)
    qh = qh.expand(b, -1, -1, -1)  # a view: every prompt reads the same projected image
    return attend_heads(qh, kh, vh, attn.out_proj, None, None, False, 0.0)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention, token→image attention, MLP, image→token attention, each post-normed.

    With ``skip_first_layer_pe`` (the first block), the self-attention sees the raw queries,
    which then hold only the prompt embeddings, and its output replaces them (no residual).
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = MultiHeadAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = MultiHeadAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor,
                context: ImageContext | None = None) -> tuple[Tensor, Tensor]:
        # queries, query_pe: (B, N, D); keys: (B or 1, HW, D); key_pe: (B or 1, HW, D)
        # context: this block's image-only projections of these keys (prepare_image)
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        # keys do not change until step (4): one sum serves both cross-attentions.
        k = keys + key_pe if context is None else None
        queries = self.norm2(queries + _tokens_to_image(
            self.cross_attn_token_to_image, queries + query_pe, k, keys,
            kv=None if context is None else (context.k_tok, context.v_tok)))

        queries = self.norm3(queries + self.mlp(queries))

        attn_out = _image_to_tokens(self.cross_attn_image_to_token, k, queries + query_pe,
                                    queries, qh=None if context is None else context.q_img)
        del k  # freed before norm4 allocates the new keys
        keys = self.norm4(keys + attn_out)  # (B, HW, D)
        return queries, keys

    def project_image(self, keys: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The projections of image tokens that do not depend on the queries: the keys and
        values of step (2) and the queries of step (4), split in heads."""
        # keys, key_pe: (1, HW, D)
        k = keys + key_pe
        to_image, to_token = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        return (split_heads(to_image.k_proj(k), to_image.num_heads),
                split_heads(to_image.v_proj(keys), to_image.num_heads),
                split_heads(to_token.q_proj(k), to_token.num_heads))


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a last token→image attention and LayerNorm.

    ``forward(image_embedding, image_pe, point_embedding)`` returns the queries (B, N, D) and
    the image tokens (B, HW, D). ``image_embedding`` and ``image_pe`` (C = D, maps of H×W)
    may have batch 1 for B prompts on one image.
    """

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
                 mlp_dim: int = 2048, activation: type[nn.Module] = nn.ReLU,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation,
                                 attention_downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = MultiHeadAttention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    @staticmethod
    def _tokens(image_embedding: Tensor, image_pe: Tensor) -> tuple[Tensor, Tensor]:
        # Token-major copies, made once: every linear layer and LayerNorm below reads the
        # channel axis, and sums with a channel-major operand would come out strided.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()  # (B or 1, HW, D)
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()  # (B or 1, HW, D)
        return keys, key_pe

    def prepare_image(self, image_embedding: Tensor, image_pe: Tensor) -> ImageContext:
        """The image-only work of the first block, for every later call on this image."""
        # image_embedding, image_pe: (1, D, H, W)
        if image_embedding.shape[0] != 1:
            raise ValueError("prepare_image takes one image (batch 1), got batch "
                             f"{image_embedding.shape[0]}")
        keys, key_pe = self._tokens(image_embedding, image_pe)
        return ImageContext(keys, key_pe, *self.layers[0].project_image(keys, key_pe))

    def forward(self, image_embedding: Tensor | None, image_pe: Tensor | None,
                point_embedding: Tensor, context: ImageContext | None = None
                ) -> tuple[Tensor, Tensor]:
        # image_embedding, image_pe: (B or 1, D, H, W), or None with a context;
        # point_embedding: (B, N, D)
        b = point_embedding.shape[0]
        if context is not None:
            keys, key_pe = context.keys, context.key_pe
        else:
            if image_embedding.shape[0] not in (1, b):
                raise ValueError(f"image_embedding has batch {image_embedding.shape[0]}; "
                                 f"expected 1 (shared) or {b} (one per prompt)")
            keys, key_pe = self._tokens(image_embedding, image_pe)

        queries = point_embedding
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, point_embedding, key_pe,
                                  context if i == 0 else None)

        attn_out = _tokens_to_image(self.final_attn_token_to_image, queries + point_embedding,
                                    keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys
