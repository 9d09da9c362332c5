"""Giving freed memory back to the operating system during long streams.

A stream decodes, converts and resizes frames of a few megabytes each, and frees them a chunk
later. glibc's allocator serves such blocks from its heap once a large block has been freed
(its mmap threshold adapts upwards), and small long-lived objects made in between pin the heap
so it is not trimmed: resident memory then grows by tens of kilobytes per frame although
nothing is kept (measured: +500 MB over 1,600 frames of 240 x 320 in the CoTracker online
loop, flat with a trim per chunk). Trimming once per chunk costs well under a millisecond.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any


@functools.cache
def _malloc_trim() -> Any:  # the C function, or None
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> None:
    """Return the heap's free memory to the OS where the C library allows it (glibc), else
    nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
