"""Image embeddings in memory, bounded in bytes, least recently used out first.

Prompts need the embedding of their image at hand (milliseconds), encoding it takes seconds:
recent images stay here. The bound is in bytes, not entries, because an embedding's size
depends on the model (vit_b at 1024 px: 256 x 64 x 64 float32 = 4 MiB, plus 14 MiB of decoder
context). Behind this cache
sits the on-disk ``EmbeddingCache``: an entry evicted here is read back from disk, never
encoded again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor

from attnvision.sam.predictor import SamPredictor
from attnvision.sam.two_way import ImageContext


@dataclass(frozen=True)
class Embedding:
    features: Tensor  # (1, 256, g, g), as SamPredictor.get_image_embedding() gives it
    original_size: tuple[int, int]  # (H, W) of the image
    input_size: tuple[int, int]  # (h, w) of the image resized for the encoder
    # The mask decoder's image-only work on these features (SamPredictor.decoder_context),
    # done once when the embedding arrives rather than at every click: ~14 MiB for vit_b.
    context: ImageContext | None = None

    @classmethod
    def of(cls, predictor: SamPredictor) -> Embedding:
        """The embedding a predictor holds, with its decoder context."""
        return cls(predictor.get_image_embedding(), predictor.original_size,
                   predictor.input_size, predictor.decoder_context())

    @property
    def nbytes(self) -> int:
        tensors = [self.features]
        if self.context is not None:
            tensors += [t for t in vars(self.context).values() if isinstance(t, Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)


class EmbeddingLRU:
    """A thread-safe map image id -> ``Embedding`` holding at most ``max_bytes``.

    An embedding larger than the whole bound is not kept (the caller still has it).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.evictions = 0
        self._entries: OrderedDict[str, Embedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Embedding | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: Embedding) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes > self.max_bytes:
                return
            while self._entries and self._bytes + entry.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1
            self._entries[key] = entry
            self._bytes += entry.nbytes

    def pop(self, key: str) -> None:
        """Forget ``key`` (nothing if it is not here)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry.nbytes

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes
