"""The course's building blocks, shared by every model: tokens, positions, attention, encoder,
windows."""

from attnvision.nn.attention import (
    MultiHeadAttention,
    SelfAttention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from attnvision.nn.encoder import MLP, Encoder, EncoderBlock
from attnvision.nn.positional import (
    PositionEmbeddingRandom,
    position_similarity,
    sincos_2d_encoding,
    sinusoidal_encoding,
    sinusoidal_frequencies,
)
from attnvision.nn.tokens import PatchEmbed, WordTokenizer, patchify, unpatchify
from attnvision.nn.windows import window_partition, window_unpartition

__all__ = [
    "MLP",
    "Encoder",
    "EncoderBlock",
    "MultiHeadAttention",
    "PatchEmbed",
    "PositionEmbeddingRandom",
    "SelfAttention",
    "WordTokenizer",
    "merge_heads",
    "patchify",
    "position_similarity",
    "scaled_dot_product_attention",
    "sincos_2d_encoding",
    "sinusoidal_encoding",
    "sinusoidal_frequencies",
    "split_heads",
    "unpatchify",
    "window_partition",
    "window_unpartition",
]
