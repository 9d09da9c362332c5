"""``attnvision train sam`` and ``attnvision eval sam``.

Training runs :class:`~attnvision.sam.training.InteractiveSam` (simulated clicks) through the
training loop every model shares (AdamW, warm-up + cosine, bf16 autocast, atomic checkpoints,
resume, torchrun). Without ``--coco`` it trains on synthetic scenes and evaluates on the test
split's; with ``--coco`` on a user's COCO-format dataset, e.g. fine-tuning an official
checkpoint's decoder: ``--init sam_vit_b_01ec64.pth --freeze image_encoder``.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnvision.commands.options import (
    SAM_SIZES,
    add_command,
    check_resumable,
    common,
    img_size_option,
    parse_freeze,
    train_log,
    training_options,
)
from attnvision.errors import UserError

if TYPE_CHECKING:
    import torch

    from attnvision.sam.model import Sam

PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")
# The recipe of the shipped sam_tiny (benchmarks/RESULTS.md, "the shipped small SAM").
SYNTHETIC_RECIPE: dict[str, Any] = {"epochs": 7, "scenes": 6000, "batch_size": 8, "lr": 1e-3}
COCO_RECIPE: dict[str, Any] = {"epochs": 10, "batch_size": 2, "lr": 1e-4}
EVAL_MODES = ("point", "box")  # per-epoch evaluation: the two first prompts


def register_train(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "sam", "train SAM with simulated clicks (points, boxes, then points "
                                   "on the errors), on synthetic scenes or a COCO-format "
                                   "dataset; fine-tune an official checkpoint with --init and "
                                   "--freeze")
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
                        "packed: look-alikes nearly touching in a grid of 9-42 cells; large: "
                        "one object up to the whole frame or cut by the border (often an "
                        "animal silhouette) under smaller ones, on plain, textured or photo "
                        "backgrounds; mixed: "
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
    training_options(p, epochs="default: 7 (synthetic) / 10 (COCO)",
                     batch_size="images per step (default: 8 / 2)", lr="1e-3 / 1e-4",
                     weight_decay=0.1, warmup_epochs=0.5)
    p.add_argument("--export", metavar="PATH",
                   help="also write the best epoch's weights in float16 to PATH (how the "
                        "shipped sam_tiny was made)")
    common(p, train)


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "sam", "SAM's mIoU on held-out synthetic scenes (1 click, 3 clicks, "
                                   "box, box zoomed in) and on scikit-image's coins and horse, "
                                   "with pictures")
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
    img_size_option(p)
    common(p, evaluate)


def sam_of(module: torch.nn.Module) -> Sam:
    """A Sam sharing the parts (and device) of a training module, or a Sam itself."""
    from attnvision.sam.model import Sam

    if isinstance(module, Sam):
        return module
    sam = Sam(module.image_encoder, module.prompt_encoder, module.mask_decoder,
              pixel_mean=tuple(module.pixel_mean.flatten().tolist()),
              pixel_std=tuple(module.pixel_std.flatten().tolist()))
    return sam.to(module.pixel_mean.device)


def _datasets(args: argparse.Namespace, size: int):
    from attnvision.sam.training_data import CocoDataset, SceneDataset

    if args.text and args.coco is not None:
        raise UserError("--text trains on the synthetic scenes' descriptions: drop --coco")
    if args.coco is None:
        if args.val_coco is not None:
            raise UserError("--val-coco goes with --coco")
        scenes = SYNTHETIC_RECIPE["scenes"] if args.scenes is None else args.scenes
        if scenes < 1 or args.eval_scenes < 0 or args.first_scene < 0:
            raise UserError("--scenes must be >= 1, --eval-scenes and --first-scene >= 0")
        style = "" if args.scene_style == "standard" else f" ({args.scene_style})"
        first = args.first_scene
        span = f"{scenes}" if first == 0 else f"{scenes} ({first}-{first + scenes - 1})"
        return (SceneDataset("train", size, scenes, first, attributes=args.text,
                             style=args.scene_style),
                SceneDataset("test", size, args.eval_scenes) if args.eval_scenes else None,
                f"{span} synthetic scenes{style} (train split), {args.eval_scenes} test "
                "scenes")
    train = CocoDataset(args.coco, args.images, size)
    val = CocoDataset(args.val_coco, args.val_images, size) if args.val_coco else None
    return train, val, f"{len(train)} COCO images from {args.coco}" + (
        f", {len(val)} for evaluation" if val else "")


def _model(args: argparse.Namespace) -> tuple[Sam, str, dict[str, Any]]:
    """The model to train, its size name and the build options our files record for it."""
    import torch

    from attnvision.sam import build_sam
    from attnvision.text.sentence_encoder import TEXT_DIM

    torch.manual_seed(args.seed)  # the initial weights are part of the run's seed
    if args.init is None:
        sam = build_sam(args.size or "sam_tiny", img_size=args.img_size,
                        text_dim=TEXT_DIM if args.text else None)
    else:
        sam = build_sam(args.size, args.init, img_size=args.img_size)
        train_log(f"attnvision train sam: starting from {args.init}")
        if args.text and sam.prompt_encoder.text_projection is None:
            sam.prompt_encoder.add_text(TEXT_DIM)  # the rest of the model keeps its weights
            train_log("attnvision train sam: added a new text projection to the prompt encoder")
    build = dict(sam.build_options)
    if sam.prompt_encoder.text_dim is not None:
        build["text_dim"] = sam.prompt_encoder.text_dim
    return sam, sam.size_name, build


def _memory_bytes() -> int | None:
    """The machine's physical memory, where the system says (Linux, macOS)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.files import ensure_dir
    from attnvision.sam.checkpoints import save_sam
    from attnvision.sam.evaluation import dataset_miou, text_miou
    from attnvision.sam.training import InteractiveSam
    from attnvision.sam.training_data import EncodedDataset, SceneAugment
    from attnvision.train import ddp
    from attnvision.train.loop import TrainConfig, fit
    from attnvision.weights import read_weights

    recipe = SYNTHETIC_RECIPE if args.coco is None else COCO_RECIPE
    epochs = recipe["epochs"] if args.epochs is None else args.epochs
    batch_size = recipe["batch_size"] if args.batch_size is None else args.batch_size
    lr = recipe["lr"] if args.lr is None else args.lr
    if epochs < 1 or batch_size < 1 or lr <= 0 or args.rounds < 1:
        raise UserError("--epochs, --batch-size and --rounds must be >= 1 and --lr > 0")
    if not 0 < args.text_share <= 1:
        raise UserError(f"--text-share must be in (0, 1], got {args.text_share}")
    freeze = parse_freeze(args.freeze, PARTS, "nothing")
    if args.encode_once and "image_encoder" not in freeze:
        raise UserError("--encode-once keeps one embedding per image, which a trained encoder "
                        "would outdate: add --freeze image_encoder")
    out = ensure_dir(args.out)
    sam, name, build = _model(args)
    train_set, eval_set, described = _datasets(args, sam.img_size)
    for part in freeze:
        getattr(sam, part).requires_grad_(False)
    trained = sum(p.numel() for p in sam.parameters() if p.requires_grad)
    train_log(f"attnvision train sam: {name}, {trained:,} of "
        f"{sum(p.numel() for p in sam.parameters()):,} parameters trained"
        f"{' (frozen: ' + ', '.join(freeze) + ')' if freeze else ''}; {described}")
    augment = SceneAugment(flips=args.coco is None)
    if args.encode_once:
        grid = sam.prompt_encoder.image_embedding_size
        need = len(train_set) * sam.prompt_encoder.embed_dim * grid[0] * grid[1] * 2  # float16
        memory = _memory_bytes()
        if memory is not None and need > memory // 2:
            raise UserError(f"--encode-once would keep {need / 2**30:.1f} GiB of embeddings in "
                            f"memory ({len(train_set)} images), more than half of this "
                            f"machine's {memory / 2**30:.0f} GiB: train on fewer images, or "
                            "drop --encode-once")
        device = ddp.resolve_device(None)
        sam.image_encoder.to(device)
        train_set = EncodedDataset(train_set, sam.image_encoder, sam.pixel_mean.to(device),
                                   sam.pixel_std.to(device), batch_size=batch_size,
                                   progress=not args.quiet)
        sam.image_encoder.to("cpu")
        augment = None  # an embedding cannot be flipped or recoloured
    net = InteractiveSam(sam, rounds=args.rounds, text_share=args.text_share if args.text else 0)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                         warmup_epochs=min(args.warmup_epochs, epochs / 2),
                         weight_decay=args.weight_decay, seed=args.seed, amp=args.amp,
                         label_smoothing=0.0)

    def evaluate(model: torch.nn.Module, dataset) -> dict:
        model = sam_of(model).eval()
        result = dataset_miou(model, dataset, EVAL_MODES)
        if args.text:  # the text phrases of the same scenes count as much as the clicks
            text = text_miou(model, len(dataset), dataset.first)
            result.update(miou_text=text["miou_text"], text_right=text["text_right"])
            result["miou"] = round((result["miou"] * len(EVAL_MODES) + text["miou_text"])
                                   / (len(EVAL_MODES) + 1), 4)
        return result

    metadata = {"format": "attnvision.sam", "model": name, "data": described, "init": args.init,
                "freeze": list(freeze), "rounds": args.rounds, "encode_once": args.encode_once,
                "text_share": args.text_share if args.text else 0}
    if not args.no_resume:
        check_resumable(out, metadata, "SAM")
    result = fit(net, train_set, eval_set, config, out, augment=augment,
                 loss_fn=lambda loss, _targets: loss, evaluate=evaluate, best_metric="miou",
                 progress=not args.quiet, resume=not args.no_resume, metadata=metadata)
    files = {"checkpoint": out / "model.safetensors"}
    if ddp.is_main_process():  # self-describing files that build_sam and --checkpoint read
        save_sam(sam, files["checkpoint"], name, build,
                 extra={"epoch": result["epoch"], "eval": result["eval"], "data": described})
        if result["best"] is not None:
            files["best"] = out / "best.safetensors"
            best = copy.deepcopy(sam_of(sam))
            best.load_state_dict(read_weights(files["best"])[0])
            save_sam(best, files["best"], name, build,
                     extra={"epoch": result["best"]["epoch"], "eval": result["best"],
                            "data": described})
        if args.export is not None:  # the best epoch's weights, half the size
            chosen = files.get("best", files["checkpoint"])
            files["export"] = Path(args.export)
            # The weights just saved to ``chosen``, already in memory: not read back again.
            export = best if "best" in files else sam_of(sam)
            save_sam(export, files["export"], name, build, dtype=torch.float16,
                     extra={"from": chosen.name, "data": described, "seed": args.seed,
                            "eval": result["best"] if "best" in files else result["eval"]})
            train_log(f"attnvision train sam: wrote {files['export']} (float16, from "
                      f"{chosen.name}, {files['export'].stat().st_size / 1e6:.1f} MB)")
    return {"command": "train sam", "model": name, "data": described, "frozen": list(freeze),
            "parameters_trained": trained, "epochs": result["epochs"],
            "seconds": result["seconds"], "train_loss": result["train_loss"],
            "eval": result["eval"], "best": result["best"],
            "files": {k: str(v) for k, v in files.items()}, "history": result["history"]}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.commands.sam import load_sam
    from attnvision.data.scenes import make_scene
    from attnvision.files import ensure_dir
    from attnvision.sam.evaluation import MODES, photo_ious, synthetic_miou, text_miou
    from attnvision.viz.sam_eval import evaluation_pictures

    if args.scenes < 1 or args.first < 0:
        raise UserError("--scenes must be >= 1 and --first >= 0")
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"--modes {args.modes!r}: choose from {', '.join(MODES)} "
                        "(comma-separated)")
    # A bad style or no scikit-image: one line now, before --out is made.
    make_scene(0, "test", size=16, style=args.scene_style)
    sam = load_sam(args.checkpoint, args.size, img_size=args.img_size)
    out = ensure_dir(args.out)
    synthetic = synthetic_miou(sam, args.scenes, args.first, modes, progress=not args.quiet,
                               style=args.scene_style)
    photos = photo_ious(sam)
    has_text = sam.prompt_encoder.text_projection is not None
    text = (text_miou(sam, args.scenes, args.first, progress=not args.quiet,
                      style=args.scene_style) if has_text else None)
    files = evaluation_pictures(sam, out, zoom="box_zoom" in modes, style=args.scene_style)
    return {"command": "eval sam", "checkpoint": args.checkpoint or "shipped sam_tiny",
            "scene_style": args.scene_style, "synthetic_test": synthetic, "text_test": text,
            "photos": photos, "files": {k: str(v) for k, v in files.items()}}

