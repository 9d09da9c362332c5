#!/usr/bin/env bash
# The shipped sam_tiny (src/attnvision/sam/weights/sam_tiny.safetensors), from nothing, in one
# command: bash recipes/sam_tiny.sh [RUNS_DIR]. About 11 hours on 2-core CPUs (stages 1-10 with
# --amp bf16 on one with native bf16, an AMD EPYC; stage 11 in float32 on one without, where
# bf16 is emulated and slower: drop --amp bf16 on such a CPU), minutes on a GPU. Each stage
# resumes where it stopped if run again; figures: benchmarks/RESULTS.md.
set -euo pipefail
runs=$(realpath -m "${1:-runs}")
cd "$(dirname "$0")/.."  # the repository: the last stage writes the package's weights
attnvision() { "${ATTNVISION:-attnvision}" "$@"; }

# 1. Points and boxes, 7 epochs of synthetic scenes 0-5999, from random weights.
attnvision train sam --amp bf16 --seed 0 --out "$runs/sam_tiny"
# 2. The same on scenes 6000-11999, from stage 1's best epoch, at a lower peak lr.
attnvision train sam --init "$runs/sam_tiny/best.safetensors" --first-scene 6000 --lr 3e-4 \
    --amp bf16 --seed 1 --out "$runs/sam_tiny_stage2"
# 3. Text prompts (and more points and boxes) on scenes 12000-15999, the encoder frozen and
#    each image encoded once.
attnvision train sam --init "$runs/sam_tiny_stage2/best.safetensors" --freeze image_encoder \
    --encode-once --text --text-share 0.5 --scenes 4000 --first-scene 12000 --batch-size 16 \
    --epochs 8 --lr 5e-4 --seed 3 --out "$runs/sam_tiny_stage3"
# 4. Everything trained again on scenes 16000-21999 in the mixed style (standard scenes,
#    photo-like ones with large objects and deep textures, trays of look-alike objects), a
#    third of the steps prompted by phrases.
attnvision train sam --init "$runs/sam_tiny_stage3/best.safetensors" --text --text-share 0.3 \
    --scene-style mixed --scenes 6000 --first-scene 16000 --epochs 4 --lr 2e-4 \
    --warmup-epochs 0.25 --amp bf16 --seed 4 --out "$runs/sam_tiny_stage4"
# 5. One short epoch back on standard scenes (22000-24999) at a low lr.
attnvision train sam --init "$runs/sam_tiny_stage4/best.safetensors" --text --text-share 0.3 \
    --scenes 3000 --first-scene 22000 --epochs 1 --lr 1e-4 --warmup-epochs 0.1 --amp bf16 \
    --seed 5 --out "$runs/sam_tiny_stage5"
# 6. The same model at 384 px: its position weights resampled to a 24x24 grid, so small
#    objects (a coin) cover more tokens, then everything trained again there on mixed scenes
#    25000-27999.
attnvision train sam --init "$runs/sam_tiny_stage5/best.safetensors" --img-size 384 --text \
    --text-share 0.3 --scene-style mixed --scenes 3000 --first-scene 25000 --epochs 3 \
    --lr 1e-4 --warmup-epochs 0.1 --amp bf16 --seed 6 --out "$runs/sam_tiny_stage6"
# 7. And at 512 px (a 32x32 grid), 2 epochs of mixed scenes 31000-33999 (28000-30999 went to
#    endings tried and dropped: benchmarks/RESULTS.md). Boxes gain, but on coins the IoU head
#    now ranks first the mask of the whole tray.
attnvision train sam --init "$runs/sam_tiny_stage6/best.safetensors" --img-size 512 --text \
    --text-share 0.3 --scene-style mixed --scenes 3000 --first-scene 31000 --epochs 2 \
    --lr 5e-5 --warmup-epochs 0.1 --amp bf16 --seed 7 --out "$runs/sam_tiny_stage7"
# 8. One epoch with look-alikes placed apart in 60 % of the scenes (34000-35999).
attnvision train sam --init "$runs/sam_tiny_stage7/best.safetensors" --text --text-share 0.3 \
    --scene-style standard=0.4,repeated=0.6 --scenes 2000 --first-scene 34000 --epochs 1 \
    --lr 5e-5 --warmup-epochs 0.1 --amp bf16 --seed 9 --out "$runs/sam_tiny_stage8"
# 9. One epoch with trays of nearly touching look-alikes in 30 % of the scenes (36000-37999),
#    which teaches the IoU head to keep the clicked coin. Its best weights, in float16, are the
#    shipped file, and stay in the run's folder, where stage 11's rule (below) measured
#    against them.
attnvision train sam --init "$runs/sam_tiny_stage8/best.safetensors" --text --text-share 0.3 \
    --scene-style standard=0.35,varied=0.15,repeated=0.2,packed=0.3 --scenes 2000 \
    --first-scene 36000 --epochs 1 --lr 5e-5 --warmup-epochs 0.1 --amp bf16 --seed 10 \
    --out "$runs/sam_tiny_stage9" --export "$runs/sam_tiny_stage9/export.safetensors"
