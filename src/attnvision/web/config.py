"""The server's settings and limits, in one frozen dataclass the command fills from flags.

Defaults are for one person on their own machine: loopback only, a few hundred MB of
embeddings in memory, uploads up to 25 MB and 40 megapixels (a 12 MP phone photo fits;
a decompression bomb does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path  # uploaded images (images/) live here, so a restart loses none
    embedding_dir: Path | None = None  # the on-disk embedding cache; None: the shared default
    token: str | None = None  # bearer token every API call must carry, if set
    cors_origins: tuple[str, ...] = ()  # no CORS unless asked
    # Host headers accepted; None accepts any. Loopback names by default, so a web page
    # elsewhere cannot reach the app through DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES
    cache_bytes: int = 512 << 20  # embeddings kept in memory (vit_b: 4 MiB per image)
    max_upload_bytes: int = 25 << 20
    max_pixels: int = 40_000_000
    points_per_side: int = 16  # segment everything: a 16 x 16 grid of point prompts
    max_json_bytes: int = 1 << 20  # prompt and export bodies
