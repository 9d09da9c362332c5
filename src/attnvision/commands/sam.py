"""``attnvision segment``: SAM masks from points and boxes, as PNGs, an overlay and JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnvision.commands.options import (
    SAM_SIZES,
    add_command,
    common,
    img_size_option,
    precision_option,
)
from attnvision.errors import UserError

if TYPE_CHECKING:
    import numpy as np


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "segment", "SAM masks of an image from point and box prompts")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="a point in pixels; LABEL 1 = object (default), 0 = background")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object, in pixels")
    p.add_argument("--zoom", action="store_true",
                   help="with --box alone: segment again in a window around the box at the "
                        "model's full resolution (sharper small objects; one more encoding)")
    p.add_argument("--text", metavar="PHRASE",
                   help="name the object, e.g. 'the red star' (models trained with 'train sam "
                        "--text'; needs attnvision[text])")
    p.add_argument("--multimask", action="store_true",
                   help="write SAM's 3 ambiguous masks, best first (default: 1 mask; a lone "
                        "click keeps the best of the 3 by predicted IoU)")
    p.add_argument("--out", required=True, help="folder for the masks, overlay and JSON")
    img_size_option(p)
    precision_option(p)
    p.add_argument("--cache-dir", help="embedding cache folder (default: $ATTNVISION_CACHE or "
                                       "~/.cache/attnvision/embeddings)")
    p.add_argument("--no-cache", action="store_true",
                   help="always encode the image; read and write no embedding cache")
    common(p, segment)


def parse_point(text: str) -> tuple[float, float, int]:
    """'X,Y' or 'X,Y,LABEL' (label 1 = foreground, 0 = background)."""
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise UserError(f"--point {text!r} is not X,Y or X,Y,LABEL (e.g. --point 120,80 or "
                        "--point 40,60,0 for background)") from None
    if label not in (0, 1):
        raise UserError(f"--point {text!r}: the label must be 1 (foreground) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> np.ndarray:
    import numpy as np

    try:
        box = np.array([float(v) for v in text.split(",")])
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,):
        raise UserError(f"--box {text!r} is not X0,Y0,X1,Y1 (e.g. --box 10,20,200,180)")
    return box


def bbox_xywh(mask: np.ndarray) -> list[int]:
    import numpy as np

    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return [0, 0, 0, 0]
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return [int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)]


def load_sam(checkpoint: str | None, model: str | None, precision: str = "fp32",
             img_size: int | None = None):
    """SAM from ``checkpoint``, or the shipped sam_tiny (said on stderr) when none is given;
    run at ``img_size`` px if given (its position weights resampled), else the file's size."""
    from attnvision.precision import check_precision, warn_if_bf16_emulated
    from attnvision.sam import build_sam
    from attnvision.sam.checkpoints import where_to_get
    from attnvision.sam.pretrained import shipped_checkpoint

    if checkpoint is None and model not in (None, "sam_tiny"):
        raise UserError(f"--model {model} needs its weights: pass --checkpoint "
                        f"({where_to_get(model)})")
    check_precision(precision, "cpu")
    if precision == "bf16":
        warn_if_bf16_emulated("attnvision", "--precision bf16", "use --precision fp32")
    if checkpoint is not None:
        return build_sam(model, checkpoint, precision=precision, img_size=img_size)
    sam = build_sam(None, shipped_checkpoint(), precision=precision, img_size=img_size)
    print(f"attnvision: using the shipped sam_tiny ({sam.img_size} px, trained on synthetic "
          "scenes); pass --checkpoint for an official SAM", file=sys.stderr)
    return sam


def segment(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from attnvision.data.images import load_image
    from attnvision.files import ensure_dir, write_json
    from attnvision.sam import SamPredictor
    from attnvision.sam.embedding_cache import EmbeddingCache
    from attnvision.sam.predictor import check_boxes, check_points
    from attnvision.sam.zoom import predict_zoomed
    from attnvision.viz.overlays import mask_overlay, save_png

    points = [parse_point(p) for p in args.point or []]
    box = parse_box(args.box) if args.box else None
    text = args.text.strip() if args.text is not None else None
    if text == "":
        raise UserError("--text is empty: name the object, e.g. --text 'the red star'")
    if not points and box is None and text is None:
        raise UserError("give a prompt: --point X,Y[,LABEL] (repeatable), --box X0,Y0,X1,Y1 "
                        "and/or --text PHRASE")
    if args.zoom and (box is None or points or text is not None or args.multimask):
        raise UserError("--zoom re-segments a box: give --box alone (no --point, --text or "
                        "--multimask)")
    image = load_image(args.image)
    size = image.shape[:2]
    coords = np.array([p[:2] for p in points], dtype=float) if points else None
    labels = np.array([p[2] for p in points]) if points else None
    if coords is not None:
        check_points(coords, labels, size)
    if box is not None:
        check_boxes(box, size)
    predictor = SamPredictor(load_sam(args.checkpoint, args.model, args.precision,
                                      args.img_size))
    out = ensure_dir(args.out)  # after the model: a bad checkpoint or size leaves no folder
    if text is not None:
        predictor.model.prompt_encoder.require_text()  # before the image is encoded
    if args.no_cache:
        print(f"attnvision segment: embedding {args.image} ({size[1]}x{size[0]})",
              file=sys.stderr)
        predictor.set_image(image)
        embedding = "computed"
    else:
        cache = EmbeddingCache(args.cache_dir)
        cached = cache.set_image(predictor, image)
        embedding = "cache" if cached else "computed"
        print(f"attnvision segment: {'embedding from the cache for' if cached else 'embedded'}"
              f" {args.image} ({size[1]}x{size[0]}; cache: {cache.directory})", file=sys.stderr)
    # One click alone is the ambiguous prompt SAM answers with three masks: the official
    # notebooks, the web page and `eval sam` keep the one of highest predicted IoU, and so does
    # the command (the single-mask output scored 0.67 on the coins, the best of three 0.82).
    ambiguous = len(points) == 1 and box is None and text is None
    if args.zoom:
        mask, score, window = predict_zoomed(predictor, box)
        masks, scores = mask[None], np.array([score])
    else:
        masks, scores, _ = predictor.predict(point_coords=coords, point_labels=labels,
                                             box=box, multimask_output=args.multimask or ambiguous,
                                             text=text)
    order = np.argsort(-scores, kind="stable")
    if not args.multimask:
        order = order[:1]
    stem = Path(args.image).stem
    records = []
    for rank, i in enumerate(order):
        path = save_png((masks[i] * 255).astype(np.uint8), out / f"{stem}_mask{rank}.png")
        records.append({"file": str(path), "score": round(float(scores[i]), 6),
                        "area": int(masks[i].sum()), "bbox": bbox_xywh(masks[i])})
    overlay = save_png(mask_overlay(image, [masks[order[0]]], points=coords, labels=labels,
                                    boxes=box), out / f"{stem}_overlay.png")
    result = {"command": "segment", "image": args.image, "size": [int(size[1]), int(size[0])],
              "prompts": {"points": [list(p) for p in points],
                          "box": None if box is None else box.tolist(), "text": text},
              "zoom_window": list(window) if args.zoom else None,
              "candidates": 3 if args.multimask or ambiguous else 1,
              "img_size": predictor.model.image_encoder.img_size,
              "precision": args.precision, "embedding": embedding,
              "masks": records, "overlay": str(overlay)}
    result["json"] = str(write_json(out / f"{stem}_masks.json", result))
    result["files"] = [r["file"] for r in records] + [str(overlay), result["json"]]
    return result
