"""The ``attnvision`` command: one entry point, one sub-command per verb.

Conventions (shared/DESIGN.md): ``--json`` prints exactly one JSON document on stdout; logs and
progress go to stderr; exit 0 success, 2 bad input (one line, no traceback), 3 partial success
(some inputs skipped, each reported), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from attnvision import __version__
from attnvision.errors import UserError

SAM_SIZES = ["vit_b", "vit_l", "vit_h", "sam_tiny"]  # attnvision.sam.image_encoder.ENCODER_CONFIGS

Command = Callable[[argparse.Namespace], dict[str, Any]]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _human(result: dict[str, Any]) -> list[str]:
    """The lines a person reads when --json is not given."""
    if result.get("command") == "segment-all":
        return [f"{result['annotations']} masks in {result['segmented']} of "
                f"{result['images']} images ({result['already_done']} done earlier) -> "
                f"{result['coco']}"] + [f"skipped {s['path']}: {s['error']}"
                                        for s in result["skipped"]]
    if result.get("command") == "serve":
        return [f"served {result['url']} (model {result['model']}); {result['images']} images "
                f"kept in {result['data_dir']}"]
    lines: list[str] = []
    if "accuracy" in result:
        lines.append(f"{result['dataset']} test accuracy: {result['accuracy']:.2%}")
    for name, acc in result.get("per_class_accuracy", {}).items():
        lines.append(f"  class {name}: {acc:.2%}")
    if "checkpoint" in result:
        lines.append(f"trained {result['epochs']} epochs in {result['seconds']:.0f} s; "
                     f"weights: {result['checkpoint']}")
    for m in result.get("masks", []):
        lines.append(f"mask score {m['score']:.3f}, area {m['area']} px -> {m['file']}")
    for r in result.get("results", []):
        if "top_k" in r:
            tops = ", ".join(f"{t['class']} ({t['probability']:.1%})" for t in r["top_k"])
            lines.append(f"{r['path']}: {tops}")
        else:
            lines.append(f"{r['path']}: {r['prediction']} ({r['probability']:.1%}) -> "
                         f"{r['picture']}")
    files = result.get("files", {})
    if not result.get("results") and not result.get("masks"):
        lines += [f"wrote {f}" for f in (files.values() if isinstance(files, dict) else files)]
    if "index" in result:
        lines.append(f"open {result['index']} to see them all")
    return lines


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        result = command(args)
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 alone reports
            return 0
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            print("\n".join(_human(result)))
        return 3 if result.get("skipped") else 0

    return run


def _lazy(module: str, name: str) -> Command:
    """Import a command's module only when it runs, so `attnvision --help` stays instant."""
    def command(args: argparse.Namespace) -> dict[str, Any]:
        import importlib

        return getattr(importlib.import_module(f"attnvision.commands.{module}"), name)(args)

    return command


def _common(p: argparse.ArgumentParser, command: Command) -> None:
    p.add_argument("--json", action="store_true",
                   help="print one JSON document with the results on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run(command))


def _precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: autocast, about 2x faster on CPUs with AVX-512 BF16 or AMX "
                        "(default: fp32)")


def _img_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--img-size", type=int, metavar="PIXELS",
                   help="run the model at this input side, a multiple of its patch size "
                        "(default: the checkpoint's own); the position weights are resampled: "
                        "larger sees small objects better and encodes slower")


