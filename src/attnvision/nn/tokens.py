"""Tokens: images cut into P x P patches, their linear embedding, and word tokens.

A patch token is a vector of P*P*C numbers. We flatten each patch channel-first, (C, P, P),
because that is the memory order of a convolution kernel: the learnable matrix U_e of the
course (E = X . U_e) is then exactly ``PatchEmbed.proj.weight.reshape(D, -1).T`` and the
strided convolution that timm and SAM use computes the same product without building X.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def _check_patch_size(height: int, width: int, patch_size: int) -> None:
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the patch size {patch_size}: "
            f"resize or crop it to a multiple of {patch_size} first"
        )


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping patches, one token per patch, in row-major order.

    images: (B, C, H, W) -> tokens: (B, N, P*P*C) with N = (H/P) * (W/P).
    Token n covers rows (n // (W/P)) * P ... and columns (n % (W/P)) * P ...
    """
    if images.ndim != 4:
        raise ValueError(
            f"patchify expects images of shape (B, C, H, W), got {tuple(images.shape)}")
    b, c, h, w = images.shape
    _check_patch_size(h, w, patch_size)
    p = patch_size
    gh, gw = h // p, w // p
    x = images.reshape(b, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(b, gh * gw, c * p * p)


def unpatchify(tokens: Tensor, patch_size: int, image_size: tuple[int, int],
               channels: int) -> Tensor:
    """Exact inverse of :func:`patchify`: tokens (B, N, P*P*C) -> images (B, C, H, W)."""
    if tokens.ndim != 3:
        raise ValueError(f"unpatchify expects tokens of shape (B, N, D), got {tuple(tokens.shape)}")
    h, w = image_size
    _check_patch_size(h, w, patch_size)
    p = patch_size
    gh, gw = h // p, w // p
    b, n, d = tokens.shape
    if n != gh * gw or d != channels * p * p:
        raise ValueError(
            f"tokens of shape {tuple(tokens.shape)} do not tile a {channels}x{h}x{w} image with "
            f"{p}x{p} patches: expected (B, {gh * gw}, {channels * p * p})"
        )
    x = tokens.reshape(b, gh, gw, channels, p, p)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, P, gw, P)
    return x.reshape(b, channels, h, w)


class PatchEmbed(nn.Module):
    """The learnable projection U_e applied to every patch token: E = X . U_e + b.

    Implemented as a convolution with kernel = stride = P (identical arithmetic, no copy of
    the image into tokens), named ``proj`` as in timm and SAM so their weights load as is.
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 bias: bool = True, flatten: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.flatten = flatten
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size,
                              bias=bias)

    @property
    def U_e(self) -> Tensor:
        """The (P*P*C, D) matrix of the course, as a view of the convolution weight."""
        return self.proj.weight.reshape(self.embed_dim, -1).T

    def forward(self, images: Tensor) -> Tensor:
        # images: (B, C, H, W)
        c, h, w = images.shape[1:]
        if c != self.in_chans:
            raise ValueError(f"PatchEmbed expects {self.in_chans} channels, got {c}")
        _check_patch_size(h, w, self.patch_size)
        x = self.proj(images)  # (B, D, H/P, W/P)
        if self.flatten:
            return x.flatten(2).transpose(1, 2)  # (B, N, D)
        return x.permute(0, 2, 3, 1)  # (B, H/P, W/P, D), the layout SAM's encoder works in


_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)


class WordTokenizer:
    """Word-level tokens and their one-hot vectors, as on the course's first slide.

    "Hello, I am olivier" -> ["Hello", "I", "am", "olivier"]: punctuation separates words and
    is dropped. Index 0 is reserved for words the vocabulary has never seen.
    """

    unknown = "<unk>"

    def __init__(self, vocabulary: Iterable[str] = ()) -> None:
        self.vocab: dict[str, int] = {self.unknown: 0}
        for word in vocabulary:
            self.vocab.setdefault(word, len(self.vocab))

    @classmethod
    def fit(cls, texts: Iterable[str]) -> WordTokenizer:
        """A tokenizer whose vocabulary is every word of ``texts``, in order of appearance."""
        return cls(word for text in texts for word in cls.split(text))

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(word, 0) for word in self.split(text)]

    def decode(self, ids: Sequence[int]) -> list[str]:
        words = list(self.vocab)
        return [words[i] for i in ids]

    def one_hot(self, text: str) -> Tensor:
        """(N, t) matrix: one row x_i in {0, 1}^t per word, t = vocabulary size."""
        ids = torch.tensor(self.encode(text), dtype=torch.long)
        return nn.functional.one_hot(ids, num_classes=len(self)).float()
