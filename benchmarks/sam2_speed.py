"""SAM 2 speed: our video propagation, image encoding and clicks against the official ones.

    python benchmarks/sam2_speed.py                                  # tiny and base+, fp32 + bf16
    python benchmarks/sam2_speed.py --models sam2.1_hiera_tiny --precisions bf16
    python benchmarks/sam2_speed.py --size 256 --frames 6 --repeats 1   # a smoke run
    python benchmarks/sam2_speed.py --json                           # one JSON document on stdout

Both models hold the same seeded random weights (tests/reference/: the official video
predictor as the parity tests build it, ours loading its state dict), at ``--size`` px (1024,
SAM 2's own). For each model and precision (fp32, or bf16 under ``torch.autocast`` for both):

- propagation: one object clicked on frame 0 of a clip (the built-in cat sliding 6 px a
  frame, ``--frames`` frames), read by the official predictor from JPEGs and by ours from the
  same decoded pixels; the two ``propagate_in_video`` generators are stepped in turn, frame by
  frame (ours, official, ours, ...), and the figure is the median time per frame once the
  memory bank is full (frames 8 and later: 7 memories and the prompted frame);
- encoding: ``set_image`` of the image predictors on the same picture, alternated;
- a click: ``predict`` with one point on the encoded image (3 masks, the official default).

With ``--floor`` (fp32), the floor under our time: the arithmetic of one of our frames with
the memory bank full and of one of our encodings (``benchmarks/flops.py``: products,
convolutions and attention, counted in a separate pass of each side), this machine's best
matrix-product pace at the same thread count, and the least ours / official ratio that
arithmetic allows (``floor_ratio``: our FLOPs at that pace against the official's measured
time). Above a target, no arrangement of the same fp32 arithmetic meets it on this machine.

Correctness in the same run (fp32): every propagated frame's mask agrees with the official
one on at least 99.9 % of pixels. The official predictor gets the tests' two CPU patches: its
memory attention reads its bfloat16 memories in float32 (CPU matmuls refuse the mix off
autocast), and its hole filling a CPU connected-components function for its CUDA kernel.

Exit codes: 0 when the masks agree, 1 otherwise (a wrong model's timing means nothing).
Ratios never change the exit code: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flops import counted_flops, floor_ratio, matmul_gflops
from machine import OtherLoad, cpu_flags, cpu_model
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import sam2.utils.misc as official_misc
from reference.test_sam2_tracking import ours_like
from reference.test_sam2_video import cpu_components, official_video_predictor
from sam2.sam2_image_predictor import SAM2ImagePredictor as RefImagePredictor

from attnvision.sam2 import SAM2ImagePredictor, SAM2VideoPredictor

FULL_MEMORY_FROM = 8  # frames before this one still fill the memory bank
MASK_AGREEMENT = 0.999


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def autocast(precision: str) -> AbstractContextManager:
    return nullcontext() if precision == "fp32" else torch.autocast("cpu", dtype=torch.bfloat16)


def clip(frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the built-in cat, shifted right 6 px a frame (wrapping)."""
    cat = data.chelsea()  # scikit-image, offline
    return np.stack([np.roll(cat, 6 * t, axis=1) for t in range(frames)])


def summary(ours: list[float], ref: list[float]) -> dict[str, Any]:
    m_ours, m_ref = statistics.median(ours), statistics.median(ref)
    return {"ours_ms": round(m_ours, 1), "official_ms": round(m_ref, 1),
            "ratio": round(m_ours / m_ref, 3),
            "paired_ratio": round(statistics.median(a / b for a, b in zip(ours, ref,
                                                                           strict=True)), 3),
            "runs": len(ours)}


def timed_steps(steps: Iterator[Any]) -> Iterator[tuple[float, Any]]:
    """(ms, item) for each item of a generator, the time it took to produce it."""
    while True:
        start = time.perf_counter()
        try:
            item = next(steps)
        except StopIteration:
            return
        yield (time.perf_counter() - start) * 1e3, item


