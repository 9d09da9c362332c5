"""How much arithmetic a piece of work does, and how fast this machine does arithmetic.

Together they give a floor under any implementation's time: work of F floating-point operations
cannot take less than F / P seconds on a machine whose best matrix product runs at P FLOP/s. A
speed target "ours / official <= r" is out of reach for our arithmetic when F_ours / P is already
more than r times the official's measured time (``floor_ratio``).

The count is ``torch.utils.flop_counter``'s: matrix products, convolutions and attention (run
through PyTorch's math kernel while counting, whose products the counter sees; it has no formula
for the fused CPU kernel). Element-wise work (softmax, norms, activations, copies) is not
counted, so the floor is a lower bound: the real one is higher.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

T = TypeVar("T")

# Large products of the shapes these models run (tokens x width x width): the best of them is
# the pace a model made of products can at most keep on this machine.
PEAK_SHAPES = ((4096, 768, 3072), (4096, 256, 4096), (4096, 1024, 4096))


def counted_flops(work: Callable[[], T]) -> tuple[T, int]:
    """``work()``'s result and the floating-point operations (2 per multiply-add) it did."""
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        result = work()
    return result, counter.get_total_flops()


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work, so that a clock read after it times the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES,
                  dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                  repeats: int = 6) -> float:
    """GFLOP/s of the fastest of ``shapes`` ((m, k, n): an (m, k) @ (k, n) product), each
    the best of ``repeats`` runs at torch's current thread count."""
    device = device or torch.device("cpu")
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def floor_ratio(flops: int, gflops: float, reference_ms: float) -> float:
    """The least ours / reference time ratio ``flops`` allow at ``gflops`` GFLOP/s."""
    return flops / (gflops * 1e9) * 1e3 / reference_ms
