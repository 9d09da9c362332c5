#!/usr/bin/env bash
# The shipped digits model (src/attnvision/diffusion/weights/digits.safetensors): a small
# latent diffusion model (autoencoder + class-conditional DiT) trained on MNIST-5k's training
# split (4,000 digits; the 1,000 test digits are never seen), in three commands:
# bash recipes/digits.sh [RUNS_DIR]. About 100 minutes on a 2-core CPU left to itself (a
# training run sharing the cores with another is many times slower). Each stage resumes
# where it stopped if run again; figures: benchmarks/RESULTS.md.
#
# The rule for the shipped file, written before the runs: the last epoch of the last stage (the
# autoencoder's weights, the DiT's EMA weights), whatever any evaluation says; nothing is
# chosen by looking at held-out figures, and `attnvision eval diffusion` is run once, after.
set -euo pipefail
runs=$(realpath -m "${1:-runs}")
cd "$(dirname "$0")/.."  # the repository: the run writes the package's weights
attnvision() { "${ATTNVISION:-attnvision}" "$@"; }

# Stage 1: the autoencoder, 28x28 digits -> 4x7x7 latents; L1 + the shipped ViT's features
# (perceptual, weight 1) + KL (1e-6); 40 epochs of 63 steps of 64 digits.
attnvision train vae --seed 0 --out "$runs/digits_vae" --export "$runs/digits_vae/vae.safetensors"

# Stage 2: the DiT (128 wide, 6 blocks, 4 heads, patch 1: 49 tokens) on those latents, labels
# dropped to the null class 10 % of the time, EMA 0.999; 130 epochs of 32 steps of 128
# latents at a peak learning rate of 5e-4 (32 min). Shipped alone until stage 3 existed.
attnvision train diffusion --vae "$runs/digits_vae/vae.safetensors" --seed 0 \
    --out "$runs/digits_dit" --export "$runs/digits_dit/digits.safetensors"

# Stage 3 (added, with its numbers, before it ran): stage 2's loss was still falling, so the
# same DiT goes on from stage 2's last EMA weights for 240 more epochs (7,680 steps, about an
# hour) at a peak learning rate of 3e-4, seed 1. The export is the last epoch's EMA DiT with
# the autoencoder, float16: the shipped file, whatever any evaluation says. It stores 1.5 as
# the model's default guidance: the scale with the lowest Fréchet distance to the training
# digits among those the ViT reads at 97 % or more, measured on the training split only by
# recipes/digits_guidance.py (the rule and the table: benchmarks/RESULTS.md). Run again with
# another --guidance, a finished stage only writes its export again.
attnvision train diffusion --vae "$runs/digits_vae/vae.safetensors" \
    --init "$runs/digits_dit/model.safetensors" --epochs 240 --lr 3e-4 --seed 1 \
    --out "$runs/digits_dit_stage3" --guidance 1.5 \
    --export src/attnvision/diffusion/weights/digits.safetensors
