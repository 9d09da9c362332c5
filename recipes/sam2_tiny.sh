#!/usr/bin/env bash
# The shipped sam2_tiny (src/attnvision/sam2/weights/sam2_tiny.safetensors), stage by stage:
# bash recipes/sam2_tiny.sh [RUNS_DIR]. About 8 hours on one core of a 2-core CPU (6,825
# steps of 2 clips x 8 frames, about 3.4 s each in bf16), minutes on a GPU. It resumes where it
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

# Stage 2 (written 2026-12-05 before it ran): stage 1's validation J&F was still rising at
# its last epochs, so 4 more epochs from stage 1's best on clips it never saw (450-899), at
# half the peak learning rate (its start is trained) with a quarter-epoch warm-up. The rule:
# stage 2's best epoch ships only if its validation J&F (the same 16 clips) is higher than
# stage 1's best; otherwise stage 1's stays in the package.
OMP_NUM_THREADS=1 attnvision train sam2 --init "$runs/sam2_tiny/best.safetensors" \
    --first-clip 450 --clips 450 --epochs 4 --lr 5e-5 --warmup-epochs 0.25 --amp bf16 \
    --freeze image_encoder --seed 1 --out "$runs/sam2_tiny_stage2" \
    --export "$runs/sam2_tiny_stage2/export.safetensors"
"${PYTHON:-python}" recipes/ship_if_better.py jf "$runs/sam2_tiny_stage2" \
    src/attnvision/sam2/weights/sam2_tiny.safetensors "$runs/sam2_tiny"

# Stage 3 (written 2026-12-06 before it ran): stage 2's validation J&F was still rising, so 3
# more epochs from the package's file (the better of stages 1 and 2, in float16) on 300 clips
# neither saw (900-1199), as stage 2 otherwise, other prompts (seed 2). The rule: stage 3's
# best epoch ships only if its validation J&F (the same 16 clips) is higher than that of the
# file in the package (the higher of stages 1 and 2); otherwise that file stays.
OMP_NUM_THREADS=1 attnvision train sam2 --init src/attnvision/sam2/weights/sam2_tiny.safetensors \
    --first-clip 900 --clips 300 --epochs 3 --lr 5e-5 --warmup-epochs 0.25 --amp bf16 \
    --freeze image_encoder --seed 2 --out "$runs/sam2_tiny_stage3" \
    --export "$runs/sam2_tiny_stage3/export.safetensors"
"${PYTHON:-python}" recipes/ship_if_better.py jf "$runs/sam2_tiny_stage3" \
    src/attnvision/sam2/weights/sam2_tiny.safetensors "$runs/sam2_tiny" "$runs/sam2_tiny_stage2"

# Stage 4 (written 2026-12-06 at 04:34 UTC, before it ran): stage 3's validation J&F rose
# again (0.664, 0.723 at its epochs 1 and 2), so 3 more epochs from the package's file on 450
# clips no stage saw (1200-1649), as stage 3 otherwise, other prompts (seed 3). The rule:
# stage 4's best epoch ships only if its validation J&F (the same 16 clips) is higher than
# that of the file in the package (the highest of stages 1 to 3); otherwise that file stays.
OMP_NUM_THREADS=1 attnvision train sam2 --init src/attnvision/sam2/weights/sam2_tiny.safetensors \
    --first-clip 1200 --clips 450 --epochs 3 --lr 5e-5 --warmup-epochs 0.25 --amp bf16 \
    --freeze image_encoder --seed 3 --out "$runs/sam2_tiny_stage4" \
    --export "$runs/sam2_tiny_stage4/export.safetensors"
"${PYTHON:-python}" recipes/ship_if_better.py jf "$runs/sam2_tiny_stage4" \
    src/attnvision/sam2/weights/sam2_tiny.safetensors "$runs/sam2_tiny" "$runs/sam2_tiny_stage2" \
    "$runs/sam2_tiny_stage3"
