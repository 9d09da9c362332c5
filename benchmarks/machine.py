"""What the benchmark scripts report about the machine and the noise on it (Linux /proc)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


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
