#!/usr/bin/env bash
# The shipped cotracker_tiny (src/attnvision/cotracker/weights/cotracker_tiny.safetensors), in
# one command: bash recipes/cotracker_tiny.sh [RUNS_DIR]. About an hour on one core of a
# 2-core CPU (800 steps of one 24-frame clip, about 4 s each in bf16), minutes on a GPU. It
# resumes where it stopped if run again; figures: benchmarks/RESULTS.md.
set -euo pipefail
runs=$(realpath -m "${1:-runs}")
cd "$(dirname "$0")/.."  # the repository: the run writes the package's weights
attnvision() { "${ATTNVISION:-attnvision}" "$@"; }

# A fresh cotracker_tiny (1.8 M parameters at 192 x 256) on synthetic clips 0-199 of 24 frames
# (train split; each epoch queries other points, 128 per clip, at random visible frames),
# 4 epochs at the official peak learning rate. Its best epoch by δ_avg on 16 validation clips,
# in float16, is the shipped file. One thread, as the other recipes run.
OMP_NUM_THREADS=1 attnvision train cotracker --clips 200 --epochs 4 --points 128 --lr 5e-4 \
    --amp bf16 --seed 0 --out "$runs/cotracker_tiny" \
    --export src/attnvision/cotracker/weights/cotracker_tiny.safetensors
