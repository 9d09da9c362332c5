"""The update transformer (``updateformer``): one token per track per frame, refined jointly.

Attention alternates between two axes:
- time: each track's T tokens attend to each other (a track is smooth, and an occluded frame
  learns from its neighbours);
- space: tracks exchange information through a few learnt *virtual tracks*. Virtual tokens
  first read from every track (cross attention), then attend among themselves, then every
  track reads from them. With V virtual tracks this costs N * V instead of N * N per frame,
  so thousands of tracks stay affordable, yet tracks of one object still move together.

The output per token is (dx, dy, d visibility logit, d confidence logit). Parameter names are
the official ones, including the misspelt ``virual_tracks``.

To look inside, set an :class:`AttentionRecorder` as ``recorder`` (or use :func:`recording`):
each pass then goes through the explicit softmax path and leaves its weights there. Without
one the blocks run the fused kernel and keep nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnvision.nn.attention import attend_heads, split_heads
from attnvision.nn.encoder import MLP


class TanhGeluMLP(MLP):
    """The course's MLP with GELU's tanh approximation, which the official blocks use."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__(dim, hidden_dim, activation="gelu")
        self.act = nn.GELU(approximate="tanh")


class Attention(nn.Module):
    """Multi-head attention with the official layout: ``to_q``, a fused ``to_kv``, ``to_out``.

    Self attention when called with one input, cross attention with a ``context``.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim if context_dim is None else context_dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B, N1, D), context: (B, N2, Dc)
        k, v = self.to_kv(x if context is None else context).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.num_heads) for t in (self.to_q(x), k, v))
        return attend_heads(q, k, v, self.to_out, None, None, return_attention, 0.0)


def _norm(dim: int) -> nn.LayerNorm:
    # The official pre-norms have no scale and shift (so no checkpoint keys).
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


@dataclass
class AttentionRecorder:
    """The attention weights of the update transformer's latest pass, one tensor per block.

    Each pass replaces what the previous one left, so after a model call this holds the last
    refinement iteration's weights (of the last window, for the windowed model). Heads are
    kept apart; every row sums to 1.
    """

    # Per time block: each track's frames over its frames, (B N, heads, T, T), a row per
    # frame that asks; the virtual tracks' own rows are left out.
    time: list[Tensor] = field(default_factory=list)
    # Per space block, per frame: each track over the virtual tracks, (B T, heads, N, V).
    track_to_virtual: list[Tensor] = field(default_factory=list)
    # Per space block, per frame: each virtual track over the tracks, (B T, heads, V, N).
    virtual_to_track: list[Tensor] = field(default_factory=list)

    def clear(self) -> None:
        self.time, self.track_to_virtual, self.virtual_to_track = [], [], []


class AttnBlock(nn.Module):
    """Pre-LN self-attention block: x + attn(LN(x)), then x + MLP(LN(x)).

    With ``return_attention`` also the weights (B, heads, N, N), by the explicit path.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = _norm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = _norm(dim)
        self.mlp = TanhGeluMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B, N, D)
        if not return_attention:
            # Each residual sum goes into the branch's fresh output (x + y is y + x to the
            # bit): a map less to allocate, which cost more than the sum at 3,936 tokens.
            x = self.attn(self.norm1(x)).add_(x)
            return self.mlp(self.norm2(x)).add_(x)
        out, attn = self.attn(self.norm1(x), return_attention=True)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


