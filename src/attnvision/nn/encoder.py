"""The transformer encoder of the course: N pre-LN blocks of attention then MLP.

    z'_l = MHA(LN(z_{l-1})) + z_{l-1}        (1st step: tokens exchange information)
    z_l  = MLP(LN(z'_l)) + z'_l              (2nd step: each token is transformed alone)

Parameter names (norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2) are timm's, so a timm
ViT block loads into an :class:`EncoderBlock` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from attnvision.nn.attention import SelfAttention

# "gelu_tanh" is GELU's tanh approximation, 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))),
# what DiT was trained with (its checkpoints expect it, not the exact erf GELU).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": partial(nn.GELU, approximate="tanh")}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(nn.Module):
    """MLP(z) = act(z W1 + b1) W2 + b2, with act = max(0, .) as on the slide, or GELU (exact,
    or its tanh approximation: "gelu_tanh")."""

    def __init__(self, dim: int, hidden_dim: int, out_dim: int | None = None,
                 activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = _activation(activation)
        self.fc2 = nn.Linear(hidden_dim, dim if out_dim is None else out_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        # x: (..., D)
        h = self.fc1(x)  # (..., hidden)
        # At inference the activation overwrites fc1's fresh output: the hidden layer is the
        # block's largest map (24 MB for CoTracker's 3,936 tokens), and a second one came
        # from fresh pages each time. The same kernel, so the same values.
        h = self.act(h) if torch.is_grad_enabled() else _activate_(self.act, h)
        return self.drop(self.fc2(self.drop(h)))


def _activate_(act: nn.Module, h: Tensor) -> Tensor:
    """``act(h)`` in place where the activation has an in-place kernel."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(h, approximate=act.approximate)
    if type(act) is nn.ReLU:
        return h.relu_()
    return act(h)


class EncoderBlock(nn.Module):
    """One pre-LN transformer block: z' = MHA(LN(z)) + z, then z = MLP(LN(z')) + z'."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 activation: str = "relu", norm_eps: float = 1e-6, dropout: float = 0.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=qkv_bias, dropout=attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation=activation, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor, mask: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # z: (B, N, D)
        attn = None
        if return_attention:
            h, attn = self.attn(self.norm1(z), mask=mask, return_attention=True)
        else:
            h = self.attn(self.norm1(z), mask=mask)
        z = z + self.drop(h)  # z'
        del h  # freed before the MLP runs: one (B, N, D) buffer less at its peak
        z = z + self.mlp(self.norm2(z))
        return (z, attn) if return_attention else z


class Encoder(nn.Module):
    """N encoder blocks. With ``return_attention`` also every block's (B, H, N, N) maps."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, activation: str = "relu", norm_eps: float = 1e-6,
                 dropout: float = 0.0, attn_dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, mlp_ratio, qkv_bias, activation, norm_eps, dropout,
                         attn_dropout)
            for _ in range(depth)
        )

    def forward(self, z: Tensor, mask: Tensor | None = None,
                return_attention: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        # z: (B, N, D)
        maps: list[Tensor] = []
        for block in self.blocks:
            if return_attention:
                z, attn = block(z, mask=mask, return_attention=True)
                maps.append(attn)
            else:
                z = block(z, mask=mask)
        return (z, maps) if return_attention else z