# Stage 5 (written 2026-12-06 at 07:42 UTC, before it ran): stage 4 said more clips at this
# learning rate no longer move the model, and a look at validation clips said why: with the
# true box as its prompt on every frame the package's model scores J 0.78 (objects under 400
# px: 0.49; over 5,000 px: 0.97), and its J from one click on frame 0 is 0.77: what bounds it
# is the 16 x 16 grid of its ViT, not the tracking. So the model grows SAM 2's own answer, the
# decoder's high-resolution skip features, here from a small CNN on the pixels (sam2_tiny_hr,
# grown from the package's file with the same masks to start: attnvision.sam2.pixel_stem), the
# ViT frozen, the rest trained: 5 epochs over 600 clips no stage saw (1650-2249), seed 4, as two
# variants side by side (one thread each): peak learning rate 5e-5 (stages 2-4's) and 1e-4
# (stage 1's, for the fresh stem). The rule: of the two runs' best epochs, the higher
# validation J&F (the same 16 clips) ships, and only if it is higher than that of the file in
# the package (the highest of stages 1 to 4); a tie keeps the earlier file, then the lower
# learning rate. Otherwise the package's file stays.
OMP_NUM_THREADS=1 attnvision train sam2 --model sam2_tiny_hr \
    --init src/attnvision/sam2/weights/sam2_tiny.safetensors \
    --first-clip 1650 --clips 600 --epochs 5 --lr 5e-5 --warmup-epochs 0.25 --amp bf16 \
    --freeze image_encoder.trunk --seed 4 --out "$runs/sam2_tiny_stage5" \
    --export "$runs/sam2_tiny_stage5/export.safetensors"
OMP_NUM_THREADS=1 attnvision train sam2 --model sam2_tiny_hr \
    --init src/attnvision/sam2/weights/sam2_tiny.safetensors \
    --first-clip 1650 --clips 600 --epochs 5 --lr 1e-4 --warmup-epochs 0.25 --amp bf16 \
    --freeze image_encoder.trunk --seed 4 --out "$runs/sam2_tiny_stage5_lr1e-4" \
    --export "$runs/sam2_tiny_stage5_lr1e-4/export.safetensors"
"${PYTHON:-python}" recipes/ship_if_better.py jf "$runs/sam2_tiny_stage5" \
    src/attnvision/sam2/weights/sam2_tiny.safetensors "$runs/sam2_tiny" "$runs/sam2_tiny_stage2" \
    "$runs/sam2_tiny_stage3" "$runs/sam2_tiny_stage4"
"${PYTHON:-python}" recipes/ship_if_better.py jf "$runs/sam2_tiny_stage5_lr1e-4" \
    src/attnvision/sam2/weights/sam2_tiny.safetensors "$runs/sam2_tiny" "$runs/sam2_tiny_stage2" \
    "$runs/sam2_tiny_stage3" "$runs/sam2_tiny_stage4" "$runs/sam2_tiny_stage5"
# Stage 6 (two variants, 4 epochs over clips 2250-2849, with and without the stem at 10x the
# learning rate) validated lower than stage 5 (0.724 and 0.726 against 0.747) and did not ship;
# its commands and rule are in benchmarks/RESULTS.md.
# Stage 7 (the rest at a 2e-5 peak, the stem and its projections at 25x, 4 epochs over clips
# 2850-3449) validated lower than stage 5 (0.738 against 0.747) and did not ship; its commands
# and rule are in benchmarks/RESULTS.md.
# Stage 8 (the whole model, the ViT at a fifth of a 5e-5 peak, 4 epochs over clips 3450-4049)
# validated lower than stage 5 (0.743 against 0.747) and did not ship; its commands and rule
# are in benchmarks/RESULTS.md.
# Stage 9 (the whole model, the ViT at a fifth of a 2e-5 peak, 2 epochs over clips 4050-4649)
# was judged against the package's file on 64 validation clips by recipes/sam2_ship_validated.py
# (rule written 2026-12-07 at 07:38 UTC, before it ran): J&F from a click 0.716 against 0.733,
# and it did not ship; its commands and rule are in benchmarks/RESULTS.md. A later stage is
# checked the same way:
#   python recipes/sam2_ship_validated.py "$runs/STAGE" \
#       src/attnvision/sam2/weights/sam2_tiny.safetensors --clips 64 --box-tolerance 0.01
