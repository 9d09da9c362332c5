#!/usr/bin/env bash
# The shipped sam_tiny (src/attnvision/sam/weights/sam_tiny.safetensors), from nothing, in one
# command: bash recipes/sam_tiny.sh [RUNS_DIR]. About 4 hours on a 2-core CPU, minutes on a
# GPU. Each stage resumes where it stopped if run again; figures: benchmarks/RESULTS.md.
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
#    each image encoded once; its best epoch, in float16, is the shipped file.
attnvision train sam --init "$runs/sam_tiny_stage2/best.safetensors" --freeze image_encoder \
    --encode-once --text --text-share 0.5 --scenes 4000 --first-scene 12000 --batch-size 16 \
    --epochs 8 --lr 5e-4 --seed 3 --out "$runs/sam_tiny_stage3" \
    --export src/attnvision/sam/weights/sam_tiny.safetensors
