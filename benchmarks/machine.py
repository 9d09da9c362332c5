"""What the benchmark scripts report about the machine, the noise on it and the memory a
piece of work takes (Linux /proc)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def busy_cpu_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy so far (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    guest = sum(ticks[8:10])  # already counted in user and nice
    return (sum(ticks) - idle - guest) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes kept busy between start() and stop().

    On a shared machine this is the noise behind the figures: with 2 cores and another
    process using 1, every run of both models may take up to twice as long.
    """

    def start(self) -> None:
        self._busy, self._own, self._wall = busy_cpu_seconds(), self._own_cpu(), time.monotonic()

    def stop(self) -> float | None:
        busy = busy_cpu_seconds()
        if busy is None or self._busy is None:
            return None
        wall = time.monotonic() - self._wall
        other = (busy - self._busy) - (self._own_cpu() - self._own)
        return max(0.0, other / wall) if wall > 0 else None

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# -- memory -----------------------------------------------------------------------------------
# RSS, not tracemalloc (which does not see torch's tensors) nor getrusage's ru_maxrss (which a
# child starts at its parent's peak). torch's CPU allocator is glibc malloc, whose allocations
# above 32 MB are mmapped and unmapped on free, so RSS follows the memory in use. Each
# measurement runs in its own child process, so one model's leftovers do not count for the next.

def memory_mb() -> dict[str, float]:
    """This process's RSS and peak RSS (VmRSS, VmHWM), MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields["VmRSS"], "peak_mb": fields["VmHWM"]}


def reset_peak() -> bool:
    """The peak RSS restarts from the RSS now ("5" to clear_refs); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_during(work: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """``work()``'s result and its memory: ``rss_before_mb`` (the RSS just before it),
    ``peak_before_mb`` (the peak since the last reset, e.g. building the model),
    ``peak_during_mb`` and ``rise_mb``, how far the peak rose above the RSS before the call: the
    memory the work itself took at its highest. The figures are None where the peak cannot be
    reset (not Linux)."""
    before = memory_mb()
    if not reset_peak():
        return work(), dict.fromkeys(("rss_before_mb", "peak_before_mb", "peak_during_mb",
                                      "rise_mb"))
    result = work()
    after = memory_mb()
    return result, {"rss_before_mb": before["rss_mb"], "peak_before_mb": before["peak_mb"],
                    "peak_during_mb": after["peak_mb"],
                    "rise_mb": round(after["peak_mb"] - before["rss_mb"], 1)}
