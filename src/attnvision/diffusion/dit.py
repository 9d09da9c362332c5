"""DiT, the Diffusion Transformer (Peebles & Xie, "Scalable Diffusion Models with Transformers").

A ViT that predicts the noise in a latent. The noisy latent x_t (B, C, H, W) is cut into
P x P patches and embedded, E = X . U_e + fixed 2-D sin-cos positions; the timestep t and the
class y become one conditioning vector per image,

    c = MLP(timestep_embedding(t)) + Embedding(y)                          (D numbers)

and every block is the course's pre-LN encoder block whose LayerNorms have no weights of
their own: c gives them, per image, a shift and a scale, and gates each residual (adaLN-Zero):

    shift1, scale1, gate1, shift2, scale2, gate2 = Linear(SiLU(c))
    z' = z  + gate1 * MHA(LN(z)  * (1 + scale1) + shift1)
    z  = z' + gate2 * MLP(LN(z') * (1 + scale2) + shift2)

The gating linears and the output layer start at zero ("Zero"): at initialisation every
block is the identity and the model outputs 0. A last adaptive LayerNorm and a linear layer
turn each token back into a P x P patch of C_out channels: the noise ε (C channels) and, with
``learn_sigma``, C more that interpolate the variance between β_t and β̃_t (Nichol & Dhariwal).

Classifier-free guidance: the class table has one row more, the null class y = num_classes
(labels are dropped to it at random while training); :func:`guided_output` combines the
conditional and unconditional predictions.

Parameter names are Meta's (facebookresearch/DiT models.py), so its files load with
strict=True; :mod:`attnvision.diffusion.dit_checkpoints` renames diffusers' files. The two
codes differ in constants the config holds (``freq_shift``, ``mlp_norm_eps``,
``guided_channels``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnvision.errors import UserError
from attnvision.nn.attention import SelfAttention
from attnvision.nn.encoder import MLP
from attnvision.nn.positional import sincos_2d_encoding, sinusoidal_encoding
from attnvision.nn.tokens import PatchEmbed, unpatchify

TIMESTEP_DIM = 256  # width of the sinusoidal timestep code in both reference codes


@dataclass(frozen=True)
class DiTConfig:
    input_size: int = 32  # latent side the position table is made for (256 px / 8)
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    # > 0: labels are dropped while training, and y = num_classes is the null (unconditional) one
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    # Where Meta's code and diffusers' differ; the loaders set them from the file's format.
    freq_shift: float = 0.0  # w_k = exp(-ln(10000) k / (128 - shift)): Meta 0, diffusers 1
    mlp_norm_eps: float = 1e-6  # norm2's eps: Meta 1e-6, diffusers 1e-5
    guided_channels: int = 3  # channels guidance applies to: Meta 3, diffusers all 4

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size "
                             f"({self.hidden_size})")
        if self.hidden_size % 4:  # half for the column, half for the row, each sin and cos
            raise ValueError(f"hidden_size must be a multiple of 4, not {self.hidden_size}")
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} is not a multiple of {self.patch_size}")
        if not 0 < self.guided_channels <= self.out_channels:
            raise ValueError(f"guided_channels must be in 1..{self.out_channels}, "
                             f"not {self.guided_channels}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"unknown DiT config fields {unknown}: this file was written by a "
                            "newer attnvision or is not a DiT config")
        return cls(**data)


# The paper's four sizes (width, depth, heads) at patch 2, 4 and 8, for 256 x 256 images.
_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
DIT_CONFIGS: dict[str, DiTConfig] = {
    f"DiT-{name}/{p}": DiTConfig(patch_size=p, hidden_size=w, depth=d, num_heads=h)
    for name, (w, d, h) in _SIZES.items() for p in (2, 4, 8)
}


def dit_config(name: str, **overrides: Any) -> DiTConfig:
    """``DIT_CONFIGS[name]`` with some fields replaced, e.g. ``input_size=64`` for 512 px."""
    if name not in DIT_CONFIGS:
        raise UserError(f"unknown DiT model {name!r}: choose one of {', '.join(DIT_CONFIGS)}")
    return dataclasses.replace(DIT_CONFIGS[name], **overrides)


def timestep_embedding(t: Tensor, dim: int = TIMESTEP_DIM, freq_shift: float = 0.0) -> Tensor:
    """(B,) timesteps -> (B, dim) [cos(w_0 t) .. cos(w_{dim/2-1} t), sin(w_0 t) .. ].

    The course's sinusoidal code of position t with the cosines first; with freq_shift 0,
    w_k = 1 / 10000^(2k/dim), Meta's frequencies; diffusers' use shift 1 (see
    :func:`attnvision.nn.positional.sinusoidal_frequencies`). Fractional t are allowed.
    """
    return sinusoidal_encoding(t.numel(), dim, positions=t, layout="cos_sin",
                               freq_shift=freq_shift)


def dit_pos_embed(grid_h: int, grid_w: int, dim: int, base: int) -> Tensor:
    """DiT's fixed (1, grid_h * grid_w, dim) position table: the course's 2-D sin-cos code with
    every sine before every cosine (MAE's layout, which Meta's files store).

    The table is made for a base x base grid; another grid is spread over the same extent, row
    i at i * base / grid_h (diffusers' rule), so a larger latent sees the positions it was
    trained on, closer together.
    """
    return sincos_2d_encoding(grid_h, grid_w, dim, layout="sin_cos",
                              spacing=(base / grid_h, base / grid_w))[None]


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    # x: (B, N, D); shift, scale: (B, D), one per image
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """t -> MLP(timestep_embedding(t)): Linear(256, D), SiLU, Linear(D, D)."""

    def __init__(self, dim: int, freq_shift: float = 0.0) -> None:
        super().__init__()
        self.freq_shift = freq_shift
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        # t: (B,) -> (B, D)
        code = timestep_embedding(t, TIMESTEP_DIM, self.freq_shift)
        return self.mlp(code.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """y -> a learned row per class, and with dropout a last row for the null class."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), dim)

    def forward(self, y: Tensor) -> Tensor:
        # y: (B,) -> (B, D)
        if self.training and self.dropout_prob > 0:
            # The model learns the unconditional prediction from the same batches.
            drop = torch.rand(y.shape, device=y.device) < self.dropout_prob
            y = torch.where(drop, self.num_classes, y)
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    """One encoder block whose LayerNorms are shifted, scaled and gated by c (adaLN-Zero)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 mlp_norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=mlp_norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation="gelu_tanh")
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, z: Tensor, c: Tensor,
                return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        # z: (B, N, D) tokens, c: (B, D) conditioning
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        h = self.attn(modulate(self.norm1(z), shift1, scale1), return_attention=return_attention)
        h, attn = h if return_attention else (h, None)
        z = z + gate1[:, None] * h  # z'
        del h  # freed before the MLP runs
        z = z + gate2[:, None] * self.mlp(modulate(self.norm2(z), shift2, scale2))
        return (z, attn) if return_attention else z


class FinalLayer(nn.Module):
    """Adaptive LayerNorm (shift, scale from c) then a linear map to a P x P x C_out patch."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        # z: (B, N, D), c: (B, D) -> (B, N, P*P*C_out)
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(z), shift, scale))


