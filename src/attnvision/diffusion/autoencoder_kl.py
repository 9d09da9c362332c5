"""The KL autoencoder of latent diffusion (the Stable Diffusion VAE): images <-> latents.

    encode:  x (B, 3, H, W) in -1..1  ->  q(z|x) = N(mean, diag(exp(logvar))),  (B, c, H/f, W/f)
    decode:  z (B, c, H/f, W/f)       ->  x̂ (B, 3, H, W),  f = 2^(levels - 1) (8 for SD)

Both halves are convolutional: ResNet blocks (GroupNorm, SiLU, 3x3 conv) at each level, a
stride-2 conv between levels, and one single-head self-attention over all H*W cells in the
middle. A diffusion model works on ``(z - shift_factor) * scaling_factor``, which has about
unit variance (:meth:`AutoencoderKL.scale_latents`); ``decode`` takes the unscaled latents.

Module names are those of the original CompVis / Stability checkpoints (``encoder.down.0.
block.0.norm1``, ``encoder.mid.attn_1.q``, ``decoder.up.3.upsample.conv``, ...), so official
files load with ``strict=True``; diffusers' names are mapped by one function in
:mod:`attnvision.diffusion.vae_checkpoints`. As in CompVis, ``decoder.up[i]`` works at the
resolution of ``encoder.down[i]``, so the decoder runs ``up[levels - 1]`` first.

Memory: decoding is dominated by the last level's activations (128 channels at full size for
SD). Under ``no_grad`` the SiLUs run in place and each intermediate is dropped as soon as it
is used: a 512 x 512 SD decode in float32 holds at most 640 MiB of tensors, diffusers' 768
(counted tensor by tensor on CPU; conv workspaces excluded). On a CPU the convolutions run
channels-last (:class:`Conv2d`), which spares oneDNN's full-size layout copies around each
conv: the peak RSS of that decode rises 872 MB above the built model, diffusers' 1168 MB.
The input and output of the first full-size ResNet block alone are half of diffusers' peak,
so the big saving is :meth:`AutoencoderKL.tiled_decode`, which bounds the peak by the tile
size: 164 MiB of tensors there, 458 MB of RSS (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.diffusion import row_bands
from attnvision.errors import UserError
from attnvision.nn import winograd

NORM_EPS = 1e-6  # every GroupNorm of the SD VAE


@dataclass(frozen=True)
class VAEConfig:
    """One KL autoencoder, in the fields (and names) of diffusers' ``config.json``."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # one width per level
    layers_per_block: int = 2  # ResNet blocks per encoder level (the decoder has one more)
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 256  # the image side it was trained at
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        widths = self.block_out_channels
        if not widths or self.layers_per_block < 1:
            raise ValueError("a VAE needs at least one level and one ResNet block per level")
        if any(w % self.norm_num_groups for w in widths):
            raise ValueError(f"norm_num_groups ({self.norm_num_groups}) must divide every "
                             f"width in block_out_channels {widths}")

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along a side: one halving per level but the last."""
        return 2 ** (len(self.block_out_channels) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VAEConfig:
        return cls(**json.loads(text))

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any], source: str = "config.json"
                       ) -> VAEConfig:
        """The config of a diffusers ``AutoencoderKL`` ``config.json`` (as a dict).

        Keys diffusers writes for itself (``_class_name``, ``_diffusers_version``,
        ``force_upcast``, ...) are ignored; a missing key takes diffusers' default. Anything
        this model cannot be (another activation or block type) is a one-line UserError.
        """
        config = {**_DIFFUSERS_DEFAULTS, **config}
        name = config.get("_class_name", "AutoencoderKL")
        problems = [f"its class is {name}" if name != "AutoencoderKL" else "",
                    f"act_fn is {config['act_fn']!r}" if config["act_fn"] != "silu" else ""]
        for key, kind in (("down_block_types", "DownEncoderBlock2D"),
                          ("up_block_types", "UpDecoderBlock2D")):
            other = sorted(set(config[key]) - {kind})
            if other:
                problems.append(f"{key} has {', '.join(other)}")
            elif len(config[key]) != len(config["block_out_channels"]):
                problems.append(f"{key} has {len(config[key])} entries for "
                                f"{len(config['block_out_channels'])} widths")
        for key in ("latents_mean", "latents_std"):
            if config.get(key) is not None:
                problems.append(f"it normalises latents per channel ({key})")
        if any(problems):
            raise UserError(f"{source} is not a Stable Diffusion-style KL autoencoder "
                            f"({'; '.join(p for p in problems if p)}): use an AutoencoderKL "
                            "such as stabilityai/sd-vae-ft-mse")
        size = config["sample_size"]
        kwargs = {f.name: config[f.name] for f in fields(cls) if f.name in config}
        kwargs["sample_size"] = int(size[0] if isinstance(size, (list, tuple)) else size)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: {e}") from None


# What diffusers' AutoencoderKL assumes when its config.json leaves a key out.
_DIFFUSERS_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1,
    "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32,
    "scaling_factor": 0.18215, "shift_factor": None, "use_quant_conv": True,
    "use_post_quant_conv": True, "mid_block_add_attention": True}

VAE_CONFIGS: dict[str, VAEConfig] = {
    # stabilityai/sd-vae-ft-mse (and SD 1.x / 2.x): 83.7 M parameters, f = 8, 4 channels.
    "sd": VAEConfig(),
    # stabilityai/sdxl-vae: the same network, retrained; its latents have another scale.
    "sdxl": VAEConfig(sample_size=1024, scaling_factor=0.13025),
    # SD 3 / FLUX.1: 16 latent channels, no 1x1 convs around the latent, shifted latents.
    "sd3": VAEConfig(latent_channels=16, sample_size=1024, scaling_factor=1.5305,
                     shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
    "flux": VAEConfig(latent_channels=16, sample_size=1024, scaling_factor=0.3611,
                      shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
}


class DiagonalGaussian:
    """The encoder's posterior q(z|x) = N(mean, diag(var)), var = exp(logvar).

    ``logvar`` is clamped to [-30, 20] (as in CompVis and diffusers) so that exp stays finite.
    ``kl()`` is KL(q || N(0, I)) per image, summed over channels and cells:

        KL = 1/2 * sum_{c,h,w} (mean^2 + var - 1 - logvar)
    """

    def __init__(self, moments: Tensor) -> None:
        # moments: (B, 2c, h, w), mean then log-variance along channels
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + std * ε, ε ~ N(0, I) drawn as diffusers draws it (on the generator's
        device, then moved), so that one seed gives one sample in both."""
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device,
                            dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """(B,) KL divergence to the standard normal prior."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class Conv2d(winograd.Conv2d):
    """nn.Conv2d (same parameters, same state dict) that convolves channels-last on a CPU.

    oneDNN's native CPU layout is channels-last (NHWC): a conv given an NCHW input and weight
    reorders both to a blocked layout and its output back, full-size copies at every call. Given
    a channels-last weight it reads and writes NHWC directly, and its output stays NHWC through
    GroupNorm, SiLU, the adds and nearest upsampling, so after the first conv the whole network
    runs in that layout: on this project's CPU the convolutions of a decode take 8 % (fp32) to
    11 % (bf16) less time and a 512-px decode's work peak RSS is 22 % (fp32) to 38 % (bf16)
    lower (benchmarks/RESULTS.md, "Latent diffusion speed"). The parameters themselves stay
    NCHW, so state dicts save and load as before; the weight is laid out again at each call
    (at most 9 MB, a small cost next to the convolution).

    At float32 inference, wide 3 x 3 convolutions on large maps (most of a decode's time) run
    by Winograd's F(4 x 4, 3 x 3), with 4x fewer products (:mod:`attnvision.nn.winograd`).
    """

    def weight_for(self, x: Tensor) -> Tensor:
        """The weight as the convolution of ``x`` takes it: channels-last on a CPU."""
        if x.device.type == "cpu":
            return self.weight.contiguous(memory_format=torch.channels_last)
        return self.weight


def _silu(x: Tensor) -> Tensor:
    # In place when nothing records the graph: x is always a fresh norm output here, so
    # overwriting it saves one full-size activation.
    return F.silu(x, inplace=not torch.is_grad_enabled())


class ResnetBlock(nn.Module):
    """x + conv2(SiLU(GN(conv1(SiLU(GN(x)))))), with a 1x1 conv on x when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (Conv2d(in_channels, out_channels, 1)
                             if in_channels != out_channels else None)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W)
        # Each line rebinds h, so the tensor before it is freed as soon as it has been used.
        h = self.norm1(x)
        h = self.conv1(_silu(h))
        h = self.norm2(h)
        h = self.conv2(_silu(h))
        # h: (B, C_out, H, W); adding in place is safe: a conv does not keep its output
        return h.add_(x if self.nin_shortcut is None else self.nin_shortcut(x))


