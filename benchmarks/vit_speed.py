"""Inference speed of our ViT against timm's, on the same weights, in one process.

    python benchmarks/vit_speed.py                       # ViT-B/16, batch 1 and 8, fp32 and bf16
    python benchmarks/vit_speed.py --model vit_small_patch16_224 --repeats 5   # a quick run
    python benchmarks/vit_speed.py --no-trim             # compute alone (see disable_heap_trim)
    python benchmarks/vit_speed.py --json                # one JSON document on stdout

Both models hold the same seeded random weights (timm's, perturbed so every weight matters,
loaded into ours with ``strict=True``) and run in eval mode under ``torch.inference_mode``,
in fp32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)``. After a warm-up of each,
the timed forwards alternate ours, timm, ours, timm, ... so machine noise (another process,
frequency changes) falls on both alike. For each case the script prints the median ms of
each, the ratio ours/timm (< 1: ours is faster), the median of the per-pair ratios, the
largest absolute logit difference (fp32 must be < 1e-4), the minor page faults per forward
(memory the allocator had to take back from the OS) and how many cores other processes kept
busy meanwhile (above 0.2 the case is flagged as noisy: on 2 cores, one busy core can make
every forward of both models several times slower).

Exit codes: 0 when every case ran and fp32 logits agree; 1 on an error or an fp32 logit
difference >= 1e-4 (a wrong model's timing means nothing); 2 for --no-trim without glibc.
Ratios never change the exit code: this is a benchmark, not a test. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import timm
import torch
from machine import OtherLoad, cpu_flags, cpu_model
from torch import Tensor, nn

from attnvision.vit import create_model

MODELS = ("vit_base_patch16_224", "vit_small_patch16_224")
DTYPES = ("fp32", "bf16")
FP32_TOLERANCE = 1e-4
MIN_REPEATS = 5  # alternated pairs a case runs even past its time limit
NOISY_LOAD = 0.2  # cores used by other processes above which a case is flagged


@dataclass
class CaseResult:
    batch: int
    dtype: str
    repeats: int  # alternated pairs actually run
    ours_ms: float  # median
    timm_ms: float  # median
    ratio: float  # ours_ms / timm_ms, the headline figure
    paired_ratio: float  # median over the runs of ours_i / timm_i (each pair ran back to back)
    ours_ms_iqr: tuple[float, float]  # 25th and 75th percentiles
    timm_ms_iqr: tuple[float, float]
    max_abs_logit_diff: float
    ours_page_faults: float  # median minor page faults per forward (pages taken anew)
    timm_page_faults: float
    other_load: float | None  # CPU cores other processes used meanwhile (None: not on Linux)


def disable_heap_trim() -> bool:
    """glibc only: keep freed memory in the heap instead of handing it back to the OS.

    By default glibc returns the top of the heap to the OS once more than a threshold is free
    there, and the next allocation takes fresh pages, one minor page fault each. At batch 8 a
    ViT-B block frees ~40 MB at its end, so a forward can pay ~10^5 faults (~100 ms) or none,
    depending on where earlier allocations happened to land: a per-process regime that can
    favour either model by several percent. Fixed thresholds (no trimming, no mmap below
    32 MB) take that noise out and leave the models' own compute. False where unsupported.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_trim_threshold, 1 << 30)) and bool(mallopt(m_mmap_threshold, 32 << 20))


def machine_info() -> dict[str, Any]:
    flags = cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    try:  # oneDNN's own answer; a private helper, so tolerate its absence
        onednn_bf16: bool | None = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn_bf16 = None
    return {
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "bf16_cpu_flags": native,  # avx512_bf16: bf16 dot products; amx_bf16: bf16 tiles
        "bf16_native": bool(native),
        "onednn_bf16": onednn_bf16,
    }


def machine_line(info: dict[str, Any]) -> str:
    flags = ", ".join(info["bf16_cpu_flags"]) or "none"
    native = "yes" if info["bf16_native"] else "no"
    return (f"machine: {info['cpu']} | torch {info['torch']} | timm {info['timm']} | "
            f"{info['threads']} threads | allocator {info['allocator']} | bf16 native: {native} "
            f"(cpu flags: {flags}; mkldnn {info['mkldnn']}, oneDNN bf16 {info['onednn_bf16']})")


