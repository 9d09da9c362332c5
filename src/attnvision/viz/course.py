"""The course's figures, computed by the library's own functions.

1. the sinusoidal positional-encoding matrix P (50 tokens x 128 dimensions);
2. the position-similarity matrix K = P . P^T;
3. an image cut into its 16 x 16 patch grid, and its tokens;
4. the attention maps of one encoder block on that image's tokens.

The block of figure 4 is not trained (training is the ViT's job): it is an
:class:`~attnvision.nn.EncoderBlock` whose U_e is the image's own principal components and
whose Q and K projections are the identity, so each head attends to the tokens most similar
to the query in its share of the embedding (content) plus the 2-D position code. That makes
the mechanism visible without pretending to have learned anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from attnvision.data.images import sample_image
from attnvision.errors import UserError
from attnvision.nn.encoder import EncoderBlock
from attnvision.nn.positional import position_similarity, sincos_2d_encoding, sinusoidal_encoding
from attnvision.nn.tokens import PatchEmbed, patchify
from attnvision.viz.plots import attention_overlays, heatmap, patch_grid


def center_square(image: np.ndarray, size: int) -> np.ndarray:
    """Crop the largest centred square and resize it to size x size (bicubic)."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = Image.fromarray(image[top:top + s, left:left + s])
    return np.array(square.resize((size, size), Image.BICUBIC))


HEAD_ROLES = ("content: principal components 1-16", "content: components 17-32",
              "position: column code", "position: row code")


@torch.no_grad()
def similarity_block(images: torch.Tensor, patch_size: int, sharpness: float = 1.0
                     ) -> tuple[PatchEmbed, EncoderBlock, torch.Tensor]:
    """A PatchEmbed and EncoderBlock set by hand (no training) so that attention means similarity.

    Tokens are 64 wide: U_e writes the image's top 32 principal components (whitened) into
    dimensions 0-31 and the 2-D sin-cos code lives in dimensions 32-63, so the course's sum
    "token + position" keeps the two apart. Q = K = sqrt(sharpness) I and V = I, with 4 heads
    of 16 dimensions: heads 0-1 compare appearance, heads 2-3 compare column and row.
    Returns (embed, block, positional encoding (N, 64)).
    """
    dim, half = 64, 32
    x = patchify(images, patch_size)[0]  # (N, P*P*C)
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(half, vh.shape[0])
    u_e = torch.zeros(x.shape[1], dim)
    u_e[:, :k] = vh[:k].T / (s[:k] / x.shape[0] ** 0.5).clamp_min(1e-6)  # unit variance each
    c = images.shape[1]
    embed = PatchEmbed(patch_size, c, dim)
    embed.proj.weight.copy_(u_e.T.reshape(dim, c, patch_size, patch_size))
    embed.proj.bias.copy_(-mean @ u_e)

    block = EncoderBlock(dim, num_heads=4, activation="relu")
    eye = torch.eye(dim)
    block.attn.qkv.weight.copy_(torch.cat([eye * sharpness ** 0.5, eye * sharpness ** 0.5, eye]))
    block.attn.qkv.bias.zero_()
    block.attn.proj.weight.copy_(eye)
    block.attn.proj.bias.zero_()
    gh, gw = images.shape[2] // patch_size, images.shape[3] // patch_size
    pe = torch.zeros(gh * gw, dim)
    pe[:, half:] = sincos_2d_encoding(gh, gw, half) * 2**0.5  # unit variance like the content
    return embed, block, pe


def check_geometry(patch_size: int, size: int) -> None:
    """Refuse, in one line, an image size and patch size that do not make a patch grid."""
    if patch_size < 1 or size < 1:
        raise UserError("--patch-size and --size must be positive integers")
    if size % patch_size:
        raise UserError(f"--size {size} is not a multiple of --patch-size {patch_size}: "
                        f"use e.g. --size {max(patch_size, size // patch_size * patch_size)}")
    if size // patch_size < 2:
        raise UserError(f"--size {size} gives fewer than 2x2 patches of {patch_size} px: "
                        "use a larger size or a smaller patch")


def course_figures(out_dir: str | os.PathLike[str], image: np.ndarray | None = None,
                   patch_size: int = 16, size: int = 224, progress: bool = True) -> dict[str, Path]:
    """Write the course's four figures into ``out_dir``; return their paths by name."""
    check_geometry(patch_size, size)
    out = Path(out_dir)
    image = center_square(sample_image() if image is None else image, size)
    files: dict[str, Path] = {}
    steps = tqdm(total=4, desc="course figures", disable=not progress, leave=False)

    pe = sinusoidal_encoding(50, 128)
    files["positional_encoding"] = heatmap(
        pe, out / "positional_encoding.png",
        "Sinusoidal positional encoding: 50 tokens, D = 128", "Depth (dimension i)",
        "Position t")
    steps.update()
    files["position_similarity"] = heatmap(
        position_similarity(pe), out / "position_similarity.png",
        "Position similarity K = P . P^T", "Position", "Position", cmap="viridis",
        symmetric=False)
    steps.update()
    files["patch_grid"] = patch_grid(image, patch_size, out / "patch_grid.png")
    steps.update()

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    embed, block, pos = similarity_block(x, patch_size)
    with torch.no_grad():
        tokens = embed(x) + pos  # (1, N, D)
        _, attn = block(tokens, return_attention=True)  # (1, H, N, N)
    g = size // patch_size
    queries = [g // 4 * g + g // 4, g // 2 * g + g // 2, (3 * g) // 4 * g + g // 4]
    files["attention_maps"] = attention_overlays(
        image, attn[0], (g, g), queries, out / "attention_maps.png",
        "Attention A of one encoder block (U_e = image PCA, Q = K = I; not trained)",
        head_names=HEAD_ROLES)
    steps.update()
    steps.close()
    return files
