#!/usr/bin/env bash
# The shipped sam2_tiny (src/attnvision/sam2/weights/sam2_tiny.safetensors), in one command:
# bash recipes/sam2_tiny.sh [RUNS_DIR]. About 2 hours on one core of a 2-core CPU (1,800 steps
# of 2 clips x 8 frames, about 3.4 s each in bf16), minutes on a GPU. It resumes where it
# stopped if run again; figures and the variants tried beside it: benchmarks/RESULTS.md.
set -euo pipefail
runs=$(realpath -m "${1:-runs}")
cd "$(dirname "$0")/.."  # the repository: the run writes the package's weights
attnvision() { "${ATTNVISION:-attnvision}" "$@"; }

# SAM 2 on the shipped sam_tiny (its image encoder copied and frozen, the video parts new):
# 8 epochs over synthetic clips 0-449 of 8 frames (train split; each epoch draws which objects
# are prompted anew), a click, box or mask on frame 0 and correction clicks later, memories
# and object pointers trained through time. Its best epoch by J&F from one click on 16
# validation clips, in float16, is the shipped file. One thread: two were slower on 2 cores.
OMP_NUM_THREADS=1 attnvision train sam2 --clips 450 --epochs 8 --lr 1e-4 --amp bf16 \
    --freeze image_encoder --seed 0 --out "$runs/sam2_tiny" \
    --export src/attnvision/sam2/weights/sam2_tiny.safetensors