class AttnBlock(nn.Module):
    """x + proj_out(softmax(q k^T / sqrt(C)) v) over the H*W cells: one head, C wide.

    q, k, v and proj_out are 1x1 convs, as in the original checkpoints (diffusers stores the
    same matrices as Linear layers)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.q = Conv2d(channels, channels, 1)
        self.k = Conv2d(channels, channels, 1)
        self.v = Conv2d(channels, channels, 1)
        self.proj_out = Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W)
        b, c, h, w = x.shape
        t = self.norm(x)
        # (B, 1, H*W, C): one head of C channels
        q, k, v = (conv(t).flatten(2).transpose(1, 2)[:, None] for conv in (self.q, self.k, self.v))
        del t
        out = F.scaled_dot_product_attention(q, k, v)
        del q, k, v
        out = out[:, 0].transpose(1, 2).reshape(b, c, h, w)
        return self.proj_out(out).add_(x)


class Downsample(nn.Module):
    """Halve H and W: pad one zero row and column at the bottom and right, then a 3x3
    stride-2 conv without padding, so (H + 1 - 3) // 2 + 1 = H / 2 exactly for even H."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour copies, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(in_channels: int, out_channels: int, blocks: int, groups: int,
           **resample: nn.Module | None) -> nn.Module:
    """One resolution, as the original code builds it: ``block`` (ResNet blocks) and
    ``downsample`` or ``upsample`` (None at the last level). The encoder and decoder run its
    blocks from their own forward: a level's forward would keep its input alive while its
    later blocks run, one full-size activation more at the peak of a decode."""
    level = nn.Module()
    level.block = nn.ModuleList(
        ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups)
        for i in range(blocks))
    for name, module in resample.items():
        setattr(level, name, module)
    return level


