"""SAM speed: our image encoder and predictor against the official ones, same weights.

    python benchmarks/sam_speed.py                          # vit_b at 1024 on the CPU, fp32 + bf16
    python benchmarks/sam_speed.py --small --repeats 2      # a reduced encoder: a smoke run
    python benchmarks/sam_speed.py --device cuda --precisions fp32 bf16 fp16
    python benchmarks/sam_speed.py --device cuda --precisions bf16 --compile   # torch.compile
    python benchmarks/sam_speed.py --json                   # one JSON document on stdout

Both models hold the same seeded random weights (official_sam.py). The image is the built-in
astronaut, resized and padded by our predictor's preprocessing; both encoders get that very
tensor. For each precision (fp32, or bf16 / fp16 under ``torch.autocast`` for both models),
after a warm-up, encodings alternate ours, official, ours, ... under ``torch.inference_mode``
and the script prints medians, the ratio ours / official and the median of the per-pair
ratios, with how many cores other processes kept busy meanwhile (noise).

Also, in the same run:
- correctness: fp32 embeddings against the official ones (relative error of the largest
  value), and the masks of our bf16 (fp16) model against our fp32 masks for a few prompts;
- ``predict`` with one point after ``set_image``: decoder and postprocessing to the original
  size, multimask (the official default) and single mask, ours / official;
- peak memory of one encoding: on the CPU, each model encodes once in a fresh child process
  and reports how far its peak RSS rose above the RSS before the call (Linux: VmHWM, reset
  after loading); on a GPU, ``max_memory_allocated``;
- the encoder's arithmetic (torch's FLOP counter on our encoder) and the GFLOP/s it reaches,
  against the GFLOP/s of one large matrix product on this machine.

Exit codes: 0 when the correctness checks hold, 1 otherwise (a wrong model's timing means
nothing). Ratios never change the exit code: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flops import counted_flops, matmul_gflops, sync
from machine import OtherLoad, cpu_flags, cpu_model, peak_during
from official_sam import FULL, SMALL, both_sams, official_sam
from segment_anything import SamPredictor as RefPredictor

from attnvision.data.images import sample_image
from attnvision.sam import SamPredictor, build_sam

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EMBEDDING_TOLERANCE = 1e-4  # fp32, relative to the largest value
MASK_AGREEMENT = 0.99  # low precision against fp32, share of identical pixels
# Prompts as fractions of the image's width and height.
PROMPTS = [{"point_coords": [[0.5, 0.4]], "point_labels": [1]},
           {"point_coords": [[0.3, 0.6], [0.8, 0.2]], "point_labels": [1, 0]},
           {"box": [0.2, 0.12, 0.82, 0.94]}]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3, out


def alternate(ours: Callable[[], Any], ref: Callable[[], Any], repeats: int, warmup: int,
              device: torch.device) -> dict[str, Any]:
    """Median ms of each, ratio, paired ratio, other load; A B A B ... after a warm-up."""
    for _ in range(warmup):
        ours()
        ref()
    t_ours, t_ref = [], []
    load = OtherLoad()
    load.start()
    for _ in range(repeats):
        t_ours.append(timed(ours, device)[0])
        t_ref.append(timed(ref, device)[0])
    other = load.stop()
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    return {"ours_ms": round(m_ours, 2), "official_ms": round(m_ref, 2),
            "ratio": round(m_ours / m_ref, 3),
            "paired_ratio": round(statistics.median(a / b for a, b in zip(t_ours, t_ref,
                                                                           strict=True)), 3),
            "runs": repeats, "other_load": None if other is None else round(other, 2)}


def memory_child(which: str, weights: str, small: bool) -> None:
    """In a fresh process: build one model, encode once, print the rise of the peak RSS."""
    encoder = SMALL if small else FULL
    if which == "ours":
        model = build_sam("vit_b", checkpoint=weights, **encoder).image_encoder
    else:
        model = official_sam(encoder).image_encoder
        model.load_state_dict({k[len("image_encoder."):]: v for k, v in
                               torch.load(weights, weights_only=True).items()
                               if k.startswith("image_encoder.")})
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():  # the peak reset first: loading the weights does not count
        _, mem = peak_during(lambda: model(x))
    print(json.dumps({"peak_rise_mb": mem["rise_mb"], "peak_mb": mem["peak_during_mb"]}))


def cpu_peak_memory(weights: Path, small: bool, threads: int) -> dict[str, Any]:
    result = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for which in ("ours", "official"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", which,
                              "--weights", str(weights)] + (["--small"] if small else []),
                             capture_output=True, text=True, check=True, env=env)
        result[which] = json.loads(out.stdout.strip().splitlines()[-1])
    result["ratio"] = round(result["ours"]["peak_rise_mb"] / result["official"]["peak_rise_mb"],
                            3)
    return result


def gpu_peak_memory(ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor,
                    precision: str, device: torch.device) -> dict[str, Any]:
    result = {}
    for name, model in (("ours", ours), ("official", ref)):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode(), autocast(precision, device):
            model(x)
        result[name] = {"peak_rise_mb": round((torch.cuda.max_memory_allocated() - base) / 2**20,
                                              1)}
    result["ratio"] = round(result["ours"]["peak_rise_mb"] / result["official"]["peak_rise_mb"],
                            3)
    return result


def rel_err(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def masks_for_prompts(predictor: SamPredictor) -> list[np.ndarray]:
    h, w = predictor.original_size
    scale = {"point_coords": np.array([w, h]), "box": np.array([w, h, w, h]),
             "point_labels": 1}
    return [predictor.predict(**{k: np.array(v) * scale[k] for k, v in p.items()})[0]
            for p in PROMPTS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true",
                        help="a 2-block, 192-wide encoder instead of vit_b's (smoke run)")
    parser.add_argument("--precisions", nargs="+", choices=list(DTYPES),
                        default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5, help="alternated encoder pairs")
    parser.add_argument("--predict-repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory children")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both image encoders (the compile is not timed)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--memory-child", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.weights, args.small)
        return 0
    device = torch.device(args.device)
    # fp32 means fp32: no TF32 on GPUs, where cuDNN would otherwise round convolutions to it.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if device.type == "cpu" and "fp16" in args.precisions:
        parser.error("fp16 autocast is for GPUs: use --precisions fp32 bf16 on the CPU")

    encoder = SMALL if args.small else FULL
    tmp = tempfile.TemporaryDirectory()
    ours_sam, ref_sam, weights = both_sams(encoder, Path(tmp.name))
    ours_sam.to(device)
    ref_sam.to(device)
    image = sample_image("astronaut")
    ours_pred, ref_pred = SamPredictor(ours_sam), RefPredictor(ref_sam)
    resized = ours_pred.transform.apply_image(image)
    x = ours_sam.preprocess(torch.as_tensor(resized, device=device).permute(2, 0, 1)[None]
                            .float())
    with torch.inference_mode():  # before any compile
        _, flops = counted_flops(lambda: ours_sam.image_encoder(x))
    if args.compile:
        ours_sam.image_encoder.compile()
        ref_sam.image_encoder.compile()
    info = {"cpu": cpu_model(), "device": str(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "encoder": "small" if args.small else "vit_b",
            "compiled": args.compile,
            "bf16_cpu_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    log(f"{info['encoder']} encoder on {info['cpu']} / {device}, {info['threads']} threads")
    report: dict[str, Any] = {"benchmark": "sam_speed", "machine": info, "encoder": {}}
    ok = True

    # The encoder, precision by precision; fp32 embeddings are the correctness reference.
    embeddings: dict[str, torch.Tensor] = {}
    for precision in args.precisions:
        log(f"encoder {precision}: {args.repeats} alternated runs")

        def run(model: torch.nn.Module, precision: str = precision) -> torch.Tensor:
            with torch.inference_mode(), autocast(precision, device):
                return model(x)

        case = alternate(lambda: run(ours_sam.image_encoder),
                         lambda: run(ref_sam.image_encoder), args.repeats, 1, device)
        ours_emb, ref_emb = run(ours_sam.image_encoder), run(ref_sam.image_encoder)
        embeddings[precision] = ours_emb
        case["embedding_rel_err_vs_official"] = float(f"{rel_err(ours_emb, ref_emb):.2e}")
        if precision == "fp32" and case["embedding_rel_err_vs_official"] >= EMBEDDING_TOLERANCE:
            ok = False
        report["encoder"][precision] = case
        log(f"  ours {case['ours_ms']:.0f} ms, official {case['official_ms']:.0f} ms, "
            f"ratio {case['ratio']:.3f} (paired {case['paired_ratio']:.3f}), "
            f"other load {case['other_load']}")

    # Masks: each low precision against fp32, on our model, for a few prompts.
    if "fp32" in embeddings:
        size = image.shape[:2]
        ours_pred.set_image_embedding(embeddings["fp32"], size)
        reference = masks_for_prompts(ours_pred)
        for precision in (p for p in args.precisions if p != "fp32"):
            ours_sam.precision = precision
            ours_pred.set_image_embedding(embeddings[precision], size)
            got = masks_for_prompts(ours_pred)
            agree = float(np.mean([np.mean(a == b) for a, b in zip(got, reference,
                                                                     strict=True)]))
            report["encoder"][precision]["mask_agreement_vs_fp32"] = round(agree, 4)
            ok &= agree >= MASK_AGREEMENT
        ours_sam.precision = "fp32"

    # FLOPs and the GFLOP/s reached, against one large matrix product.
    report["flops"] = {"encoder_gflop": round(flops / 1e9, 1)}
    for precision in args.precisions:
        ms = report["encoder"][precision]["ours_ms"]
        report["flops"][f"{precision}_encoder_gflops"] = round(flops / (ms * 1e-3) / 1e9, 1)
        report["flops"][f"{precision}_matmul_gflops"] = round(
            matmul_gflops(((4096, 768, 3072),), DTYPES[precision], device), 1)

    # predict: one point after set_image (decoder + postprocessing to the original size).
    if "fp32" in embeddings:
        ours_pred.set_image_embedding(embeddings["fp32"], image.shape[:2])
        ref_pred.set_image(image)  # the official predictor's own preprocessing and features
        ref_pred.features = embeddings["fp32"]  # the same embedding in both
        point = np.array([[0.5 * image.shape[1], 0.4 * image.shape[0]]])
        label = np.array([1])
        report["predict"] = {}
        for multimask in (True, False):
            log(f"predict, multimask={multimask}: {args.predict_repeats} alternated calls")
            case = alternate(
                lambda m=multimask: ours_pred.predict(point, label, multimask_output=m),
                lambda m=multimask: ref_pred.predict(point, label, multimask_output=m),
                args.predict_repeats, 3, device)
            report["predict"]["multimask" if multimask else "single"] = case
            log(f"  ours {case['ours_ms']:.1f} ms, official {case['official_ms']:.1f} ms, "
                f"ratio {case['ratio']:.3f}")

    if not args.no_memory:
        log("peak memory of one encoding")
        if device.type == "cuda":
            report["memory"] = gpu_peak_memory(ours_sam.image_encoder, ref_sam.image_encoder,
                                               x, args.precisions[0], device)
        else:
            report["memory"] = cpu_peak_memory(weights, args.small, torch.get_num_threads())
    tmp.cleanup()
    report["correct"] = ok

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"machine: {info['cpu']} | {device} | {info['threads']} threads | torch "
              f"{info['torch']} | encoder {info['encoder']}")
        print(f"{'case':<22} {'ours ms':>9} {'official ms':>12} {'ratio':>6} {'paired':>7} "
              f"{'other load':>10}")
        rows = [(f"encoder {p}", c) for p, c in report["encoder"].items()]
        rows += [(f"predict {k}", c) for k, c in report.get("predict", {}).items()]
        for name, c in rows:
            print(f"{name:<22} {c['ours_ms']:>9.1f} {c['official_ms']:>12.1f} {c['ratio']:>6.3f}"
                  f" {c['paired_ratio']:>7.3f} {c['other_load']!s:>10}")
        for p, c in report["encoder"].items():
            extra = f", masks vs fp32 {c['mask_agreement_vs_fp32']:.2%}" if (
                "mask_agreement_vs_fp32" in c) else ""
            print(f"{p}: embedding rel. error vs official {c['embedding_rel_err_vs_official']}"
                  f"{extra}")
        print("flops: " + ", ".join(f"{k} {v}" for k, v in report["flops"].items()))
        if "memory" in report:
            m = report["memory"]
            print(f"peak memory rise of one encoding: ours {m['ours']['peak_rise_mb']} MB, "
                  f"official {m['official']['peak_rise_mb']} MB, ratio {m['ratio']}")
        print("correctness checks: " + ("pass" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
