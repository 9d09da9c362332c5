"""The shipped digits model at several guidance scales, measured on the training split only:
the shipped ViT's accuracy on the samples, their spread against the training digits of each
class, and the Fréchet distance of their ViT features to the training digits'. No held-out
digit is read, so the figures may choose the model's default guidance (benchmarks/RESULTS.md)
without touching what `attnvision eval diffusion` measures.

    python recipes/digits_guidance.py [--per-class 100] [--guidance 1 1.5 2 4] [--seed 2]

Prints one JSON document; about 80 s per guidance scale at 100 per class on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys

from attnvision.data.datasets import load_dataset
from attnvision.diffusion import DiTPipeline, pretrained
from attnvision.diffusion.evaluation import (
    accuracy_of,
    classifier_fid,
    classify,
    diversity,
    sample_digits,
)
from attnvision.vit.pretrained import load_shipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 4.0])
    parser.add_argument("--seed", type=int, default=2, help="not the evaluation's seed 0")
    args = parser.parse_args()
    pipe = DiTPipeline.from_pretrained(pretrained.shipped_checkpoint())
    vit = load_shipped()
    images_train, labels_train = load_dataset("mnist5k").train.tensors
    rows = []
    for g in args.guidance:
        images, labels = sample_digits(pipe, per_class=args.per_class, guidance=g,
                                       seed=args.seed, progress=True)
        spread = diversity(images, labels, images_train, labels_train)
        rows.append({"guidance": g,
                     "accuracy": accuracy_of(classify(vit, images), labels)["accuracy"],
                     "diversity_min_ratio": spread["min_ratio"],
                     "diversity_min_class": spread["min_class"],
                     "diversity_per_class": {c: v["ratio"]
                                             for c, v in spread["per_class"].items()},
                     "fid_vs_train": classifier_fid(vit, images, images_train)})
        print(f"guidance {g}: accuracy {rows[-1]['accuracy']:.3f}, lowest spread "
              f"{spread['min_ratio']:.3f}, FID vs train {rows[-1]['fid_vs_train']:.3f}",
              file=sys.stderr)
    print(json.dumps({"per_class": args.per_class, "seed": args.seed, "sampler": "dpm++ 25",
                      "compared_with": "the 4,000 training digits", "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