def propagation(ours: SAM2VideoPredictor, ref: Any, video: np.ndarray, folder: Path,
                click: list[float]) -> tuple[dict[str, Any], float]:
    """Per-frame propagation times, stepped in turn; and the worst mask agreement."""
    state, ref_state = ours.init_state(video), ref.init_state(str(folder))
    ours.add_new_points_or_box(state, 0, 1, points=[click], labels=[1])
    ref.add_new_points_or_box(ref_state, 0, 1, points=[click], labels=[1])
    t_ours, t_ref, worst = [], [], 1.0
    pairs = zip(timed_steps(iter(ours.propagate_in_video(state))),
                timed_steps(iter(ref.propagate_in_video(ref_state))), strict=True)
    for (ms_ours, (t, _, masks)), (ms_ref, (_, _, ref_masks)) in pairs:
        if t >= FULL_MEMORY_FROM:
            t_ours.append(ms_ours)
            t_ref.append(ms_ref)
        worst = min(worst, ((masks > 0) == (ref_masks > 0)).float().mean().item())
    return summary(t_ours, t_ref), worst


def frame_flops(predictor: Any, video: Any, click: list[float]) -> int:
    """FLOPs of frame ``FULL_MEMORY_FROM`` of a propagation from one click on frame 0 (the
    memory bank full), in a pass of its own: counting runs attention by the math kernel."""
    state = predictor.init_state(video)
    predictor.add_new_points_or_box(state, 0, 1, points=[click], labels=[1])
    steps = iter(predictor.propagate_in_video(state))
    for _ in range(FULL_MEMORY_FROM):
        next(steps)
    return counted_flops(lambda: next(steps))[1]


def floor(ours: SAM2VideoPredictor, ref: Any, ours_image: SAM2ImagePredictor, ref_image: Any,
          video: np.ndarray, folder: Path, click: list[float], image: np.ndarray,
          prop: dict[str, Any], encode: dict[str, Any]) -> dict[str, Any]:
    """The arithmetic of a frame and of an encoding, each side's pace, and the floor under
    our ratios at this machine's best product pace."""
    log("  floor: counting a frame's and an encoding's arithmetic, and the product pace")
    frame = {"ours": frame_flops(ours, video, click), "official": frame_flops(ref, str(folder),
                                                                              click)}
    encoding = {"ours": counted_flops(lambda: ours_image.set_image(image))[1],
                "official": counted_flops(lambda: ref_image.set_image(image))[1]}
    peak = matmul_gflops()
    result: dict[str, Any] = {"matmul_gflops": round(peak, 1)}
    for key, flops, times in (("propagation_per_frame", frame, prop), ("encoding", encoding,
                                                                       encode)):
        result[key] = {"ours_gflop": round(flops["ours"] / 1e9, 1),
                       "official_gflop": round(flops["official"] / 1e9, 1),
                       "ours_gflops": round(flops["ours"] / times["ours_ms"] / 1e6, 1),
                       "official_gflops": round(flops["official"] / times["official_ms"] / 1e6,
                                                1),
                       "floor_ratio": round(floor_ratio(flops["ours"], peak,
                                                        times["official_ms"]), 3)}
    return result


def alternate(ours: Callable[[], Any], ref: Callable[[], Any], repeats: int
              ) -> dict[str, Any]:
    ours(), ref()  # warm-up
    t_ours, t_ref = [], []
    for _ in range(repeats):
        for fn, times in ((ours, t_ours), (ref, t_ref)):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return summary(t_ours, t_ref)


