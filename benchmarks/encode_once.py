"""A training step with a frozen image encoder, on images and on embeddings stored once.

    python benchmarks/encode_once.py                          # sam_tiny, 16 scenes a step
    python benchmarks/encode_once.py --model vit_b --batch-size 2 --steps 2
    python benchmarks/encode_once.py --json

`attnvision train sam --freeze image_encoder --encode-once` encodes every training image
once and trains the prompt encoder and mask decoder on the stored embeddings. This times the
same steps (forward and backward of InteractiveSam: 3 prompting rounds, points and boxes)
both ways on synthetic scenes, with the model's own weights untouched (random for vit_b: the
speed does not depend on them), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.data import default_collate

from attnvision.sam import build_sam
from attnvision.sam.training import InteractiveSam
from attnvision.sam.training_data import EncodedDataset, SceneDataset


def time_steps(net: InteractiveSam, batches: list[dict], seed: int = 0) -> float:
    """Mean seconds of one step (forward + backward) over ``batches``, after one warm-up."""
    times = []
    for i, batch in enumerate([batches[0], *batches]):
        torch.manual_seed(seed + i)
        start = time.perf_counter()
        net(batch).backward()
        times.append(time.perf_counter() - start)
    net.zero_grad(set_to_none=True)
    return sum(times[1:]) / len(batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sam_tiny", choices=["sam_tiny", "vit_b"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    if args.model == "sam_tiny":
        from attnvision.sam.pretrained import load_shipped

        sam = load_shipped().float()
    else:
        sam = build_sam(args.model)
    sam.image_encoder.requires_grad_(False)
    n = args.batch_size * args.steps
    scenes = SceneDataset("train", sam.img_size, n, first=50_000)
    start = time.perf_counter()
    encoded = EncodedDataset(scenes, sam.image_encoder, sam.pixel_mean, sam.pixel_std,
                             batch_size=args.batch_size, progress=False)
    encode_seconds = time.perf_counter() - start

    def batches(data) -> list[dict]:
        return [default_collate([data[i][0] for i in range(s, s + args.batch_size)])
                for s in range(0, n, args.batch_size)]

    net = InteractiveSam(sam, rounds=3).train()
    on_images = time_steps(net, batches(scenes))
    on_embeddings = time_steps(net, batches(encoded))
    result = {"model": args.model, "batch_size": args.batch_size, "steps": args.steps,
              "threads": torch.get_num_threads(),
              "step_seconds_images": round(on_images, 3),
              "step_seconds_embeddings": round(on_embeddings, 3),
              "speedup": round(on_images / on_embeddings, 2),
              # Drawing each synthetic scene (about 0.01 s) is included.
              "encode_once_seconds_per_image": round(encode_seconds / n, 4)}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