def _sub(parent: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    return parent.add_parser(name, help=help, description=help)


def _training(p: argparse.ArgumentParser, *, epochs: str, batch_size: str, lr: str,
              weight_decay: float, warmup_epochs: float) -> None:
    """The options of the shared training loop, with each model's recipe as defaults."""
    p.add_argument("--epochs", type=int, help=epochs)
    p.add_argument("--batch-size", type=int, help=batch_size)
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {lr})")
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--warmup-epochs", type=float, default=warmup_epochs)
    p.add_argument("--amp", choices=["none", "bf16"], default="none",
                   help="bf16 autocast (fast on CPUs with AVX-512 BF16 / AMX, and on GPUs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder for checkpoints and metrics")
    p.add_argument("--no-resume", action="store_true",
                   help="start over even if --out holds an interrupted run")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnvision",
                     description="Attention models for image analysis, from patch tokens to "
                                 "Segment Anything.")
    parser.add_argument("--version", action="version", version=f"attnvision {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = _sub(sub, "demo", "run every capability on built-in examples and write the pictures "
                          "with an index.html")
    p.add_argument("--out", default="attnvision-demo", help="output folder")
    _common(p, _lazy("demo", "demo"))

    p = _sub(sub, "figures", "write the course's figures (positional encoding, P.P^T, patch "
                             "grid, attention maps) as PNG files")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--image", help="image to cut into patches (default: built-in astronaut)")
    p.add_argument("--patch-size", type=int, default=16, help="patch width P in pixels")
    p.add_argument("--size", type=int, default=224,
                   help="the image is centre-cropped and resized to SIZE x SIZE")
    _common(p, _lazy("course", "figures"))

    train = _sub(sub, "train", "train a model").add_subparsers(
        dest="model", metavar="MODEL", required=True, parser_class=_Parser)
    p = _sub(train, "vit", "train a ViT classifier on an offline dataset")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], required=True)
    p.add_argument("--config", help="ViT config (default: vit_digits or vit_mnist)")
    _training(p, epochs="default: the dataset's recipe (100 / 50)",
              batch_size="default: the dataset's recipe (32 / 64)", lr="1e-3",
              weight_decay=0.05, warmup_epochs=3.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    _common(p, _lazy("vit", "train"))

    p = _sub(train, "sam", "train SAM with simulated clicks (points, boxes, then points on the "
                           "errors), on synthetic scenes or a COCO-format dataset; fine-tune an "
                           "official checkpoint with --init and --freeze")
    p.add_argument("--model", choices=SAM_SIZES, dest="size",
                   help="SAM size (default: sam_tiny, or read from --init)")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights (e.g. sam_vit_b_01ec64.pth)")
    p.add_argument("--freeze", metavar="PARTS",
                   help="comma-separated parts kept fixed: image_encoder, prompt_encoder, "
                        "mask_decoder (e.g. --freeze image_encoder)")
    p.add_argument("--img-size", type=int, metavar="PIXELS",
                   help="the model's input side, a multiple of 16 (default: the size's own, "
                        "or --init's); with --init at another size its position weights are "
                        "resampled to the new grid")
    p.add_argument("--coco", metavar="ANNOTATIONS",
                   help="train on a COCO-format dataset: its annotations JSON (polygons or "
                        "RLE); default: synthetic scenes")
    p.add_argument("--images", help="folder of the COCO images (default: the JSON's folder)")
    p.add_argument("--val-coco", metavar="ANNOTATIONS", help="COCO annotations to evaluate on")
    p.add_argument("--val-images", help="folder of the --val-coco images")
    p.add_argument("--scenes", type=int, help="synthetic training scenes per epoch (default "
                                              "6000)")
    p.add_argument("--first-scene", type=int, default=0,
                   help="train on synthetic scenes FIRST.. (default 0): a later stage, "
                        "started with --init, can see scenes the first one never saw")
    p.add_argument("--scene-style", default="standard", metavar="STYLE",
                   help="standard (default); varied: objects from 0.05 to 0.45 of the side, "
                        "textures twice as deep; repeated: 5-14 look-alike objects apart; "
                        "packed: look-alikes nearly touching in a grid of 9-42 cells; mixed: "
                        "standard, varied or repeated (0.4 / 0.3 / 0.3); or your own shares, "
                        "e.g. standard=0.7,repeated=0.3 (evaluation keeps the standard scenes)")
    p.add_argument("--eval-scenes", type=int, default=64,
                   help="synthetic test scenes evaluated after each epoch (0: none)")
    p.add_argument("--rounds", type=int, default=3,
                   help="prompting rounds per object: the first prompt, then clicks on errors")
    p.add_argument("--encode-once", action="store_true",
                   help="with --freeze image_encoder: encode every training image once, "
                        "before training, and train on the stored embeddings (no image "
                        "augmentation; 9x faster steps for vit_b on a CPU, 1.2x for sam_tiny)")
    p.add_argument("--text", action="store_true",
                   help="also train text prompts on the scenes' descriptions (needs "
                        "attnvision[text]; adds a text projection to an --init model)")
    p.add_argument("--text-share", type=float, default=0.5,
                   help="with --text: share of steps prompted by phrases")
    _training(p, epochs="default: 7 (synthetic) / 10 (COCO)",
              batch_size="images per step (default: 8 / 2)", lr="1e-3 / 1e-4",
              weight_decay=0.1, warmup_epochs=0.5)
    p.add_argument("--export", metavar="PATH",
                   help="also write the best epoch's weights in float16 to PATH (how the "
                        "shipped sam_tiny was made)")
    _common(p, _lazy("sam_train", "train"))

    evaluate = _sub(sub, "eval", "evaluate a model").add_subparsers(
        dest="model", metavar="MODEL", required=True, parser_class=_Parser)
    p = _sub(evaluate, "vit", "accuracy, per-class accuracy and confusion matrix of a ViT")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], default="mnist5k")
    p.add_argument("--out", default=".", help="folder for the confusion-matrix picture")
    _common(p, _lazy("vit", "evaluate"))
    p = _sub(evaluate, "sam", "SAM's mIoU on held-out synthetic scenes (1 click, 3 clicks, box, "
                              "box zoomed in) and on scikit-image's coins and horse, with "
                              "pictures")
    p.add_argument("--checkpoint", help="SAM weights (default: the shipped sam_tiny)")
    p.add_argument("--model", choices=SAM_SIZES, dest="size",
                   help="SAM size (default: read from the file)")
    p.add_argument("--scenes", type=int, default=100, help="synthetic test scenes")
    p.add_argument("--first", type=int, default=1000,
                   help="first test scene (training picks its best epoch on scenes 0..63, "
                        "so the report starts past them)")
    p.add_argument("--modes", default="point,points3,box,box_zoom",
                   help="comma-separated prompts to measure on the scenes (default: all; "
                        "box_zoom encodes one window per object: drop it for a big model "
                        "on a CPU)")
    p.add_argument("--scene-style", default="standard", metavar="STYLE",
                   help="style of the synthetic test scenes, as for train sam (default "
                        "standard; packed: trays of nearly touching look-alikes, where a "
                        "click must keep one object)")
    p.add_argument("--out", default=".", help="folder for the pictures")
    _img_size(p)
    _common(p, _lazy("sam_train", "evaluate"))

    p = _sub(sub, "classify", "top-k classes of images with a ViT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--top-k", type=int, default=3)
    _common(p, _lazy("vit", "classify"))

    p = _sub(sub, "segment", "SAM masks of an image from point and box prompts")
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
                   help="keep SAM's 3 ambiguous masks (default: 1 mask)")
    p.add_argument("--out", required=True, help="folder for the masks, overlay and JSON")
    _img_size(p)
    _precision(p)
    p.add_argument("--cache-dir", help="embedding cache folder (default: $ATTNVISION_CACHE or "
                                       "~/.cache/attnvision/embeddings)")
    p.add_argument("--no-cache", action="store_true",
                   help="always encode the image; read and write no embedding cache")
    _common(p, _lazy("sam", "segment"))

    p = _sub(sub, "segment-all", "SAM masks of everything in images or folders, as one COCO "
                                 "JSON file with an overlay per image (resumes where it "
                                 "stopped)")
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
    _img_size(p)
    _precision(p)
    _common(p, _lazy("segment_all", "segment_all"))

    p = _sub(sub, "export-onnx", "SAM's prompt decoder (the official ONNX inputs) and image "
                                 "encoder as ONNX files, checked against PyTorch")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--out", required=True, help="folder for the .onnx files and sam_onnx.json")
    p.add_argument("--quantize", action="store_true",
                   help="also write sam_decoder_quantized.onnx (8-bit weights, 1/4 the size)")
    p.add_argument("--encoder", action=argparse.BooleanOptionalAction, default=True,
                   help="also write sam_encoder.onnx (default: yes; minutes for vit_h)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset of the decoder, 14 to 20 (the encoder's is at least 18)")
    p.add_argument("--return-single-mask", action="store_true",
                   help="the decoder returns only the best mask (the official option)")
    p.add_argument("--use-stability-score", action="store_true",
                   help="score masks by stability instead of predicted IoU (official option)")
    _common(p, _lazy("export_onnx", "export_onnx"))

    p = _sub(sub, "serve", "the click-to-segment web app: open an image in the browser, click "
                           "objects, download masks (PNG, COCO JSON)")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours "
                                        "(without it the page says how to load one)")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback needs --token")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--token", help="bearer token every API call must carry (or set "
                                   "ATTNVISION_TOKEN)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow this origin to call the API from its pages (repeatable; "
                        "default: none)")
    p.add_argument("--data-dir", help="folder for uploaded images (default: "
                                      "~/.cache/attnvision/web)")
    p.add_argument("--cache-mb", type=float, default=512,
                   help="memory for image embeddings (vit_b: 18 MB each, with the decoder's "
                        "image-only work); older ones are "
                        "read back from the disk cache")
    p.add_argument("--max-upload-mb", type=float, default=25, help="largest upload accepted")
    p.add_argument("--max-megapixels", type=float, default=40,
                   help="largest image accepted, in millions of pixels")
    p.add_argument("--points-per-side", type=int, default=16,
                   help="segment everything prompts an N x N grid of points")
    _img_size(p)
    _precision(p)
    _common(p, _lazy("serve", "serve"))

    explain = _sub(sub, "explain", "show where a model looks").add_subparsers(
        dest="model", metavar="MODEL", required=True, parser_class=_Parser)
    p = _sub(explain, "vit", "attention rollout and class-token attention over images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--out", required=True, help="folder for the pictures")
    _common(p, _lazy("vit", "explain"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    name = " ".join(filter(None, [args.command, getattr(args, "model", None)]))
    try:
        return func(args)
    except UserError as e:
        print(f"attnvision {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnvision: interrupted", file=sys.stderr)
        return 130
