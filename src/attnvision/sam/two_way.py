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


def _few_tokens(attn: MultiHeadAttention, n_tokens: int) -> bool:
    """True when the prompt tokens are few enough that folding the image tokens' projections
    into the tokens' side costs less: fewer token vectors over all heads (H·Nt) than the
    heads' width (internal_dim, 128 in SAM), i.e. up to 15 tokens (10 points) in SAM."""
    return attn.num_heads * n_tokens < attn.internal_dim


def _tokens_to_image_folded(attn: MultiHeadAttention, q: Tensor, k: Tensor, v: Tensor
                            ) -> Tensor:
    """A few token queries over many image tokens, with the image tokens never projected.

    Per head h, with K = k W_kᵀ + b_k and V = v W_vᵀ + b_v (k, v: the raw image tokens):
    Q_h K_hᵀ = (Q_h W_k,h) kᵀ + Q_h·b_k,h (the last term is the same for every key: it does
    not change the softmax, but is kept so that b_k stays in the graph, as distributed
    training expects); and P_h V_h = (P_h v) W_v,hᵀ + b_v,h, since each row of P_h sums to 1.
    The queries move into the image tokens' space (H·Nt vectors of width D) instead of the HW
    image tokens moving into the heads': for SAM's 7 tokens, 2·56·D·HW multiply-adds instead
    of 2·128·D·HW.

    q: (B, Nt, D), k, v: (B or 1, HW, D) -> (B, Nt, D)
    """
    b, nt, dim = q.shape
    heads, d = attn.num_heads, attn.internal_dim // attn.num_heads
    qh = split_heads(attn.q_proj(q), heads) * d ** -0.5  # (B, H, Nt, d)
    folded = qh @ attn.k_proj.weight.view(heads, d, dim)  # (B, H, Nt, D)
    logits = folded.reshape(b, heads * nt, dim) @ k.transpose(1, 2)  # (B, H·Nt, HW)
    if attn.k_proj.bias is not None:
        logits = logits + (qh @ attn.k_proj.bias.view(heads, d, 1)).reshape(b, heads * nt, 1)
    weights = logits.softmax(dim=-1)
    mixed = (weights @ v).view(b, heads, nt, dim)  # (B, H, Nt, D): P_h v
    out = mixed @ attn.v_proj.weight.view(heads, d, dim).transpose(1, 2)  # (B, H, Nt, d)
    if attn.v_proj.bias is not None:
        out = out + attn.v_proj.bias.view(heads, 1, d)
    return attn.out_proj(out.transpose(1, 2).reshape(b, nt, heads * d))


def _image_to_tokens_folded(attn: MultiHeadAttention, q: Tensor | None, k: Tensor, v: Tensor,
                            qh: Tensor | None = None) -> Tensor:
    """Many image-token queries over a few prompt tokens, with neither the image tokens'
    queries (unless ``qh`` holds them already) nor their outputs projected.

    Per head h, with Q = q W_qᵀ + b_q (q: the raw image tokens): Q_h K_hᵀ = q (W_q,hᵀ K_hᵀ)
    + b_q,h K_hᵀ, a product with a (D, Nt) matrix; and out_proj(concat_h(P_h V_h)) =
    Σ_h P_h (V_h W_o,hᵀ) + b_o, one product of the (HW, H·Nt) attention weights with H·Nt
    values already projected to width D.

    The logits are laid out tokens first, (B, H, Nt, HW), and normalised over the Nt axis:
    torch's CPU softmax over a last axis shorter than 16 runs 10-20 times slower (5 ms for
    SAM's 4096 x 8 heads x 8 tokens against 0.2 ms along a middle axis).

    q: (B or 1, HW, D) or None with qh: (1, H, HW, d); k, v: (B, Nt, D) -> (B, HW, D)
    """
    b, nt, dim = k.shape
    heads, d = attn.num_heads, attn.internal_dim // attn.num_heads
    kh = split_heads(attn.k_proj(k), heads) * d ** -0.5  # (B, H, Nt, d)
    vh = split_heads(attn.v_proj(v), heads)  # (B, H, Nt, d)
    if qh is None:
        folded = kh @ attn.q_proj.weight.view(heads, d, dim)  # (B, H, Nt, D)
        logits = folded.reshape(b, heads * nt, dim) @ q.transpose(1, 2)  # (B, H·Nt, HW)
        if attn.q_proj.bias is not None:
            logits = logits + (kh @ attn.q_proj.bias.view(heads, d, 1)
                               ).reshape(b, heads * nt, 1)
    else:
        logits = kh @ qh.transpose(2, 3)  # (B, H, Nt, HW)
    hw = logits.shape[-1]
    weights = logits.reshape(b, heads, nt, hw).softmax(dim=2).view(b, heads * nt, hw)
    wo = attn.out_proj.weight.view(dim, heads, d).permute(1, 2, 0)  # (H, d, D)
    values = (vh @ wo).reshape(b, heads * nt, dim)  # (B, H·Nt, D): V_h W_o,hᵀ
    out = weights.transpose(1, 2) @ values  # (B, HW, D)
    return out + attn.out_proj.bias if attn.out_proj.bias is not None else out


def _tokens_to_image(attn: MultiHeadAttention, q: Tensor, k: Tensor | None, v: Tensor,
                     kv: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Queries attend to image tokens, which may be shared by every query batch row.

    q: (B, Nq, D), k, v: (B or 1, Nk, D) -> (B, Nq, D). ``kv``: k and v already projected
    and split in heads, (1, H, Nk, d) each.
    """
    b, nq, d = q.shape
    if kv is None and _few_tokens(attn, nq):
        return _tokens_to_image_folded(attn, q, k, v)
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
    if _few_tokens(attn, k.shape[1]):
        return _image_to_tokens_folded(attn, q, k, v, qh)
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
