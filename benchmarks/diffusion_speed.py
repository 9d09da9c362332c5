"""Latent diffusion speed and memory: our DiT and KL autoencoder against diffusers', same weights.

    python benchmarks/diffusion_speed.py                  # everything, ~10 min on 1 thread
    python benchmarks/diffusion_speed.py --skip-xl        # without DiT-XL/2 images, ~5 min
    python benchmarks/diffusion_speed.py --parts dit vae  # the two ratios alone, ~2 min
    python benchmarks/diffusion_speed.py --json           # one JSON document on stdout

diffusers (0.42.1 when written) is this project's test-only dependency; both sides run in
this process on identical seeded random weights: diffusers' model is built, randomised,
written with ``save_pretrained`` to a temporary folder and read back by our loaders
(``load_dit``, ``load_vae``), so the comparison also goes through the conversion code.

- ``dit``: one guided DiT-B/2 step at 256 px: latents (2, 4, 32, 32) (the conditional and
  the null-label half of classifier-free guidance), one scalar t. diffusers'
  ``DiTTransformer2DModel(num_attention_heads=12, attention_head_dim=64, num_layers=12,
  in_channels=4, out_channels=8, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)``,
  every weight drawn from N(0, 0.02²) (its init zeroes the adaLN), the per-block copies of
  the time/class embedder made equal (a DiT has one).
- ``vae``: one decode at 256 px, latent (1, 4, 32, 32), of diffusers' ``AutoencoderKL`` in
  the SD-VAE shape (widths 128, 256, 512, 512, 2 blocks a level, 32 groups, 4 channels), its
  init plus N(0, 0.05²) on every weight.
- ``xl`` (ours alone: diffusers' DiTPipeline cannot take our models, and its own would need
  the same random weights converted the other way): seconds per image of our
  ``DiTPipeline`` with ``DIT_CONFIGS["DiT-XL/2"]`` (675 M parameters, random, its adaLN
  drawn from N(0, 0.02²) so the blocks are not the identity) and the SD VAE of ``vae``, 256
  px, one image, 25 ``"dpm++"`` steps, guidance 4, denoising and decode timed apart.
- ``memory``: one 512-px decode (latent (1, 4, 64, 64)) per fresh child process, the median
  of ``--memory-runs`` processes: ours whole, ours with ``tiled_decode`` (default 32-cell
  tiles, 8 overlapping), diffusers', in fp32 and in bf16.

Time: fp32, then bf16 (both models cast with ``.to(torch.bfloat16)``, inputs too: what
``DiTPipeline.to`` and diffusers' ``torch_dtype`` do; ``--bf16 autocast`` runs the fp32
models under ``torch.autocast("cpu", torch.bfloat16)`` instead). Each case: one warm-up of
each side (the outputs compared), then ``--repeats`` alternated pairs ours, diffusers, ...;
reported: the median seconds of each, ``ratio`` (median / median) and ``paired`` (median of
the per-pair ratios: the figure to read on a shared machine), with the GFLOP of one call
(``torch.utils.flop_counter`` on ours: matrix products, convolutions, attention) and the
GFLOP/s each side reached, and ``other_load``, the cores other processes kept busy.

Memory: as ``cotracker_speed.py``: each child builds its model, reads every weight once (our
loader leaves them in the mmapped file until first use), resets the peak RSS
(``/proc/self/clear_refs`` "5" restarts VmHWM from the RSS now), decodes once under
``torch.no_grad``, and reports ``work_peak_mb``, how far the peak rose above the RSS of the
built model (``peak_mb``: VmHWM since just after ``import torch``). torch's CPU allocator is
glibc malloc: allocations above its mmap threshold are mmapped and unmapped on free, smaller
ones come from the heap, which keeps pages it has used. The threshold moves (up to 32 MiB)
with the sizes freed before, so the same decode's peak differs from process to process (by
up to 100 MB for ours, a bimodal spread; with ``MALLOC_MMAP_THRESHOLD_`` fixed it does not):
hence the median of several processes. The children save their images; the parent compares
them.

Exit codes: 0, or 1 when an fp32 output differs from diffusers' by more than 1e-3 (max
abs, DiT noise prediction or decoded image in -1..1), a bf16 one by more than 5 % of the
output's largest magnitude, or our whole 512-px decode from diffusers' by more than 1e-3:
a wrong model's timing means nothing. Ratios never change the exit code. Progress goes to
stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flops import counted_flops
from machine import OtherLoad, cpu_flags, cpu_model, peak_during, reset_peak

FP32_TOL = 1e-3
BF16_REL_TOL = 0.05  # of the output's largest magnitude
PARTS = ("dit", "vae", "xl", "memory")
MEMORY_CASES = ("ours", "ours_tiled", "diffusers")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def quiet_diffusers() -> Any:
    import diffusers
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()  # "modules that should be kept in float32: []" on every cast
    return diffusers


# -- the models, the same weights on both sides ------------------------------------------

def diffusers_dit(seed: int = 0) -> torch.nn.Module:
    diffusers = quiet_diffusers()
    torch.manual_seed(seed)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=12, attention_head_dim=64, num_layers=12, in_channels=4,
        out_channels=8, sample_size=32, patch_size=2, num_embeds_ada_norm=1000).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        # diffusers keeps a copy of the time and class embedder per block; a DiT has one.
        shared = model.transformer_blocks[0].norm1.emb.state_dict()
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(shared)
    return model


def diffusers_vae(seed: int = 0) -> torch.nn.Module:
    diffusers = quiet_diffusers()
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        norm_num_groups=32, sample_size=256).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def write_models(folder: Path, parts: list[str]) -> dict[str, Path]:
    paths = {}
    if "dit" in parts:
        paths["dit"] = folder / "dit"
        diffusers_dit().save_pretrained(paths["dit"])
    if {"vae", "xl", "memory"} & set(parts):
        paths["vae"] = folder / "vae"
        diffusers_vae().save_pretrained(paths["vae"])
    return paths


def load_diffusers(kind: str, path: Path) -> torch.nn.Module:
    diffusers = quiet_diffusers()
    cls = diffusers.DiTTransformer2DModel if kind == "dit" else diffusers.AutoencoderKL
    return cls.from_pretrained(path).eval()


def load_ours(kind: str, path: Path) -> torch.nn.Module:
    if kind == "dit":
        from attnvision.diffusion.dit_checkpoints import load_dit

        return load_dit(path)
    from attnvision.diffusion.vae_checkpoints import load_vae

    return load_vae(path)


# -- time, in this process ----------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def gflop(fn: Callable[[], Any]) -> float:
    # Attention through the math kernel: the counter has no formula for the fused CPU one.
    return counted_flops(fn)[1] / 1e9


def agreement(ours: torch.Tensor, ref: torch.Tensor, dtype: str) -> dict[str, Any]:
    diff = (ours.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    ok = diff <= FP32_TOL if dtype == "fp32" else diff <= BF16_REL_TOL * scale
    return {"max_abs_diff": float(f"{diff:.3g}"), "output_max_abs": round(scale, 3), "ok": ok}


def calls(kind: str, ours: torch.nn.Module, ref: torch.nn.Module, dtype: torch.dtype
          ) -> tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """One call of each side on the same inputs: a guided DiT step, or a VAE decode."""
    gen = torch.Generator().manual_seed(2)
    if kind == "dit":
        x = torch.randn(2, 4, 32, 32, generator=gen).to(dtype)
        t, y = torch.tensor(500.0), torch.tensor([207, 1000])  # 1000: the null class
        return (lambda: ours(x, t, y),
                lambda: ref(x, timestep=t.expand(2), class_labels=y).sample)
    z = torch.randn(1, 4, 32, 32, generator=gen).to(dtype)
    return lambda: ours.decode(z), lambda: ref.decode(z).sample


def time_case(kind: str, path: Path, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    ours, ref = load_ours(kind, path), load_diffusers(kind, path)
    autocast = dtype == "bf16" and args.bf16 == "autocast"
    cast = torch.bfloat16 if dtype == "bf16" and not autocast else torch.float32
    ours.to(cast)
    ref.to(cast)
    run_ours, run_ref = calls(kind, ours, ref, cast)
    mode = (torch.autocast("cpu", dtype=torch.bfloat16) if autocast
            else contextlib.nullcontext())
    load = OtherLoad()
    with torch.no_grad(), mode:
        load.start()
        log(f"{kind} {dtype}: warm-up of each")
        t_ours, out_ours = timed(run_ours)
        t_ref, out_ref = timed(run_ref)
        log(f"  ours {t_ours:.2f} s, diffusers {t_ref:.2f} s")
        agree = agreement(out_ours, out_ref, dtype)
        del out_ours, out_ref
        times: dict[str, list[float]] = {"ours": [], "diffusers": []}
        for r in range(args.repeats):
            for side, fn in (("ours", run_ours), ("diffusers", run_ref)):
                seconds, _ = timed(fn)
                times[side].append(seconds)
            log(f"{kind} {dtype}: pair {r + 1}/{args.repeats}: ours {times['ours'][-1]:.3f} s, "
                f"diffusers {times['diffusers'][-1]:.3f} s")
        other = load.stop()
        flops = gflop(run_ours)
    ours_s, ref_s = statistics.median(times["ours"]), statistics.median(times["diffusers"])
    return {"ours_s": round(ours_s, 4), "diffusers_s": round(ref_s, 4),
            "ratio": round(ours_s / ref_s, 3),
            "paired_ratio": round(statistics.median(
                a / b for a, b in zip(times["ours"], times["diffusers"], strict=True)), 3),
            "gflop": round(flops, 1), "ours_gflops": round(flops / ours_s, 1),
            "diffusers_gflops": round(flops / ref_s, 1),
            "ours_runs_s": [round(t, 3) for t in times["ours"]],
            "diffusers_runs_s": [round(t, 3) for t in times["diffusers"]],
            "bf16_mode": ("autocast" if autocast else "cast") if dtype == "bf16" else None,
            "other_load": None if other is None else round(other, 2), "agreement": agree}


# -- DiT-XL/2 images, ours alone -----------------------------------------------------------

def xl_pipeline(vae_path: Path) -> Any:
    from attnvision.diffusion.dit import DIT_CONFIGS, DiT
    from attnvision.diffusion.pipeline import META_SCHEDULE, DiTPipeline
    from attnvision.diffusion.samplers import make_scheduler

    torch.manual_seed(0)
    dit = DiT(DIT_CONFIGS["DiT-XL/2"])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # Meta's init zeroes these: every block would be the identity
        zeroed = [b.adaLN_modulation[1] for b in dit.blocks] + [
            dit.final_layer.adaLN_modulation[1], dit.final_layer.linear]
        for p in (q for layer in zeroed for q in layer.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return DiTPipeline(dit, load_ours("vae", vae_path), make_scheduler("dpm++", META_SCHEDULE))


def time_xl(vae_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    pipe = xl_pipeline(vae_path)
    result: dict[str, Any] = {"parameters_m": round(sum(
        p.numel() for p in pipe.transformer.parameters()) / 1e6, 1)}
    for dtype in ("fp32", "bf16"):
        if dtype == "bf16":
            pipe.to(torch.bfloat16)
        log(f"xl {dtype}: one image, {args.steps} dpm++ steps (a minute or more)")
        gen = torch.Generator().manual_seed(0)
        load = OtherLoad()
        load.start()
        denoise_s, latents = timed(lambda g=gen: pipe(
            [207], guidance_scale=4.0, num_inference_steps=args.steps, generator=g,
            output_type="latent").images)
        with torch.no_grad():
            decode_s, image = timed(lambda lat=latents: pipe.decode(lat))
        other = load.stop()
        log(f"  denoising {denoise_s:.1f} s, decode {decode_s:.1f} s")
        result[dtype] = {"s_per_image": round(denoise_s + decode_s, 1),
                         "denoise_s": round(denoise_s, 1),
                         "s_per_step": round(denoise_s / args.steps, 2),
                         "decode_s": round(decode_s, 2), "image_finite": bool(
                             torch.isfinite(image).all()),
                         "other_load": None if other is None else round(other, 2)}
    result["bf16_saves"] = round(1 - result["bf16"]["s_per_image"] /
                                 result["fp32"]["s_per_image"], 3)
    return result


# -- memory, one child process per configuration ------------------------------------------

def child(args: argparse.Namespace) -> dict[str, Any]:
    if not reset_peak():
        return {"peak_mb": None, "model_built_rss_mb": None, "work_peak_mb": None}
    case, dtype = args.child.split(":")
    cast = torch.bfloat16 if dtype == "bf16" else torch.float32
    z = torch.randn(1, 4, args.side, args.side, generator=torch.Generator().manual_seed(3))
    z = z.to(cast)
    model = (load_diffusers("vae", args.weights) if case == "diffusers"
             else load_ours("vae", args.weights)).to(cast)
    # Read every weight once: a loader may leave them in the mmapped file, whose pages the
    # decode would then bring in and the work peak would count (190 MB of the SD decoder's
    # fp32 weights). The built model's RSS then holds its weights on both sides.
    with torch.no_grad():
        for p in model.parameters():
            p.sum()
    decode = {"ours": lambda: model.decode(z, tiled=False),
              "ours_tiled": lambda: model.tiled_decode(z),
              "diffusers": lambda: model.decode(z).sample}[case]
    with torch.no_grad():
        (seconds, image), mem = peak_during(lambda: timed(decode))
    np.save(args.out, image.float().numpy())
    return {"peak_mb": max(mem["peak_before_mb"], mem["peak_during_mb"]),
            "model_built_rss_mb": mem["rss_before_mb"], "work_peak_mb": mem["rise_mb"],
            "cold_run_s": round(seconds, 2)}


def memory(vae_path: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"side_px": args.side * 8}
    for dtype in ("fp32", "bf16"):
        runs, images = {}, {}
        for case in MEMORY_CASES:
            out = folder / f"{case}_{dtype}.npy"
            cmd = [sys.executable, __file__, "--child", f"{case}:{dtype}", "--weights",
                   str(vae_path), "--out", str(out), "--side", str(args.side),
                   "--threads", str(args.threads)]
            log(f"memory {dtype}: {case}, {args.side * 8}-px decode in {args.memory_runs} "
                "child process(es)")
            tries = []
            for _ in range(args.memory_runs):
                done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
                tries.append(json.loads(done.stdout.strip().splitlines()[-1]))
                log(f"  work peak {tries[-1]['work_peak_mb']} MB, {tries[-1]['cold_run_s']} s")
            # The median run: glibc's heap keeps a varying share of freed memory (its mmap
            # threshold moves with what was freed before), so one process is not the figure.
            peaks = [t["work_peak_mb"] for t in tries]
            runs[case] = sorted(tries, key=lambda t: t["work_peak_mb"] or 0)[len(tries) // 2]
            runs[case]["work_peak_runs_mb"] = peaks
            images[case] = torch.from_numpy(np.load(out))
        ref = runs["diffusers"]["work_peak_mb"]
        for case in ("ours", "ours_tiled"):
            if ref:
                runs[case]["work_peak_ratio"] = round(runs[case]["work_peak_mb"] / ref, 3)
                runs[case]["peak_ratio"] = round(
                    runs[case]["peak_mb"] / runs["diffusers"]["peak_mb"], 3)
            runs[case]["agreement"] = agreement(images[case], images["diffusers"], dtype)
        # Tiling is close to, not equal to, a whole decode: its difference is reported only.
        runs["ours_tiled"]["agreement"]["ok"] = None
        result[dtype] = runs
    return result


# -- report -------------------------------------------------------------------------------

def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"machine: {m['cpu']} ({m['cores']} cores, avx512_bf16: {m['avx512_bf16']}) | "
          f"{m['threads']} torch thread(s) | torch {m['torch']} | diffusers {m['diffusers']}")
    r = report["results"]
    if "dit" in r or "vae" in r:
        print("\n| case | dtype | ours s | diffusers s | ratio (paired) | GFLOP | GFLOP/s ours / "
              "diffusers | max diff | other load |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for kind, name in (("dit", "guided DiT-B/2 step, 256 px"),
                           ("vae", "VAE decode, 256 px")):
            for dtype, c in r.get(kind, {}).items():
                print(f"| {name} | {dtype} | {c['ours_s']:.3f} | {c['diffusers_s']:.3f} | "
                      f"**{c['ratio']:.2f}** ({c['paired_ratio']:.2f}) | {c['gflop']:.0f} | "
                      f"{c['ours_gflops']:.0f} / {c['diffusers_gflops']:.0f} | "
                      f"{c['agreement']['max_abs_diff']:.2g} | {c['other_load']} |")
    if "xl" in r:
        x = r["xl"]
        print(f"\nDiT-XL/2 ({x['parameters_m']} M) + SD VAE, 256 px, {report['steps']} dpm++ "
              "steps, guidance 4, one image (ours alone):")
        for dtype in ("fp32", "bf16"):
            d = x[dtype]
            print(f"  {dtype}: {d['s_per_image']} s per image ({d['denoise_s']} s denoising, "
                  f"{d['s_per_step']} s a step; decode {d['decode_s']} s)")
        print(f"  bf16 saves {100 * x['bf16_saves']:.0f} %")
    if "memory" in r:
        mem = r["memory"]
        print(f"\n{mem['side_px']}-px decode, the median of child processes (all runs):")
        print("| dtype | case | work peak MB (runs) | ratio to diffusers | peak RSS MB | s | "
              "max diff vs diffusers |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for dtype in ("fp32", "bf16"):
            for case in MEMORY_CASES:
                c = mem[dtype][case]
                ratio = c.get("work_peak_ratio")
                diff = c.get("agreement", {}).get("max_abs_diff")
                every = ", ".join(str(v) for v in c["work_peak_runs_mb"])
                print(f"| {dtype} | {case} | {c['work_peak_mb']} ({every}) | "
                      f"{'-' if ratio is None else f'**{ratio:.2f}**'} | {c['peak_mb']} | "
                      f"{c['cold_run_s']} | {'-' if diff is None else f'{diff:.2g}'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--skip-xl", action="store_true", help="no DiT-XL/2 images (~4 min)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated timed pairs")
    parser.add_argument("--steps", type=int, default=25, help="dpm++ steps of an XL image")
    parser.add_argument("--bf16", choices=["cast", "autocast"], default="cast",
                        help="bf16 as both models cast (default) or fp32 models under autocast")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as in RESULTS.md; 0: torch's own)")
    parser.add_argument("--side", type=int, default=64,
                        help="latent side of the memory decode (64: 512 px)")
    parser.add_argument("--memory-runs", type=int, default=3,
                        help="child processes per memory case; the median is reported")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if min(args.repeats, args.steps, args.memory_runs) < 1:
        parser.error("--repeats, --steps and --memory-runs must be at least 1")
    parts = [p for p in args.parts if not (p == "xl" and args.skip_xl)]
    diffusers = quiet_diffusers()
    report: dict[str, Any] = {
        "benchmark": "diffusion_speed",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "avx512_bf16": "avx512_bf16" in cpu_flags(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "diffusers": diffusers.__version__},
        "repeats": args.repeats, "steps": args.steps, "bf16": args.bf16,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": {}}
    results = report["results"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_models(Path(tmp), parts)
        for kind in ("dit", "vae"):
            if kind in parts:
                results[kind] = {dtype: time_case(kind, paths[kind], dtype, args)
                                 for dtype in ("fp32", "bf16")}
        if "xl" in parts:
            results["xl"] = time_xl(paths["vae"], args)
        if "memory" in parts:
            results["memory"] = memory(paths["vae"], Path(tmp), args)
    checks = [c["agreement"]["ok"] for kind in ("dit", "vae") for c in results.get(kind, {}
                                                                              ).values()]
    checks += [results["memory"][d]["ours"]["agreement"]["ok"]
               for d in ("fp32", "bf16") if "memory" in results]
    ok = all(checks)
    report["outputs_agree"] = ok
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not ok:
        log("outputs disagree with diffusers' (see 'agreement'): the timings mean nothing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
