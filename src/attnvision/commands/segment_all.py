"""``attnvision segment-all``: every mask in images or folders, as one COCO file.

Each image's result is written, atomically, to ``OUT/json/<name>.json`` (its COCO
annotations, image size and file) with ``OUT/overlays/<name>.png`` before it; a rerun skips
images whose JSON exists, so an interrupted run resumes where it stopped. ``OUT/coco.json``
is rebuilt from the per-image files at the end, with image and annotation ids in input order.
An image that cannot be read is reported and skipped (exit code 3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import (
    SAM_SIZES,
    add_command,
    common,
    img_size_option,
    precision_option,
)
from attnvision.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
CATEGORY = {"id": 1, "name": "object"}


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "segment-all", "SAM masks of everything in images or folders, as "
                                             "one COCO JSON file with an overlay per image "
                                             "(resumes where it stopped)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--out", required=True,
                   help="folder for coco.json, json/ (one file per image) and overlays/")
    p.add_argument("--points-per-side", type=int, default=32, help="prompt grid is N x N")
    p.add_argument("--points-per-batch", type=int, default=64,
                   help="prompts per decoder pass (memory against speed)")
    p.add_argument("--pred-iou-thresh", type=float,
                   help="keep masks whose predicted IoU is above (default: 0.88, the official "
                        "value; 0.7 for the shipped sam_tiny)")
    p.add_argument("--stability-score-thresh", type=float,
                   help="keep masks whose stability is above (default: 0.95; 0.85 for the "
                        "shipped sam_tiny)")
    p.add_argument("--box-nms-thresh", type=float, default=0.7)
    p.add_argument("--crop-n-layers", type=int, default=0,
                   help="also segment 2^i x 2^i crops for i = 1..N (finds small objects)")
    p.add_argument("--min-mask-region-area", type=int, default=0,
                   help="fill holes and drop islands smaller than this many pixels")
    img_size_option(p)
    precision_option(p)
    common(p, segment_all)


def find_images(paths: list[str]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise UserError(f"{p} does not exist: give image files or folders of images")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    if not unique:
        raise UserError(f"no images found in {' '.join(paths)} (looked for "
                        f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    return unique


def result_names(images: list[Path]) -> list[str]:
    """A file name per image: its stem, with a short hash of its path where stems repeat."""
    stems = [p.stem for p in images]
    return [s if stems.count(s) == 1 else
            f"{s}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
            for s, p in zip(stems, images, strict=True)]


def coco_annotation(record: dict[str, Any]) -> dict[str, Any]:
    """One generator record (``coco_rle`` output) as a COCO annotation, ids filled later.

    ``bbox`` is COCO's: width and height count pixels (pycocotools' ``toBbox``), one more
    than the generator's official ``x1 - x0``.
    """
    x, y, w, h = record["bbox"]
    empty = record["area"] == 0
    return {"segmentation": record["segmentation"], "area": record["area"],
            "bbox": [0, 0, 0, 0] if empty else [x, y, w + 1, h + 1],
            "score": round(record["predicted_iou"], 6),
            "stability_score": round(record["stability_score"], 6),
            "point_coords": record["point_coords"], "crop_box": record["crop_box"],
            "category_id": CATEGORY["id"], "iscrowd": 0}


def segment_image(generator, path: Path, name: str, out: Path) -> dict[str, Any]:
    """Masks of one image -> overlay PNG, then its JSON (the JSON last: it marks it done)."""
    from attnvision.data.images import load_image
    from attnvision.data.rle import rle_to_mask
    from attnvision.files import write_json
    from attnvision.viz.overlays import mask_overlay, save_png

    image = load_image(path)
    records = generator.generate(image)
    records.sort(key=lambda r: -r["area"])  # big first, so small masks are drawn on top
    masks = [rle_to_mask(r["segmentation"]) for r in records]
    overlay = save_png(mask_overlay(image, masks, alpha=0.4), out / "overlays" / f"{name}.png")
    result = {"file_name": path.name, "path": str(path), "height": int(image.shape[0]),
              "width": int(image.shape[1]), "overlay": str(overlay),
              "annotations": [coco_annotation(r) for r in records]}
    write_json(out / "json" / f"{name}.json", result)
    return result


def merge_coco(results: list[dict[str, Any]]) -> dict[str, Any]:
    images, annotations = [], []
    for image_id, r in enumerate(results, start=1):
        images.append({"id": image_id, "file_name": r["file_name"], "width": r["width"],
                       "height": r["height"]})
        for a in r["annotations"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **a})
    return {"images": images, "annotations": annotations, "categories": [CATEGORY]}


def segment_all(args: argparse.Namespace) -> dict[str, Any]:
    from tqdm import tqdm

    from attnvision.commands.sam import load_sam
    from attnvision.files import ensure_dir, write_json
    from attnvision.sam.automatic import SamAutomaticMaskGenerator
    from attnvision.sam.pretrained import everything_thresholds

    if args.points_per_side < 1 or args.points_per_batch < 1:
        raise UserError("--points-per-side and --points-per-batch must be at least 1")
    images = find_images(args.paths)
    names = result_names(images)
    model = load_sam(args.checkpoint, args.model, args.precision, args.img_size)
    iou, stability = everything_thresholds(shipped=args.checkpoint is None)
    out = ensure_dir(args.out)
    generator = SamAutomaticMaskGenerator(
        model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
        pred_iou_thresh=iou if args.pred_iou_thresh is None else args.pred_iou_thresh,
        stability_score_thresh=(stability if args.stability_score_thresh is None
                                else args.stability_score_thresh),
        box_nms_thresh=args.box_nms_thresh, crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area, output_mode="coco_rle")

    done = [(out / "json" / f"{n}.json").exists() for n in names]
    print(f"attnvision segment-all: {len(images)} images, {sum(done)} already done in {out}",
          file=sys.stderr)
    results: list[dict[str, Any]] = []
    written: list[str] = []
    skipped: list[dict[str, str]] = []
    for path, name, was_done in tqdm(list(zip(images, names, done, strict=True)),
                                     desc="segment-all", unit="image", file=sys.stderr,
                                     disable=args.quiet):
        per_image = out / "json" / f"{name}.json"
        if was_done:
            try:
                results.append(json.loads(per_image.read_text()))
                continue
            except (OSError, json.JSONDecodeError):
                pass  # unreadable result: segment the image again
        try:
            result = segment_image(generator, path, name, out)
        except UserError as e:
            tqdm.write(f"attnvision segment-all: skipped {path}: {e}", file=sys.stderr)
            skipped.append({"path": str(path), "error": str(e)})
            continue
        results.append(result)
        written += [result["overlay"], str(per_image)]

    coco = write_json(out / "coco.json", merge_coco(results))
    n_masks = sum(len(r["annotations"]) for r in results)
    return {"command": "segment-all", "coco": str(coco), "images": len(images),
            "segmented": len(results), "processed": len(results) - sum(done),
            "already_done": sum(done), "annotations": n_masks,
            "per_image": {r["path"]: len(r["annotations"]) for r in results},
            "skipped": skipped, "files": [str(coco), *written]}