class DiT(nn.Module):
    """Patches + positions, N adaLN-Zero blocks conditioned on c = t + y, an adaptive output
    layer, the patches put back: (B, C, H, W) latents -> (B, C_out, H, W)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        c = self.config = config
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size, c.freq_shift)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob)
        # Fixed, never learned: a buffer, so no optimiser moves it; persistent, because
        # Meta's files store it (the loader checks theirs equals this one).
        self.register_buffer("pos_embed", dit_pos_embed(c.grid_size, c.grid_size,
                                                        c.hidden_size, c.grid_size))
        self.blocks = nn.ModuleList(
            DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio, c.mlp_norm_eps)
            for _ in range(c.depth))
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, c.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Meta's initialisation: Xavier-uniform linears and patch projection, zero biases,
        N(0, 0.02) class table and timestep MLP, and the adaLN-Zero zeros."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        proj = self.x_embedder.proj
        # Xavier of the (D, C*P*P) matrix U_e^T, not of the 4-D kernel.
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for i in (0, 2):
            nn.init.normal_(self.t_embedder.mlp[i].weight, std=0.02)
        zeroed = [b.adaLN_modulation[1] for b in self.blocks] + [
            self.final_layer.adaLN_modulation[1], self.final_layer.linear]
        for param in (q for layer in zeroed for q in layer.parameters()):
            nn.init.zeros_(param)

    def position_table(self, grid_h: int, grid_w: int) -> Tensor:
        """(1, grid_h * grid_w, D): the stored table at the native grid, else computed."""
        c = self.config
        if grid_h == grid_w == c.grid_size:
            return self.pos_embed
        return dit_pos_embed(grid_h, grid_w, c.hidden_size, c.grid_size).to(self.pos_embed.device)

    def forward(self, x: Tensor, t: Tensor | float, y: Tensor, return_attention: bool = False
                ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """The prediction (B, C_out, H, W) for latents x at timesteps t of classes y; with
        ``return_attention`` also every block's (B, heads, N, N) attention maps."""
        # x: (B, C, H, W), H and W any multiples of P (a grid other than input_size's gets
        # its positions from dit_pos_embed); t: (B,) or one for all; y: (B,) in
        # 0 .. num_classes (num_classes: the null class)
        b, _, h, w = x.shape
        p = self.config.patch_size
        z = self.x_embedder(x)  # (B, N, D), N = (H/P)(W/P)
        z = z + self.position_table(h // p, w // p).to(z.dtype)
        t = torch.as_tensor(t, device=x.device)
        c = self.t_embedder(t.expand(b) if t.ndim == 0 else t) + self.y_embedder(y)  # (B, D)
        maps: list[Tensor] = []
        for block in self.blocks:
            if return_attention:
                z, attn = block(z, c, return_attention=True)
                maps.append(attn)
            else:
                z = block(z, c)
        z = self.final_layer(z, c)  # (B, N, P*P*C_out)
        # Meta's linear lays a patch out channel-last, (P, P, C_out); the course's unpatchify
        # reads channel-first patches (C, P, P), a convolution kernel's order.
        cout = self.config.out_channels
        z = z.reshape(b, z.shape[1], p, p, cout).permute(0, 1, 4, 2, 3).flatten(2)
        out = unpatchify(z, p, (h, w), cout)
        return (out, maps) if return_attention else out


def guided_output(model_output: Tensor, guidance_scale: float, guided_channels: int) -> Tensor:
    """Classifier-free guidance (Ho & Salimans): ε = ε_u + s (ε_c − ε_u).

    ``model_output`` (2B, C_out, H, W) holds B conditional predictions, then the same B latents'
    predictions with the null label (the batch order of Meta's sample.py and of diffusers'
    DiTPipeline). The first ``guided_channels`` channels are guided; the others (the learned
    variance, and with Meta's 3 the 4th noise channel: Meta guides 3 "for exact
    reproducibility") are the conditional half's. s = 1 gives ε_c, s = 0 ε_u, s > 1 pushes
    away from the unconditional prediction. Returns (B, C_out, H, W).
    """
    if model_output.shape[0] % 2:
        raise ValueError(f"guided_output needs the conditional and unconditional halves of an "
                         f"even batch, got {model_output.shape[0]}")
    cond, uncond = model_output.chunk(2, dim=0)
    g = guided_channels
    eps = uncond[:, :g] + guidance_scale * (cond[:, :g] - uncond[:, :g])
    return torch.cat([eps, cond[:, g:]], dim=1)