class CrossAttnBlock(nn.Module):
    """Pre-LN cross-attention block: x + attn(LN(x), LN'(context)), then x + MLP(LN(x)).

    The context's norm is a default LayerNorm (learnt scale and shift, eps 1e-5), as the
    official one; the others have none. With ``return_attention`` also the weights
    (B, heads, N1, N2), by the explicit path.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = _norm(dim)
        self.norm_context = nn.LayerNorm(context_dim)
        self.cross_attn = Attention(dim, num_heads, context_dim=context_dim)
        self.norm2 = _norm(dim)
        self.mlp = TanhGeluMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, context: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
        # x: (B, N1, D), context: (B, N2, Dc)
        if not return_attention:  # the sums in place, as in AttnBlock
            x = self.cross_attn(self.norm1(x), context=self.norm_context(context)).add_(x)
            return self.mlp(self.norm2(x)).add_(x)
        out, attn = self.cross_attn(self.norm1(x), context=self.norm_context(context),
                                    return_attention=True)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


class UpdateTransformer(nn.Module):
    """Tokens (B, N, T, input_dim) -> updates (B, N, T, 4): dx, dy, d vis, d conf.

    ``recorder``: None (the default) or an :class:`AttentionRecorder` that each pass fills.
    """

    def __init__(self, input_dim: int, hidden_size: int, num_heads: int, time_depth: int,
                 space_depth: int, num_virtual_tracks: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_virtual_tracks = num_virtual_tracks
        self.input_transform = nn.Linear(input_dim, hidden_size)
        self.flow_head = nn.Linear(hidden_size, 2)
        self.vis_conf_head = nn.Linear(hidden_size, 2)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList(
            AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth))
        self.space_virtual_blocks = nn.ModuleList(
            AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth))
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio)
            for _ in range(space_depth))
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttnBlock(hidden_size, hidden_size, num_heads, mlp_ratio)
            for _ in range(space_depth))
        self.recorder: AttentionRecorder | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        """The official initialisation (for training from scratch): Xavier linears, and heads
        that start near zero so the first updates barely move the tracks."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)
        nn.init.trunc_normal_(self.vis_conf_head.weight, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, N, T, input_dim)
        tokens = self.input_transform(x)  # (B, N, T, D)
        b, n, t, d = tokens.shape
        v = self.num_virtual_tracks
        every = len(self.time_blocks) // len(self.space_virtual_blocks)
        rec = self.recorder
        if rec is not None:
            rec.clear()
        for i, time_block in enumerate(self.time_blocks):
            rows = n if i == 0 else n + v  # the first block sees the tracks only (below)
            if rec is None:
                tokens = time_block(tokens.reshape(b * rows, t, d))
            else:
                tokens, attn = time_block(tokens.reshape(b * rows, t, d), True)
                rec.time.append(attn.unflatten(0, (b, rows))[:, :n].flatten(0, 1))
            if i == 0:
                # A virtual track enters as one learnt token repeated in every frame, so the
                # first time block gives it the same output in every frame: computed for
                # one frame, not T (0.4 of that block's tokens at 100 tracks).
                virtual = self.virual_tracks[0]  # (V, 1, D)
                # Detached at inference, where it changes nothing: torch's module tracker
                # (FlopCounterMode's) fails on a parameter's view met in inference mode.
                virtual = time_block(virtual if torch.is_grad_enabled() else virtual.detach())
                tokens = torch.cat([tokens.view(b, n, t, d), virtual[None].expand(b, v, t, d)],
                                   dim=1)
            tokens = tokens.view(b, n + v, t, d)
            if i % every:
                continue
            j = i // every
            space = tokens.transpose(1, 2).reshape(b * t, n + v, d)  # (B T, N + V, D)
            points, virtual = space[:, :n], space[:, n:]
            if rec is None:
                virtual = self.space_virtual2point_blocks[j](virtual, points)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual)
            else:
                virtual, virtual_reads = self.space_virtual2point_blocks[j](virtual, points,
                                                                             True)
                virtual = self.space_virtual_blocks[j](virtual)
                points, track_reads = self.space_point2virtual_blocks[j](points, virtual, True)
                rec.virtual_to_track.append(virtual_reads)
                rec.track_to_virtual.append(track_reads)
            tokens = torch.cat([points, virtual], dim=1).view(b, t, n + v, d).transpose(1, 2)
        tokens = tokens[:, :n]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)


@contextmanager
def recording(transformer: UpdateTransformer) -> Iterator[AttentionRecorder]:
    """``with recording(model.updateformer) as rec: model(...)``: the weights of the last
    pass are in ``rec`` afterwards; the transformer is left as it was found."""
    previous = transformer.recorder
    transformer.recorder = rec = AttentionRecorder()
    try:
        yield rec
    finally:
        transformer.recorder = previous