def run_model(name: str, args: argparse.Namespace, folder: Path, video: np.ndarray
              ) -> dict[str, Any]:
    log(f"{name}: building both models at {args.size} px")
    ref = official_video_predictor(name, seed=0, size=args.size)
    model = ours_like(ref, name, args.size)
    ours = SAM2VideoPredictor(model)
    ours_image, ref_image = SAM2ImagePredictor(model), RefImagePredictor(ref)
    # The official image predictor's feature sizes are written for 1024 px.
    ref_image._bb_feat_sizes = [(args.size // s, args.size // s) for s in (4, 8, 16)]
    image = video[0]
    h, w = image.shape[:2]
    click = [0.45 * w, 0.55 * h]
    point = {"point_coords": np.array([click]), "point_labels": np.array([1])}
    result: dict[str, Any] = {}
    for precision in args.precisions:
        load = OtherLoad()
        load.start()
        with torch.inference_mode(), autocast(precision):
            log(f"{name} {precision}: propagation over {len(video)} frames")
            prop, agreement = propagation(ours, ref, video, folder, click)
            log(f"{name} {precision}: encoding, {args.repeats} alternated runs")
            encode = alternate(lambda: ours_image.set_image(image),
                               lambda: ref_image.set_image(image), args.repeats)
            log(f"{name} {precision}: a click, {args.predict_repeats} alternated runs")
            ours_image.set_image(image)
            ref_image.set_image(image)
            predict = alternate(lambda: ours_image.predict(**point),
                                lambda: ref_image.predict(**point), args.predict_repeats)
            bound = (floor(ours, ref, ours_image, ref_image, video, folder, click, image, prop,
                           encode) if args.floor and precision == "fp32" else None)
        other = load.stop()
        result[precision] = {"propagation_per_frame": prop, "encoding": encode,
                             "click": predict, "worst_mask_agreement": round(agreement, 6),
                             "other_load": None if other is None else round(other, 2)}
        if bound:
            result[precision]["floor"] = bound
            log(f"  floor at {bound['matmul_gflops']:.0f} GFLOP/s: propagation "
                f"{bound['propagation_per_frame']['floor_ratio']:.2f}, encoding "
                f"{bound['encoding']['floor_ratio']:.2f}")
        log(f"  propagation {prop['ours_ms']:.0f} / {prop['official_ms']:.0f} ms per frame "
            f"({prop['ratio']:.2f}); encoding {encode['ours_ms']:.0f} / "
            f"{encode['official_ms']:.0f} ms ({encode['ratio']:.2f}); click "
            f"{predict['ours_ms']:.1f} / {predict['official_ms']:.1f} ms; masks agree on "
            f"{agreement:.4%}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["sam2.1_hiera_tiny", "sam2.1_hiera_base_plus"])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        default=["fp32", "bf16"])
    parser.add_argument("--size", type=int, default=1024, help="image size of both models")
    parser.add_argument("--frames", type=int, default=12,
                        help=f"clip length; frames {FULL_MEMORY_FROM} and later are timed")
    parser.add_argument("--repeats", type=int, default=3, help="alternated encodings")
    parser.add_argument("--predict-repeats", type=int, default=20, help="alternated clicks")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--floor", action="store_true",
                        help="fp32: also count our arithmetic and give the least ratio it "
                             "allows at this machine's matrix-product pace")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    if args.frames <= FULL_MEMORY_FROM:
        parser.error(f"--frames must exceed {FULL_MEMORY_FROM}: earlier frames are not timed")
    if args.threads:
        torch.set_num_threads(args.threads)
    official_misc.get_connected_components = cpu_components
    video = clip(args.frames)
    results: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "bf16_flags": [f for f in cpu_flags()
                                                       if "bf16" in f or "amx" in f],
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "size": args.size, "frames": args.frames, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for t, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
        # What the official reads: the decoded JPEGs; ours gets the same pixels.
        video = np.stack([np.asarray(Image.open(folder / f"{t:05d}.jpg").convert("RGB"))
                          for t in range(args.frames)])
        for name in args.models:
            results["models"][name] = run_model(name, args, folder, video)
    ok = all(r["fp32"]["worst_mask_agreement"] >= MASK_AGREEMENT
             for r in results["models"].values() if "fp32" in r)
    results["masks_agree"] = ok
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"machine: {results['machine']}")
        print("| model | precision | propagation per frame (ours / official, ratio) | "
              "encoding | click |")
        print("| --- | --- | --- | --- | --- |")
        for name, per in results["models"].items():
            for precision, r in per.items():
                p, e, c = r["propagation_per_frame"], r["encoding"], r["click"]
                print(f"| {name} | {precision} | {p['ours_ms']:.0f} / {p['official_ms']:.0f} "
                      f"ms, **{p['ratio']:.2f}** | {e['ours_ms']:.0f} / {e['official_ms']:.0f} "
                      f"ms, **{e['ratio']:.2f}** | {c['ours_ms']:.1f} / {c['official_ms']:.1f} "
                      f"ms |")
                if "floor" in r:
                    b = r["floor"]
                    print(f"|  | floor at {b['matmul_gflops']:.0f} GFLOP/s | "
                          f"{b['propagation_per_frame']['floor_ratio']:.2f} | "
                          f"{b['encoding']['floor_ratio']:.2f} | |")
    if not ok:
        log(f"masks disagree with the official ones (below {MASK_AGREEMENT:.1%} of pixels)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