def build_models(name: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """timm's model with seeded random weights, and ours holding the very same weights."""
    torch.manual_seed(seed)
    reference = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # break timm's symmetric init (ones, zeros) so every weight matters
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ours = create_model(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


@contextmanager
def precision(dtype: str) -> Iterator[None]:
    if dtype == "bf16":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


@dataclass
class Run:
    ms: float
    page_faults: int  # minor faults: fresh pages the allocator had to get from the OS


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_forward(model: nn.Module, x: Tensor, dtype: str) -> tuple[Run, Tensor]:
    """One forward under inference mode (and autocast for bf16): its timing and logits."""
    with torch.inference_mode(), precision(dtype):
        faults = minor_faults()
        start = time.perf_counter()
        logits = model(x)
        elapsed = time.perf_counter() - start
        faults = minor_faults() - faults
    return Run(elapsed * 1e3, faults), logits


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def run_case(ours: nn.Module, reference: nn.Module, batch: int, dtype: str, repeats: int,
             warmup: int, img_size: int, seed: int, max_seconds: float) -> CaseResult:
    """``repeats`` alternated pairs, or fewer (at least MIN_REPEATS) past ``max_seconds``."""
    x = torch.randn(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(seed))
    for _ in range(warmup):
        timed_forward(ours, x, dtype)
        timed_forward(reference, x, dtype)
    ours_runs: list[Run] = []
    timm_runs: list[Run] = []
    diff = 0.0
    load = OtherLoad()
    load.start()
    started = time.monotonic()
    for i in range(repeats):  # A B A B ...: noise lands on both models alike
        if i >= MIN_REPEATS and time.monotonic() - started > max_seconds:
            print(f"  stopping after {i} runs: over --max-seconds-per-case {max_seconds:g}",
                  file=sys.stderr, flush=True)
            break
        run, y_ours = timed_forward(ours, x, dtype)
        ours_runs.append(run)
        run, y_timm = timed_forward(reference, x, dtype)
        timm_runs.append(run)
        diff = max(diff, (y_ours.float() - y_timm.float()).abs().max().item())
    other_load = load.stop()
    ours_ms, timm_ms = [r.ms for r in ours_runs], [r.ms for r in timm_runs]
    m_ours, m_timm = statistics.median(ours_ms), statistics.median(timm_ms)
    pair_ratios = [a / b for a, b in zip(ours_ms, timm_ms, strict=True)]
    return CaseResult(batch=batch, dtype=dtype, repeats=len(ours_ms), ours_ms=m_ours,
                      timm_ms=m_timm, ratio=m_ours / m_timm,
                      paired_ratio=statistics.median(pair_ratios),
                      ours_ms_iqr=quartiles(ours_ms), timm_ms_iqr=quartiles(timm_ms),
                      max_abs_logit_diff=diff,
                      ours_page_faults=statistics.median(r.page_faults for r in ours_runs),
                      timm_page_faults=statistics.median(r.page_faults for r in timm_runs),
                      other_load=other_load)


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats of a JSON-able structure rounded to ``digits`` significant figures."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


def format_table(results: list[CaseResult]) -> str:
    """A fixed-width table, one line per case."""
    columns = ["batch", "dtype", "runs", "ours ms", "timm ms", "ours/timm", "paired",
               "max|dlogit|", "ours p25-p75", "timm p25-p75", "faults ours/timm",
               "other load"]
    rows = [[str(r.batch), r.dtype, str(r.repeats), f"{r.ours_ms:.1f}", f"{r.timm_ms:.1f}",
             f"{r.ratio:.3f}", f"{r.paired_ratio:.3f}", f"{r.max_abs_logit_diff:.2e}",
             f"{r.ours_ms_iqr[0]:.1f}-{r.ours_ms_iqr[1]:.1f}",
             f"{r.timm_ms_iqr[0]:.1f}-{r.timm_ms_iqr[1]:.1f}",
             f"{r.ours_page_faults:.0f}/{r.timm_page_faults:.0f}",
             "n/a" if r.other_load is None else f"{r.other_load:.2f} cores"]
            for r in results]
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
                     for line in [columns, *rows])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODELS[0], choices=MODELS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], metavar="B")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--repeats", type=int, default=25,
                        help="timed forwards of each model per case (default 25)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed forwards of each model per case (default 2)")
    parser.add_argument("--max-seconds-per-case", type=float, default=150.0, metavar="S",
                        help="stop a case's alternation after S seconds (at least "
                        f"{MIN_REPEATS} runs each), so a loaded machine does not make the "
                        "run endless (default 150)")
    parser.add_argument("--no-trim", action="store_true",
                        help="glibc: never give freed heap memory back to the OS, so neither "
                        "model pays page faults to regrow it (compute alone; default: the "
                        "allocator as users have it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of the table")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or min(args.batches) < 1:
        parser.error("--repeats and --batches must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.no_trim and not disable_heap_trim():
        print("error: --no-trim needs glibc's mallopt; run without it", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine_info()
    info["allocator"] = "glibc, no trim" if args.no_trim else "default"
    print(machine_line(info), file=sys.stderr if args.json else sys.stdout, flush=True)
    ours, reference = build_models(args.model, args.seed)
    img_size = ours.config.img_size
    results: list[CaseResult] = []
    for dtype in args.dtypes:
        for batch in args.batches:
            print(f"[{args.model}] batch {batch} {dtype}: {args.warmup} warm-up + "
                  f"{args.repeats} alternated runs of each model...", file=sys.stderr, flush=True)
            r = run_case(ours, reference, batch, dtype, args.repeats, args.warmup, img_size,
                         args.seed + 1, args.max_seconds_per_case)
            print(f"  ours {r.ours_ms:.1f} ms, timm {r.timm_ms:.1f} ms, ratio {r.ratio:.3f} "
                  f"(paired {r.paired_ratio:.3f}), max|dlogit| {r.max_abs_logit_diff:.2e}",
                  file=sys.stderr, flush=True)
            if r.other_load is not None and r.other_load > NOISY_LOAD:
                print(f"  warning: other processes kept {r.other_load:.2f} cores busy meanwhile; "
                      "these figures are noisy, rerun on a quiet machine", file=sys.stderr,
                      flush=True)
            results.append(r)
    bad = [r for r in results if r.dtype == "fp32" and not r.max_abs_logit_diff < FP32_TOLERANCE]
    if args.json:
        doc = {"machine": info, "model": args.model, "command": shlex.join(["python", *sys.argv]),
               "repeats": args.repeats, "warmup": args.warmup, "fp32_tolerance": FP32_TOLERANCE,
               "fp32_logits_match": not bad, "cases": [rounded(asdict(r)) for r in results]}
        print(json.dumps(doc, indent=2))
    else:
        print(f"model: {args.model}; runs = alternated timed forwards of each model; ms are "
              "medians; paired = median of the per-run ratios ours/timm")
        print(format_table(results))
    for r in bad:
        print(f"error: fp32 logits differ by {r.max_abs_logit_diff:.2e} (>= {FP32_TOLERANCE}) "
              f"at batch {r.batch}: ours and timm do not compute the same model",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
