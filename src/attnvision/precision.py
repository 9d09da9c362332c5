"""Inference precision: float32, or bf16 / fp16 through ``torch.autocast``.

Autocast keeps the weights in float32 and runs matrix products and convolutions in the low
precision, norms and softmax in float32: no second copy of the model, and any checkpoint
works. bf16 pays off on GPUs and on CPUs with AVX-512 BF16 or AMX (about 4x the float32 matrix
throughput); elsewhere PyTorch emulates it, slower than float32. fp16 is for GPUs only.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from pathlib import Path

import torch

from attnvision.errors import UserError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16,
                                      "fp16": torch.float16}


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_if_bf16_emulated(who: str, option: str, fix: str) -> None:
    """Say on stderr that bf16 is emulated on this CPU (no AVX-512 BF16 or AMX), so
    ``option`` makes ``who`` slower than float32 here, and ``fix``."""
    if not cpu_has_fast_bf16():
        print(f"{who}: this CPU has no native bf16 (AVX-512 BF16 or AMX), so {option} is "
              f"emulated and slower than float32 here: {fix}", file=sys.stderr)


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision`` if it is one and ``device`` (when given) can run it, else a UserError
    naming what can."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose one of "
                        f"{', '.join(PRECISIONS)}")
    if precision == "fp16" and device is not None and torch.device(device).type == "cpu":
        raise UserError("fp16 runs on GPUs only: use --precision bf16 (or fp32) on a CPU")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision])
