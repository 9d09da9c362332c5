"""``attnvision train cotracker``: CoTracker3 trained on synthetic videos with exact tracks.

Training runs :class:`~attnvision.cotracker.training.CoTrackerTrain` (every refinement
iteration supervised: Huber on visible tracks, L1 on occluded ones, γ = 0.8 across
iterations, BCE on visibility and on confidence "within 12 px") through the training loop
every model shares (AdamW, warm-up + cosine, bf16 autocast, atomic checkpoints, resume,
torchrun). The data (:mod:`attnvision.cotracker.training_data`): train-split clips of
``--frames`` frames drawn at the model's resolution, objects and camera moving, occlusions,
``--points`` points on objects and background queried at random frames where they show.

The model is ``cotracker_tiny`` (:data:`~attnvision.cotracker.configs.COTRACKER_CONFIGS`:
why that size) unless ``--init`` names a CoTracker3 file to go on from (its widths read from
its shapes; the resolution is the tiny one's unless ``--model-resolution`` says).
The schedule stands in for the official one-cycle (OneCycleLR, 5 % warm-up): a linear
warm-up over ``--warmup-epochs`` (default 5 % of the run), then cosine down to 1e-5.

After each epoch (``--eval-every``) the offline predictor tracks 64 points of frame 0 through
``--eval-clips`` validation clips (train split, seeds from
:data:`~attnvision.cotracker.training_data.VALIDATION_FIRST_SEED`, never trained on, half
with an object hidden for 3+ frames); ``best.safetensors`` is the epoch with the highest
δ_avg there. The test split's clips (``attnvision eval track``, held-out clips) stay
for the figures reported at the end. ``model.safetensors`` and ``best.safetensors`` hold the
official key names, so ``attnvision track --checkpoint best.safetensors --model-resolution
192,256`` runs them, offline or ``--online``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnvision.commands.options import (
    add_command,
    check_out_dir,
    common,
    resume_epochs,
    train_log,
    training_options,
)
from attnvision.errors import UserError

if TYPE_CHECKING:
    from attnvision.cotracker.configs import CoTrackerConfig
    from attnvision.cotracker.training import CoTrackerTrain
    from attnvision.cotracker.training_data import ValidationClips

DEFAULT_MODEL = "cotracker_tiny"
RECIPE: dict[str, Any] = {"epochs": 1, "clips": 1000, "batch_size": 1, "lr": 5e-4}
WEIGHT_DECAY = 1e-5  # the official recipe's (AdamW, lr 5e-4)
WARMUP_SHARE = 0.05  # of the run: the official one-cycle's pct_start
EVAL_CLIPS, EVAL_POINTS, EVAL_SIZE = 16, 64, 256
START_INFO = "start.json"  # --eval-start's figures of the starting weights


def register_train(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "cotracker", "train CoTracker3 on synthetic videos with exact "
                                         "tracks (objects and camera moving, occlusions): "
                                         "points queried at random visible frames, every "
                                         "refinement iteration supervised; best.safetensors "
                                         "is the epoch with the highest δ_avg on validation "
                                         "clips")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights (a CoTracker3 file: ours or the official "
                        f".pth; default: a fresh {DEFAULT_MODEL})")
    p.add_argument("--model-resolution", metavar="H,W",
                   help="the frames' size for the model (default: 192,256, cotracker_tiny's)")
    p.add_argument("--clips", type=int,
                   help=f"synthetic training clips per epoch (default {RECIPE['clips']})")
    p.add_argument("--first-clip", type=int, default=0,
                   help="train on synthetic clips FIRST.. (default 0): a later run, started "
                        "with --init, can see clips the first one never saw")
    p.add_argument("--frames", type=int,
                   help="frames per training clip (default: the model's window, 24 for "
                        "cotracker_tiny)")
    p.add_argument("--points", type=int, default=128,
                   help="query points per clip (default 128)")
    p.add_argument("--iters", type=int, default=4,
                   help="refinement iterations per training step (default 4, as official)")
    p.add_argument("--eval-clips", type=int, default=EVAL_CLIPS,
                   help=f"validation clips (train split, never trained on) tracked after each "
                        f"evaluated epoch (default {EVAL_CLIPS}; 0: no evaluation, no "
                        "best.safetensors)")
    p.add_argument("--eval-every", type=int, default=1,
                   help="epochs between evaluations (the last epoch is always evaluated)")
    p.add_argument("--eval-start", action="store_true",
                   help="also track the validation clips with the starting weights, before "
                        "any step, into OUT/start.json: the figure a later stage must beat, "
                        "at the run's own frame size")
    training_options(p, epochs=f"default: {RECIPE['epochs']}",
                     batch_size=f"clips per step (default {RECIPE['batch_size']})",
                     lr=str(RECIPE["lr"]), weight_decay=WEIGHT_DECAY, warmup_epochs=-1.0)
    p.add_argument("--export", metavar="PATH",
                   help="also write the best epoch's weights in float16 to PATH")
    common(p, train)


def _resolution(text: str | None) -> tuple[int, int] | None:
    from attnvision.commands.track import resolution_value

    return None if text is None else resolution_value(text, example="192,256")


def _check_numbers(args: argparse.Namespace) -> dict[str, Any]:
    """The run's numbers, each checked, with the recipe's defaults filled in."""
    from attnvision.cotracker.training_data import VALIDATION_FIRST_SEED

    chosen = {k: RECIPE[k] if getattr(args, k) is None else getattr(args, k)
              for k in ("epochs", "batch_size", "lr", "clips")}
    checks = [
        (chosen["epochs"] >= 1, f"--epochs must be >= 1, got {chosen['epochs']}"),
        (chosen["batch_size"] >= 1, f"--batch-size must be >= 1, got {chosen['batch_size']}"),
        (chosen["lr"] > 0, f"--lr must be > 0, got {chosen['lr']}"),
        (chosen["clips"] >= 1, f"--clips must be >= 1, got {chosen['clips']}"),
        (args.frames is None or args.frames >= 2,
         f"--frames {args.frames}: give 2 or more (a query frame and one to track to)"),
        (args.points >= 1, f"--points must be >= 1, got {args.points}"),
        (args.iters >= 1, f"--iters must be >= 1, got {args.iters}"),
        (args.first_clip >= 0, f"--first-clip must be >= 0, got {args.first_clip}"),
        (args.first_clip + chosen["clips"] <= VALIDATION_FIRST_SEED,
         f"--first-clip + --clips must stay below {VALIDATION_FIRST_SEED}: the clips from "
         "there on are the validation clips that choose the best epoch"),
        (args.eval_clips >= 0, f"--eval-clips must be >= 0, got {args.eval_clips}"),
        (args.eval_every >= 1, f"--eval-every must be >= 1, got {args.eval_every}"),
        (args.eval_clips > 0 or not args.eval_start,
         "--eval-start tracks the validation clips: give --eval-clips 1 or more"),
        (args.weight_decay >= 0, f"--weight-decay must be >= 0, got {args.weight_decay}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    return chosen


def _model(args: argparse.Namespace, resolution: tuple[int, int] | None
           ) -> tuple[CoTrackerTrain, CoTrackerConfig, str]:
    """The training module, its config and where its weights come from."""
    from dataclasses import replace

    import torch

    from attnvision.cotracker.checkpoints import (
        config_from_weights,
        load_cotracker_weights,
        read_cotracker_weights,
    )
    from attnvision.cotracker.configs import COTRACKER_CONFIGS
    from attnvision.cotracker.training import CoTrackerTrain

    torch.manual_seed(args.seed)  # fresh weights are part of the run's seed
    if args.init is None:
        config = COTRACKER_CONFIGS[DEFAULT_MODEL]
        if resolution is not None:
            config = replace(config, model_resolution=resolution)
        return CoTrackerTrain(config, iters=args.iters), config, f"a fresh {DEFAULT_MODEL}"
    sd = read_cotracker_weights(args.init)
    config = config_from_weights(
        sd, str(args.init), offline=True,
        model_resolution=resolution or COTRACKER_CONFIGS[DEFAULT_MODEL].model_resolution)
    net = CoTrackerTrain(config, iters=args.iters)
    load_cotracker_weights(net, sd, str(args.init))
    return net, config, str(args.init)


def _save(net: CoTrackerTrain, weights: dict, path: Path, extra: dict[str, Any],
          dtype: Any = None) -> None:
    """A CoTracker3 file with the official keys; ``extra`` and the resolution (which the
    weights cannot tell) in its metadata."""
    from safetensors.torch import save_file

    from attnvision.files import atomic_path

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
               .contiguous() for k, v in weights.items()}
    h, w = net.config.model_resolution
    metadata = {"format": "pt", "model_resolution": f"{h},{w}",
                **{k: json.dumps(v) for k, v in extra.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _evaluate_start(net: CoTrackerTrain, clips: ValidationClips,
                    evaluate: Callable[[Any, ValidationClips], dict], out: Path, source: str,
                    size: tuple[int, int], again: bool = False) -> dict[str, Any]:
    """The starting weights' validation figures, kept in OUT/start.json. A stage that starts
    from the package's file at another frame size than the earlier stages trained at can
    only be compared with that file at its own size: this is that figure. A resumed run
    reads it back rather than tracking the clips again (``again``: --no-resume, track them)."""
    from attnvision.files import write_json

    path = out / START_INFO
    if path.is_file() and not again:
        saved = json.loads(path.read_text())
        if saved.get("weights") == source and saved.get("model_resolution") == list(size):
            return saved["start"]
    train_log(f"attnvision train cotracker: tracking the validation clips with {source} "
              "before training (--eval-start)")
    metrics = evaluate(net, clips)  # on an eval-mode copy: net's own mode is untouched
    write_json(path, {"start": metrics, "weights": source, "model_resolution": list(size)})
    return metrics


def train(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    import torch

    from attnvision.cotracker.training import evaluate_tracking, tracking_loss
    from attnvision.cotracker.training_data import SyntheticTracks, ValidationClips
    from attnvision.files import ensure_dir
    from attnvision.train import ddp
    from attnvision.train.loop import TrainConfig, fit
    from attnvision.weights import read_weights

    numbers = _check_numbers(args)
    resolution = _resolution(args.model_resolution)
    check_out_dir(args.out)
    net, config, source = _model(args, resolution)
    frames = args.frames or config.window_len
    train_set = SyntheticTracks(numbers["clips"], config.model_resolution, frames,
                                args.points, args.first_clip, seed=args.seed)
    first = args.first_clip
    span = (f"{numbers['clips']}" if first == 0
            else f"{numbers['clips']} ({first}-{first + numbers['clips'] - 1})")
    h, w = config.model_resolution
    described = (f"{span} synthetic clips of {frames} frames at {h}x{w} (train split), "
                 f"{args.points} points each")
    eval_set = (ValidationClips(args.eval_clips, frames=config.window_len, size=EVAL_SIZE)
                if args.eval_clips else None)
    if eval_set is not None:
        described += (f"; δ_avg of {EVAL_POINTS} points on {args.eval_clips} validation clips "
                      f"of {config.window_len} frames")
    count = sum(p.numel() for p in net.parameters())
    train_log(f"attnvision train cotracker: {count:,} parameters from {source}; {described}")

    epochs = numbers["epochs"]
    warmup = WARMUP_SHARE * epochs if args.warmup_epochs < 0 else args.warmup_epochs
    train_config = TrainConfig(epochs=epochs, batch_size=numbers["batch_size"],
                               lr=numbers["lr"], warmup_epochs=min(warmup, epochs / 2),
                               min_lr=min(1e-5, numbers["lr"]),
                               weight_decay=args.weight_decay, seed=args.seed, amp=args.amp,
                               label_smoothing=0.0, eval_every=args.eval_every)
    model_config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
    metadata = {"format": "attnvision.cotracker", "model": DEFAULT_MODEL if args.init is None
                else "init", "config": model_config, "data": described, "init": args.init,
                "recipe": {"frames": frames, "points": args.points, "iters": args.iters,
                           "first_clip": args.first_clip}}
    out, next_epoch = resume_epochs(Path(args.out), metadata, "CoTracker", train_set,
                                    not args.no_resume)

    def evaluate(module: torch.nn.Module, clips: ValidationClips) -> dict:
        return evaluate_tracking(module, clips, points=EVAL_POINTS)

    start = None
    if args.eval_start and eval_set is not None and ddp.is_main_process():
        start = _evaluate_start(net, eval_set, evaluate, out, source, (h, w),
                                again=args.no_resume)

    result = fit(net, train_set, eval_set, train_config, out, loss_fn=tracking_loss,
                 evaluate=evaluate, best_metric="average_pts_within_thresh",
                 progress=not args.quiet, resume=not args.no_resume, metadata=metadata,
                 on_epoch_end=next_epoch)

    files = {"checkpoint": out / "model.safetensors"}
    if result["best"] is not None:
        files["best"] = out / "best.safetensors"
    if ddp.is_main_process() and args.export is not None:  # the best epoch's, half the size
        chosen = files.get("best", files["checkpoint"])
        files["export"] = Path(args.export)
        ensure_dir(files["export"].parent)
        _save(net, read_weights(chosen)[0], files["export"], dtype=torch.float16,
              extra={"from": chosen.name, "data": described, "seed": args.seed,
                     "eval": result["best"] if "best" in files else result["eval"]})
        train_log(f"attnvision train cotracker: wrote {files['export']} (float16, from "
                  f"{chosen.name}, {files['export'].stat().st_size / 1e6:.1f} MB)")
    return {"command": "train cotracker", "model": metadata["model"], "init": source,
            "parameters": count, "model_resolution": [h, w], "data": described,
            "epochs": result["epochs"], "seconds": result["seconds"],
            "train_loss": result["train_loss"], "start": start, "eval": result["eval"],
            "best": result["best"], "selection": "best.safetensors: the epoch with the "
                                                 "highest validation δ_avg (offline)",
            "files": {k: str(v) for k, v in files.items()}, "history": result["history"]}