class MidBlock(nn.Module):
    """ResNet block, attention over all cells (the only global step), ResNet block."""

    def __init__(self, channels: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups) if attention else None
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, h, w)
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        return self.block_2(x)


class Encoder(nn.Module):
    """Image -> (B, 2c, H/f, W/f) moments (before quant_conv)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths, groups = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        # down[i] ends at width widths[i]; it starts from the width of the level above it.
        self.down = nn.ModuleList(
            _level(widths[max(i - 1, 0)], w, cfg.layers_per_block, groups,
                   downsample=Downsample(w) if i < len(widths) - 1 else None)
            for i, w in enumerate(widths))
        self.mid = MidBlock(widths[-1], groups, cfg.mid_block_add_attention)
        self.norm_out = nn.GroupNorm(groups, widths[-1], eps=NORM_EPS)
        self.conv_out = Conv2d(widths[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C_in, H, W)
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if level.downsample is not None:
                h = level.downsample(h)
        h = self.norm_out(self.mid(h))
        return self.conv_out(_silu(h))


class Decoder(nn.Module):
    """(B, c, h, w) latents (after post_quant_conv) -> image.

    ``bands_above``: at inference, layers whose maps (the whole batch) hold more than this
    many values run band by band (:mod:`row_bands`: the same result in a fraction of the
    memory); 0 runs every layer so. Smaller maps, every one of a 256-px SD decode, run plain:
    their copies are small next to the model, and bands cost a few percent of time in bf16."""

    bands_above = 1 << 24

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths, groups = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1], groups, cfg.mid_block_add_attention)
        # up[i] ends at width widths[i]; it starts from the width of the level below it.
        self.up = nn.ModuleList(
            _level(widths[min(i + 1, len(widths) - 1)], w, cfg.layers_per_block + 1, groups,
                   upsample=Upsample(w) if i > 0 else None)
            for i, w in enumerate(widths))
        self.norm_out = nn.GroupNorm(groups, widths[0], eps=NORM_EPS)
        self.conv_out = Conv2d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        # z: (B, c, h, w)
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):  # lowest resolution first
            for block in level.block:
                h = row_bands.resnet_block(block, h) if self._by_bands(h) else block(h)
            if level.upsample is not None:
                up = level.upsample
                h = row_bands.upsample(up, h) if self._by_bands(h, 4) else up(h)
        if self._by_bands(h):
            return row_bands.norm_silu_conv(self.norm_out, self.conv_out, h)
        h = self.norm_out(h)
        return self.conv_out(_silu(h))

    def _by_bands(self, x: Tensor, growth: int = 1) -> bool:
        # ``growth``: the layer's output is that many times its input. Training keeps the
        # plain layers, whose graph autograd needs.
        return not torch.is_grad_enabled() and x.numel() * growth > self.bands_above


class AutoencoderKL(nn.Module):
    """The KL autoencoder: ``encode`` images to a posterior, ``decode`` latents to images.

    ``decode`` tiles latents of more than ``auto_tile_cells`` cells (images above 512 x 512
    for SD) and decodes smaller ones whole, exactly as diffusers does.
    """

    auto_tile_cells = 64 * 64

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VAEConfig()
        c = config.latent_channels
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = Conv2d(2 * c, 2 * c, 1) if config.use_quant_conv else None
        self.post_quant_conv = Conv2d(c, c, 1) if config.use_post_quant_conv else None

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) of images in -1..1, (B, C_in, H, W), H and W multiples of f."""
        # x: (B, C_in, H, W)
        f, c = self.config.downsample_factor, self.config.in_channels
        if x.ndim != 4 or x.shape[1] != c:
            raise UserError(f"the autoencoder encodes (B, {c}, H, W) images, not a tensor of "
                            f"shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise UserError(f"image size {h}x{w} is not a multiple of {f} (the autoencoder "
                            f"halves it {int(math.log2(f))} times): resize or pad it to "
                            f"{-(-h // f) * f}x{-(-w // f) * f}")
        moments = self.encoder(x)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        # Back to NCHW (see Conv2d; a small copy), so callers may view the latents.
        return DiagonalGaussian(moments.contiguous())

    def decode(self, z: Tensor, tiled: bool | None = None) -> Tensor:
        """Images (B, C_out, h f, w f), about -1..1, of unscaled latents (B, c, h, w).

        ``tiled``: None decides by size (see the class); True is :meth:`tiled_decode` with its
        default tiles."""
        self._check_latents(z)
        if tiled is None:
            tiled = z.shape[-2] * z.shape[-1] > self.auto_tile_cells
        return self.tiled_decode(z) if tiled else self._decode(z)

    def _decode(self, z: Tensor) -> Tensor:
        # z: (B, c, h, w)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        # Back to NCHW (see Conv2d): 3 channels, a small copy.
        return self.decoder(z).contiguous()

    def tiled_decode(self, z: Tensor, tile: int = 32, overlap: int = 8) -> Tensor:
        """Decode overlapping ``tile`` x ``tile`` latent tiles one at a time and blend them.

        Peak memory is that of decoding one tile (256 x 256 pixels for SD by default), whatever
        the image size, plus the float32 image being assembled. Tiles overlap by at least
        ``overlap`` cells; in an overlap each tile's weight ramps linearly from ~0 at its edge,
        and every pixel is the weighted mean of the tiles covering it (the weights are
        normalised, so a decoder that acted on each cell alone would be reproduced exactly).

        It is close to, not equal to, :meth:`decode`: each tile normalises with its own
        GroupNorm statistics, its mid attention sees only the tile, and cells near a tile's
        edge see zero padding instead of their neighbours (the ramps give those little weight).
        """
        # z: (B, c, h, w)
        self._check_latents(z)
        if tile < 1 or not 0 <= overlap < tile:
            raise UserError(f"tiled decoding needs tile >= 1 and 0 <= overlap < tile, not "
                            f"tile={tile}, overlap={overlap}")
        f = self.config.downsample_factor
        b, _, h, w = z.shape
        out = torch.zeros(b, self.config.out_channels, h * f, w * f, device=z.device)
        total = torch.zeros(1, 1, h * f, w * f, device=z.device)
        for top in _tile_starts(h, tile, overlap):
            for left in _tile_starts(w, tile, overlap):
                piece = self._decode(z[:, :, top:top + tile, left:left + tile]).float()
                th, tw = piece.shape[-2:]
                weight = (_ramp(th, top * f, h * f, overlap * f, z.device)[:, None]
                          * _ramp(tw, left * f, w * f, overlap * f, z.device))
                rows, cols = slice(top * f, top * f + th), slice(left * f, left * f + tw)
                out[:, :, rows, cols] += piece.mul_(weight)
                total[:, :, rows, cols] += weight
                del piece
        return out.div_(total).to(z.dtype)

    def forward(self, x: Tensor, sample_posterior: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        """Reconstruction of images x: decode(mean), or of a sample of q(z|x)."""
        # x: (B, C_in, H, W)
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        del posterior
        return self.decode(z)

    def scale_latents(self, z: Tensor) -> Tensor:
        """Latents as a diffusion model sees them: (z - shift_factor) * scaling_factor."""
        return (z - (self.config.shift_factor or 0.0)) * self.config.scaling_factor

    def unscale_latents(self, z: Tensor) -> Tensor:
        """The inverse of :meth:`scale_latents`: what ``decode`` takes."""
        return z / self.config.scaling_factor + (self.config.shift_factor or 0.0)

    def _check_latents(self, z: Tensor) -> None:
        c = self.config.latent_channels
        if z.ndim != 4 or z.shape[1] != c:
            raise UserError(f"the autoencoder decodes (B, {c}, h, w) latents, not a tensor of "
                            f"shape {tuple(z.shape)}")


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """First cells of the fewest tiles that cover ``size`` cells overlapping by >= ``overlap``,
    spread evenly, the last one ending at the border."""
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    # Flooring keeps every step <= tile - overlap (an integer >= the exact step).
    return [i * (size - tile) // (n - 1) for i in range(n)]


def _ramp(length: int, start: int, total: int, width: int, device: torch.device) -> Tensor:
    """(length,) weights of a tile spanning [start, start + length) of ``total`` pixels:
    rising over ``width`` pixels from an edge inside the image, 1 elsewhere, never 0."""
    i = torch.arange(length, device=device, dtype=torch.float32)
    weight = torch.ones(length, device=device)
    if start > 0:
        weight = torch.minimum(weight, (i + 1) / (width + 1))
    if start + length < total:
        weight = torch.minimum(weight, (length - i) / (width + 1))
    return weight
