"""Digits models at several guidance scales, measured on the training split only: the shipped
ViT's accuracy on the samples, their spread against the training digits of each class, how
close they come to the training digits (copying) and the Fréchet distance of their ViT
features to the training digits'. No held-out digit is read, so the figures may choose the
shipped model and its default guidance (benchmarks/RESULTS.md) without touching what
`attnvision eval diffusion` measures.

    python recipes/digits_guidance.py [--models FILE ...] [--guidance 1 1.5 2 4]
        [--per-class 100] [--seed 2] [--ship PATH]

With --ship, the rule of recipes/digits.sh picks one (model, scale): the ViT reads at least
97 % of the samples as the asked class, the least spread class keeps 0.85 of the training
digits' spread, the copy ratio is 0.95 or more; among those, the lowest Fréchet distance.
That model is written to PATH (the same weights, bit for bit) with that scale as its default
guidance. Prints one JSON document; about 80 s per 1,000 digits on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from attnvision.data.datasets import load_dataset
from attnvision.diffusion import DiTPipeline, pretrained
from attnvision.diffusion.evaluation import (
    accuracy_of,
    classifier_fid,
    classify,
    copy_ratio,
    diversity,
    sample_digits,
)
from attnvision.vit.pretrained import load_shipped
from attnvision.weights import read_metadata, restamp

MIN_ACCURACY = 0.97
MIN_SPREAD = 0.85
MIN_COPY_RATIO = 0.95


def measure(path: str, scales: list[float], per_class: int, seed: int, vit: Any,
            train: tuple[Any, Any]) -> list[dict[str, Any]]:
    pipe = DiTPipeline.from_pretrained(path)
    images_train, labels_train = train
    rows = []
    for g in scales:
        images, labels = sample_digits(pipe, per_class=per_class, guidance=g, seed=seed,
                                       progress=True)
        spread = diversity(images, labels, images_train, labels_train)
        row = {"model": path, "guidance": g,
               "accuracy": accuracy_of(classify(vit, images), labels)["accuracy"],
               "diversity_min_ratio": spread["min_ratio"],
               "diversity_min_class": spread["min_class"],
               "diversity_per_class": {c: v["ratio"] for c, v in spread["per_class"].items()},
               "copy_ratio": copy_ratio(images, images_train),
               "fid_vs_train": classifier_fid(vit, images, images_train)}
        row["eligible"] = bool(row["accuracy"] >= MIN_ACCURACY
                               and row["diversity_min_ratio"] >= MIN_SPREAD
                               and row["copy_ratio"] >= MIN_COPY_RATIO)
        rows.append(row)
        print(f"{path} guidance {g}: accuracy {row['accuracy']:.3f}, lowest spread "
              f"{row['diversity_min_ratio']:.3f}, copy ratio {row['copy_ratio']:.3f}, "
              f"FID vs train {row['fid_vs_train']:.3f}", file=sys.stderr)
    return rows


def ship(row: dict[str, Any], path: str) -> None:
    """The chosen file's tensors as they are, its header with the chosen default guidance."""
    metadata = read_metadata(row["model"])
    metadata["guidance_scale"] = repr(float(row["guidance"]))
    extra = json.loads(metadata.get("extra", "{}"))
    extra["selection"] = (f"{extra.get('selection', 'its weights')}; model and guidance "
                          "by recipes/digits_guidance.py's rule, training split only")
    metadata["extra"] = json.dumps(extra)
    restamp(row["model"], path, metadata)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=[str(pretrained.shipped_checkpoint())],
                        help="pipeline files (default: the shipped digits)")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 4.0])
    parser.add_argument("--seed", type=int, default=2, help="not the evaluation's seed 0")
    parser.add_argument("--ship", metavar="PATH",
                        help="write the (model, scale) the rule picks to PATH")
    args = parser.parse_args()
    vit = load_shipped()
    train = load_dataset("mnist5k").train.tensors
    rows = [row for path in args.models
            for row in measure(path, args.guidance, args.per_class, args.seed, vit, train)]
    eligible = [row for row in rows if row["eligible"]]
    chosen = min(eligible, key=lambda row: row["fid_vs_train"]) if eligible else None
    print(json.dumps({"per_class": args.per_class, "seed": args.seed, "sampler": "dpm++ 25",
                      "compared_with": "the 4,000 training digits",
                      "rule": {"min_accuracy": MIN_ACCURACY, "min_spread": MIN_SPREAD,
                               "min_copy_ratio": MIN_COPY_RATIO,
                               "then": "lowest fid_vs_train"},
                      "rows": rows, "chosen": chosen and {k: chosen[k]
                                                          for k in ("model", "guidance")},
                      "shipped_to": args.ship if chosen and args.ship else None}, indent=2))
    if args.ship:
        if chosen is None:
            print("no (model, scale) meets the rule: nothing shipped", file=sys.stderr)
            return 1
        ship(chosen, args.ship)
    return 0


if __name__ == "__main__":
    sys.exit(main())