cp "$runs/sam_tiny_stage9/export.safetensors" src/attnvision/sam/weights/sam_tiny.safetensors

# 10. Large objects (written 2026-12-06 at 19:36 UTC, before these runs; the two earlier
#     tries, 10a and 10b, are in benchmarks/RESULTS.md: half an epoch of the large style moved
#     the horse's best mask of three from 0.43 to 0.70, not far enough, and coins fell to 0.60
#     when packed trays were cut to 15 %). Two candidates from the package's file (stage 9),
#     each 2 epochs with a quarter of the scenes packed trays: 10c with 45 % large scenes,
#     10d with 60 %.
attnvision train sam --init src/attnvision/sam/weights/sam_tiny.safetensors --text \
    --text-share 0.3 --scene-style standard=0.2,varied=0.05,repeated=0.05,packed=0.25,large=0.45 \
    --scenes 2000 --first-scene 42400 --epochs 2 --lr 1e-4 --warmup-epochs 0.1 --amp bf16 \
    --seed 13 --out "$runs/sam_tiny_stage10c" --export "$runs/sam_tiny_stage10c/export.safetensors"
attnvision train sam --init src/attnvision/sam/weights/sam_tiny.safetensors --text \
    --text-share 0.3 --scene-style standard=0.15,packed=0.25,large=0.6 \
    --scenes 2000 --first-scene 44400 --epochs 2 --lr 1e-4 --warmup-epochs 0.1 --amp bf16 \
    --seed 14 --out "$runs/sam_tiny_stage10d" --export "$runs/sam_tiny_stage10d/export.safetensors"
# The rule, as code in recipes/sam_tiny_large.py: the package's file and each candidate are
# measured the same way (the measures of `attnvision eval sam`: 1 click, 3 clicks, box and
# text alone on test scenes 1000-1099; 1 click on packed trays 1000-1039; coins; the horse,
# one click at each of 8 points). A candidate qualifies if coins >= 0.8, each of those five
# synthetic figures is at most 0.01 below the package file's, and its horse mean is higher
# than the package file's; of those that qualify, the one with the highest horse mean replaces
# the package's file. None qualifying: stage 9 stays. The issue's horse target (>= 0.9 at
# every click) is reported whether or not it is met; it does not choose.
"${PYTHON:-python}" recipes/sam_tiny_large.py src/attnvision/sam/weights/sam_tiny.safetensors \
    "$runs/sam_tiny_stage10c" "$runs/sam_tiny_stage10d"

# 11. Large objects again, with look-alikes placed apart back at stage 9's share (written
#     2026-12-06 at 22:38 UTC, amended at 22:50 to float32 and one epoch, before any figure:
#     bf16 is emulated on the CPU that ran it). 11b: from the package's file (10c), 2000 new
#     scenes, 45 % large, 20 % repeated, 25 % packed; within stage 9's figures on everything
#     but the 1-click one (0.003 under). 11c (written 2026-12-07 at 00:26 UTC, before its run):
#     11b one short epoch more with the standard share back up. (11a, 30 % large, lost the
#     coins: benchmarks/RESULTS.md, "Stage 11".)
attnvision train sam --init src/attnvision/sam/weights/sam_tiny.safetensors --text \
    --text-share 0.3 --scene-style standard=0.1,repeated=0.2,packed=0.25,large=0.45 \
    --scenes 2000 --first-scene 48400 --epochs 1 --lr 1e-4 --warmup-epochs 0.1 --seed 16 \
    --out "$runs/sam_tiny_stage11b" --export "$runs/sam_tiny_stage11b/export.safetensors"
attnvision train sam --init "$runs/sam_tiny_stage11b/export.safetensors" --text \
    --text-share 0.3 --scene-style standard=0.25,varied=0.05,repeated=0.2,packed=0.25,large=0.25 \
    --scenes 1000 --first-scene 50400 --epochs 1 --lr 5e-5 --warmup-epochs 0.1 --seed 17 \
    --out "$runs/sam_tiny_stage11c" --export "$runs/sam_tiny_stage11c/export.safetensors"
# The rule, as code in recipes/sam_tiny_large.py with --baseline and --guard: every held-out
# figure of benchmarks/RESULTS.md guarded against stage 9's file (the figures before the
# large-object stages), the package's file competing. A model qualifies if coins >= 0.8, its
# horse mean is higher than stage 9's, and each of 1 click, 3 clicks, box, box zoomed and
# text alone (test scenes 1000-1099), packed trays and repeated look-alikes with a click and
# with a box (1000-1039) is at most 0.01 under stage 9's; the qualifying model with the
# highest horse mean is the package's file afterwards (the package's file first on a tie).
"${PYTHON:-python}" recipes/sam_tiny_large.py src/attnvision/sam/weights/sam_tiny.safetensors \
    "$runs/sam_tiny_stage11c" --baseline "$runs/sam_tiny_stage9/export.safetensors" \
    --guard point,points3,box,box_zoom,text,packed_point,packed_box,repeated_point,repeated_box
