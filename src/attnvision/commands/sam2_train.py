"""``attnvision train sam2``: SAM 2 trained on video clips with simulated prompts.

Training runs :class:`~attnvision.sam2.training.SAM2Train` (a click, box or mask on frame 0,
tracking with memory, correction clicks on later frames) through the training loop every model
shares (AdamW, warm-up + cosine, bf16 autocast, atomic checkpoints, resume, torchrun). Without
``--annotations`` it trains on synthetic clips (:mod:`attnvision.data.moving_scenes`, exact
masks); with ``--annotations`` on a user's DAVIS-format folder, e.g. fine-tuning an official
checkpoint's video parts: ``--init sam2.1_hiera_tiny.pt --freeze image_encoder``. Without
``--init`` the model is ``sam2_tiny`` started from the shipped SAM ``sam_tiny``
(:func:`~attnvision.sam2.from_sam.sam2_from_sam`: its image encoder, prompt encoder and mask
decoder, the video parts fresh). ``--model sam2_tiny_hr --init sam2_tiny.safetensors`` grows a
trained ``sam2_tiny`` by the pixel stem (:func:`~attnvision.sam2.from_sam.with_pixel_stem`:
the same masks to start with); ``--freeze image_encoder.trunk`` then keeps the ViT fixed and
trains the stem.

After each epoch (``--eval-every``) the model tracks the objects of ``--eval-clips``
validation clips from one click on frame 0 (:mod:`attnvision.sam2.synthetic_eval`): train-split
clips from seed :data:`~attnvision.sam2.training_data.VALIDATION_FIRST_SEED` on, which no run
trains on. ``best.safetensors`` holds the epoch with the highest J&F of that measure (the rule
that chooses a shipped epoch, fixed before any run); the test split's clips, on photos no clip
here uses, stay for the figures reported with ``eval sam2 --synthetic``. ``model.safetensors``
the last epoch. Both are our SAM 2 files (``save_sam2``), which ``build_sam2(None, path)``, the
predictors and ``--checkpoint`` of the other commands read.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnvision.commands.options import (
    add_command,
    common,
    parse_freeze,
    resume_epochs,
    train_log,
    training_options,
)
from attnvision.errors import UserError

if TYPE_CHECKING:
    from attnvision.sam2.model import SAM2

# The model's parts (SAM2's module names), any of which --freeze keeps fixed; the image
# encoder's trunk alone leaves a pixel stem (sam2_tiny_hr) or a Hiera's neck to train.
PARTS = ("image_encoder", "image_encoder.trunk", "sam_prompt_encoder", "sam_mask_decoder",
         "memory_attention", "memory_encoder", "mask_downsample", "obj_ptr_proj",
         "obj_ptr_tpos_proj")
DEFAULT_MODEL = "sam2_tiny"
SYNTHETIC_RECIPE: dict[str, Any] = {"epochs": 10, "clips": 2000, "batch_size": 2, "lr": 1e-4}
DAVIS_RECIPE: dict[str, Any] = {"epochs": 20, "batch_size": 2, "lr": 2e-5}
EVAL_CLIPS, EVAL_FRAMES = 16, 16


def register_train(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "sam2", "train SAM 2 on video clips: a click, box or mask on the "
                                    "first frame, tracking with memory, correction clicks on "
                                    "later frames; on synthetic clips or a DAVIS-format "
                                    "folder; best.safetensors is the epoch with the highest "
                                    "J&F from one click on validation clips")
    # Not dest="model": that holds the train group's MODEL ("sam2"), which names the command
    # in error messages.
    p.add_argument("--model", dest="config", metavar="NAME",
                   help=f"SAM 2 model (default: {DEFAULT_MODEL}, or read from --init), e.g. "
                        "sam2.1_hiera_tiny")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights: an official sam2.1_hiera_*.pt or ours "
                        "(default: sam2_tiny from the shipped SAM sam_tiny, video parts new)")
    p.add_argument("--freeze", metavar="PARTS",
                   help=f"comma-separated parts kept fixed: {', '.join(PARTS)} (e.g. --freeze "
                        "image_encoder)")
    p.add_argument("--lr-scale", metavar="PART=FACTOR",
                   help="comma-separated parts (any module of the model) trained at FACTOR times "
                        "the learning rate, e.g. a part grown from zero beside trained ones: "
                        "image_encoder.stem=10,sam_mask_decoder.conv_s0=10")
    p.add_argument("--annotations", metavar="DIR",
                   help="train on a DAVIS-format folder (JPEGImages/ and Annotations/, every "
                        "frame of a window annotated): random windows of --frames frames; "
                        "default: synthetic clips")
    p.add_argument("--clips", type=int,
                   help=f"synthetic training clips per epoch (default "
                        f"{SYNTHETIC_RECIPE['clips']})")
    p.add_argument("--first-clip", type=int, default=0,
                   help="train on synthetic clips FIRST.. (default 0): a later stage, started "
                        "with --init, can see clips the first one never saw")
    p.add_argument("--frames", type=int, default=8,
                   help="frames per training clip (default 8, as the official recipe)")
    p.add_argument("--eval-clips", type=int, default=EVAL_CLIPS,
                   help="validation clips (unseen, train split) tracked from one click after each "
                        f"evaluated epoch (default {EVAL_CLIPS}; 0: no evaluation, no "
                        "best.safetensors)")
    p.add_argument("--eval-frames", type=int, default=EVAL_FRAMES,
                   help=f"frames of each validation clip (default {EVAL_FRAMES}, at least 5)")
    p.add_argument("--eval-every", type=int, default=1,
                   help="epochs between evaluations (the last epoch is always evaluated)")
    training_options(p, epochs="default: 10 (synthetic) / 20 (DAVIS)",
                     batch_size="clips per step (default 2)", lr="1e-4 / 2e-5",
                     weight_decay=0.05, warmup_epochs=0.5)
    p.add_argument("--export", metavar="PATH",
                   help="also write the best epoch's weights in float16 to PATH (how the "
                        "shipped sam2_tiny was made)")
    common(p, train)


def _parse_lr_scale(text: str | None) -> tuple[tuple[str, float], ...]:
    """``--lr-scale a=10,b.c=3``: (part, factor) pairs, checked against the model later."""
    pairs = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        part, _, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not part or not value > 0:
            raise UserError(f"--lr-scale {item!r}: give PART=FACTOR with a factor > 0, e.g. "
                            "image_encoder.stem=10")
        if part in (named for named, _ in pairs):
            raise UserError(f"--lr-scale names {part!r} twice: give each part one factor")
        pairs.append((part, value))
    return tuple(pairs)


def _check_lr_scale(pairs: tuple[tuple[str, float], ...], model: SAM2) -> None:
    """Each --lr-scale part is a module of the model with something left to train."""
    for part, _ in pairs:
        try:
            module = model.get_submodule(part)
        except AttributeError:
            raise UserError(f"--lr-scale: the model has no part {part!r}; name one of its "
                            f"modules, e.g. {', '.join(PARTS[:4])}") from None
        if not any(p.requires_grad for p in module.parameters()):
            raise UserError(f"--lr-scale: {part!r} is frozen (--freeze) and has nothing to "
                            "train; drop it from one of the two options")


def _check_numbers(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Any]:
    """The run's numbers, each checked, with the recipe's defaults filled in."""
    from attnvision.data.moving_scenes import MIN_OCCLUSION_FRAMES
    from attnvision.sam2.training_data import VALIDATION_FIRST_SEED

    chosen = {k: recipe[k] if getattr(args, k) is None else getattr(args, k)
              for k in ("epochs", "batch_size", "lr")}
    clips = None
    if args.annotations is None:
        clips = SYNTHETIC_RECIPE["clips"] if args.clips is None else args.clips
    elif args.clips is not None:
        raise UserError("--clips counts synthetic clips: drop it with --annotations (each "
                        "sequence gives one clip per epoch)")
    checks = [
        (chosen["epochs"] >= 1 and chosen["batch_size"] >= 1,
         "--epochs and --batch-size must be >= 1"),
        (chosen["lr"] > 0, f"--lr must be > 0, got {chosen['lr']}"),
        (args.frames >= 2, f"--frames {args.frames}: give 2 or more (a prompted frame and at "
                           "least one tracked from its memory)"),
        (clips is None or clips >= 1, f"--clips must be >= 1, got {clips}"),
        (args.first_clip >= 0, f"--first-clip must be >= 0, got {args.first_clip}"),
        (clips is None or args.first_clip + clips <= VALIDATION_FIRST_SEED,
         f"--first-clip + --clips must stay below {VALIDATION_FIRST_SEED}: the clips from "
         "there on are the validation clips that choose the best epoch"),
        (args.eval_clips >= 0, f"--eval-clips must be >= 0, got {args.eval_clips}"),
        (args.eval_frames >= MIN_OCCLUSION_FRAMES,
         f"--eval-frames {args.eval_frames}: give {MIN_OCCLUSION_FRAMES} or more (half the "
         "held-out clips hide an object for 3 frames and show it again)"),
        (args.eval_every >= 1, f"--eval-every must be >= 1, got {args.eval_every}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    return {**chosen, "clips": clips}


def _grows(config: str | None, init: str) -> str | None:
    """The config name of ``init``'s file when ``config`` is that model plus the pixel stem
    (a trained sam2_tiny grown into sam2_tiny_hr), else None."""
    from dataclasses import replace

    from attnvision.sam2.checkpoints import read_sam2_weights
    from attnvision.sam2.configs import SAM2_CONFIGS, resolve_name

    name = resolve_name(config) if config is not None else None
    if name is None or not SAM2_CONFIGS[name].pixel_stem:
        return None
    _, recorded, _ = read_sam2_weights(init, name)
    plain = replace(SAM2_CONFIGS[name], pixel_stem=False, use_high_res_features_in_sam=False)
    return recorded if recorded in SAM2_CONFIGS and SAM2_CONFIGS[recorded] == plain else None


def _model(args: argparse.Namespace) -> tuple[SAM2, str, str]:
    """The model to train, its config name and where its weights come from."""
    import torch

    from attnvision.sam2.build import build_sam2
    from attnvision.sam2.configs import SAM2_CONFIGS, resolve_name

    if args.config is not None and resolve_name(args.config) is None:
        raise UserError(f"unknown SAM 2 model {args.config!r}: choose one of "
                        f"{', '.join(SAM2_CONFIGS)}")
    torch.manual_seed(args.seed)  # the fresh parts' weights are part of the run's seed
    if args.init is not None:
        grow = _grows(args.config, args.init)
        model = build_sam2(grow or args.config, args.init)
        source = str(args.init)
        if grow is not None:
            from attnvision.sam2.from_sam import with_pixel_stem

            model = with_pixel_stem(model, resolve_name(args.config) or args.config)
            source += f" ({grow}, grown by the pixel stem)"
    else:
        from attnvision.sam.pretrained import load_shipped
        from attnvision.sam2.from_sam import sam2_from_sam

        name = resolve_name(args.config or DEFAULT_MODEL)
        model = sam2_from_sam(load_shipped(), name)
        source = "the shipped sam_tiny (video parts new)"
    assert model.size_name is not None
    train_log(f"attnvision train sam2: {model.size_name} from {source}")
    return model, model.size_name, source


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.sam2.checkpoints import save_sam2
    from attnvision.sam2.training import SAM2Train, evaluate_tracking
    from attnvision.sam2.training_data import (
        ClipAugment,
        DavisClips,
        HeldOutClips,
        SyntheticClips,
    )
    from attnvision.train import ddp
    from attnvision.train.loop import TrainConfig, fit
    from attnvision.weights import read_weights

    recipe = SYNTHETIC_RECIPE if args.annotations is None else DAVIS_RECIPE
    numbers = _check_numbers(args, recipe)
    freeze = parse_freeze(args.freeze, PARTS, "only the learned embeddings")
    lr_scale = _parse_lr_scale(args.lr_scale)
    if args.annotations is not None and not Path(args.annotations).is_dir():
        raise UserError(f"annotations folder not found: {args.annotations} (a DAVIS-format "
                        "folder with JPEGImages/ and Annotations/)")
    if Path(args.out).is_file():
        raise UserError(f"output folder {args.out} is an existing file: choose another --out")
    model, name, source = _model(args)
    size = model.image_size
    if args.annotations is None:
        train_set: SyntheticClips | DavisClips = SyntheticClips(
            numbers["clips"], size, args.frames, args.first_clip, seed=args.seed)
        first = args.first_clip
        span = (f"{numbers['clips']}" if first == 0
                else f"{numbers['clips']} ({first}-{first + numbers['clips'] - 1})")
        described = f"{span} synthetic clips of {args.frames} frames (train split)"
    else:
        train_set = DavisClips(args.annotations, size, args.frames, seed=args.seed)
        described = (f"{train_set.describe()} from {args.annotations}, windows of "
                     f"{args.frames} frames")
        if train_set.skipped:
            train_log(f"attnvision train sam2: left out {len(train_set.skipped)} sequences with "
                f"fewer than {args.frames} consecutive annotated frames: "
                f"{', '.join(train_set.skipped[:5])}{' ...' if len(train_set.skipped) > 5 else ''}")
    eval_set = (HeldOutClips(args.eval_clips, args.eval_frames, size) if args.eval_clips
                else None)
    if eval_set is not None:
        described += (f"; J&F from one click on {args.eval_clips} validation clips of "
                      f"{args.eval_frames} frames")

    for part in freeze:
        model.get_submodule(part).requires_grad_(False)
    _check_lr_scale(lr_scale, model)
    net = SAM2Train(model)
    trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    train_log(f"attnvision train sam2: {trained:,} of {sum(p.numel() for p in net.parameters()):,} "
        f"parameters trained{' (frozen: ' + ', '.join(freeze) + ')' if freeze else ''}; "
        f"{described}")

    config = TrainConfig(epochs=numbers["epochs"], batch_size=numbers["batch_size"],
                         lr=numbers["lr"], warmup_epochs=min(args.warmup_epochs,
                                                             numbers["epochs"] / 2),
                         weight_decay=args.weight_decay, seed=args.seed, amp=args.amp,
                         label_smoothing=0.0, eval_every=args.eval_every, lr_scale=lr_scale)
    recipe_used = {"prompt_shares": list(net.prompt_shares),
                   "second_prompt_share": net.second_prompt_share,
                   "corrected_frames": net.corrected_frames, "frames": args.frames}
    metadata = {"format": "attnvision.sam2", "model": name, "data": described,
                "init": args.init, "freeze": list(freeze), "recipe": recipe_used}
    out, next_epoch = resume_epochs(Path(args.out), metadata, "SAM 2", train_set,
                                    not args.no_resume)

    result = fit(net, train_set, eval_set, config, out, augment=ClipAugment(),
                 loss_fn=lambda loss, _valid: loss, evaluate=evaluate_tracking,
                 best_metric="jf", progress=not args.quiet, resume=not args.no_resume,
                 metadata=metadata, on_epoch_end=next_epoch)

    files = {"checkpoint": out / "model.safetensors"}
    if ddp.is_main_process():  # self-describing files that build_sam2(None, path) reads
        weights = net.sam2
        save_sam2(weights, files["checkpoint"], name,
                  extra={"epoch": result["epoch"], "eval": result["eval"], "data": described})
        if result["best"] is not None:
            files["best"] = out / "best.safetensors"
            best = copy.deepcopy(weights)
            best.load_state_dict(read_weights(files["best"])[0])
            save_sam2(best, files["best"], name,
                      extra={"epoch": result["best"]["epoch"], "eval": result["best"],
                             "data": described})
        if args.export is not None:  # the best epoch's weights, half the size
            chosen = files.get("best", files["checkpoint"])
            files["export"] = Path(args.export)
            # The weights just saved to ``chosen``, already in memory: not read back again.
            export = best if "best" in files else weights
            save_sam2(export, files["export"], name, dtype=torch.float16,
                      extra={"from": chosen.name, "data": described, "seed": args.seed,
                             "eval": result["best"] if "best" in files else result["eval"]})
            train_log(f"attnvision train sam2: wrote {files['export']} (float16, from "
                      f"{chosen.name}, {files['export'].stat().st_size / 1e6:.1f} MB)")
    return {"command": "train sam2", "model": name, "init": source, "data": described,
            "frozen": list(freeze), "parameters_trained": trained,
            "epochs": result["epochs"], "seconds": result["seconds"],
            "train_loss": result["train_loss"], "eval": result["eval"],
            "best": result["best"], "selection": "best.safetensors: the epoch with the "
                                                 "highest validation J&F (one click)",
            "files": {k: str(v) for k, v in files.items()}, "history": result["history"]}
