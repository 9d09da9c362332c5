"""The ViT sub-commands: train vit, eval vit, classify, explain vit."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common, training_options
from attnvision.errors import UserError

# Per dataset: the default config, training recipe and augmentation (measured in
# benchmarks/RESULTS.md). Command-line flags override the recipe.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"config": "vit_digits", "epochs": 100, "batch_size": 32, "lr": 1e-3,
               "augment": {"max_rotation": 10.0, "max_shift": 0.5, "scale": (0.9, 1.1)}},
    "mnist5k": {"config": "vit_mnist", "epochs": 50, "batch_size": 64, "lr": 1e-3,
                "augment": {"max_rotation": 10.0, "max_shift": 2.0, "scale": (0.9, 1.1)}},
}


def register_train(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "vit", "train a ViT classifier on an offline dataset")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], required=True)
    p.add_argument("--config", help="ViT config (default: vit_digits or vit_mnist)")
    training_options(p, epochs="default: the dataset's recipe (100 / 50)",
                     batch_size="default: the dataset's recipe (32 / 64)", lr="1e-3",
                     weight_decay=0.05, warmup_epochs=3.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    common(p, train)


def register_eval(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "vit", "accuracy, per-class accuracy and confusion matrix of a ViT")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--dataset", choices=["digits", "mnist5k"], default="mnist5k")
    p.add_argument("--out", default=".", help="folder for the confusion-matrix picture")
    common(p, evaluate)


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "classify", "top-k classes of images with a ViT")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--top-k", type=int, default=3)
    common(p, classify)


def register_explain(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "vit", "attention rollout and class-token attention over images")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", help="weights (default: the shipped MNIST-5k ViT)")
    p.add_argument("--out", required=True, help="folder for the pictures")
    common(p, explain)


def log(message: str) -> None:
    print(message, file=sys.stderr)


def load_model(checkpoint: str | None):
    """The ViT of ``checkpoint``, or the one that ships with attnvision (said on stderr)."""
    from attnvision.vit.checkpoints import load_checkpoint
    from attnvision.vit.pretrained import load_shipped, shipped_checkpoint

    if checkpoint is None:
        log(f"attnvision: using the shipped MNIST-5k ViT ({shipped_checkpoint().name}); "
            "pass --checkpoint for another model")
        return load_shipped()
    return load_checkpoint(checkpoint)


def _dataset_for(model, name: str):
    from attnvision.data.datasets import load_dataset

    ds = load_dataset(name)
    c = model.config
    if (c.in_chans, c.img_size, c.num_classes) != (ds.in_chans, ds.image_size, ds.num_classes):
        raise UserError(f"the model takes {c.in_chans}-channel {c.img_size}px images in "
                        f"{c.num_classes} classes but {name!r} has {ds.in_chans}-channel "
                        f"{ds.image_size}px images in {ds.num_classes}: use the dataset it was "
                        "trained on")
    return ds


def train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.data.augment import Augment
    from attnvision.data.datasets import load_dataset
    from attnvision.files import ensure_dir
    from attnvision.train.ddp import is_main_process
    from attnvision.train.loop import TrainConfig, fit
    from attnvision.vit.checkpoints import FORMAT, save_checkpoint
    from attnvision.vit.configs import get_config
    from attnvision.vit.model import VisionTransformer

    defaults = DATASET_DEFAULTS[args.dataset]
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    lr = defaults["lr"] if args.lr is None else args.lr
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise UserError("--epochs and --batch-size must be >= 1 and --lr > 0")
    out = ensure_dir(args.out)
    ds = load_dataset(args.dataset)
    cfg = get_config(args.config or defaults["config"], in_chans=ds.in_chans,
                     num_classes=ds.num_classes, class_names=tuple(ds.class_names),
                     mean=(0.0,) * ds.in_chans, std=(1.0,) * ds.in_chans)
    if cfg.img_size != ds.image_size:
        raise UserError(f"config {args.config!r} is for {cfg.img_size}px images but "
                        f"{args.dataset!r} has {ds.image_size}px images: use --config "
                        f"{defaults['config']}")
    torch.manual_seed(args.seed)
    model = VisionTransformer(cfg)
    if os.environ.get("RANK", "0") == "0":
        log(f"attnvision train vit: {model.num_parameters():,} parameters, {ds.describe()}")
    train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                            warmup_epochs=min(args.warmup_epochs, epochs / 2),
                            weight_decay=args.weight_decay, seed=args.seed, amp=args.amp,
                            label_smoothing=args.label_smoothing)
    result = fit(model, ds.train, ds.test, train_cfg, out, augment=Augment(**defaults["augment"]),
                 metadata={"format": FORMAT, "config": cfg.to_dict(), "dataset": ds.name,
                           "split": ds.describe()},
                 progress=not args.quiet, resume=not args.no_resume)
    checkpoint = out / "model.safetensors"
    if is_main_process():  # one self-describing file: weights + config + metrics
        save_checkpoint(model, checkpoint, extra={"dataset": ds.name,
                                                  "accuracy": result["eval"]["accuracy"]})
    return {"command": "train vit", "dataset": ds.name, "config": cfg.to_dict(),
            "parameters": model.num_parameters(), "epochs": result["epochs"],
            "seconds": result["seconds"], "train_loss": result["train_loss"],
            "accuracy": result["eval"]["accuracy"], "checkpoint": str(checkpoint),
            "history": result["history"]}


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.files import ensure_dir
    from attnvision.train.loop import evaluate_classifier
    from attnvision.viz.classification import confusion_matrix_figure

    model = load_model(args.checkpoint)
    ds = _dataset_for(model, args.dataset)
    metrics = evaluate_classifier(model, ds.test)
    out = ensure_dir(args.out)
    picture = confusion_matrix_figure(
        metrics["confusion_matrix"], ds.class_names, out / f"confusion_{ds.name}.png",
        f"ViT on {ds.name} test split: accuracy {metrics['accuracy']:.2%}")
    return {"command": "eval vit", "dataset": ds.name, "split": ds.describe(),
            "accuracy": metrics["accuracy"],
            "per_class_accuracy": {name: round(float(acc), 6) for name, acc in
                                   zip(ds.class_names, metrics["per_class_accuracy"],
                                       strict=True)},
            "confusion_matrix": metrics["confusion_matrix"], "files": [str(picture)]}


def _read_images(paths: list[str]) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    """Readable images and, for the others, a one-line reason each."""
    from attnvision.data.images import load_image

    images, skipped = [], []
    for p in paths:
        try:
            images.append((p, load_image(p)))
        except UserError as e:
            log(f"attnvision: skipped {p}: {e}")
            skipped.append({"path": p, "error": str(e)})
    if not images:
        raise UserError("none of the images could be read: " + skipped[0]["error"]
                        if skipped else "give at least one image")
    return images, skipped


def _class_name(model, index: int) -> str:
    names = model.config.class_names
    return names[index] if index < len(names) else str(index)


def classify(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.vit.preprocess import preprocess

    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    model = load_model(args.checkpoint)
    images, skipped = _read_images(args.images)
    results = []
    for path, image in images:
        with torch.no_grad():
            probs = model(preprocess(image, model.config)).softmax(-1)[0]
        top = probs.topk(min(args.top_k, probs.numel()))
        results.append({"path": path, "top_k": [
            {"class": _class_name(model, i), "index": i, "probability": round(p, 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]})
    return {"command": "classify", "results": results, "skipped": skipped}


def explain(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.files import ensure_dir
    from attnvision.vit.explain import explain as explain_model
    from attnvision.vit.preprocess import preprocess
    from attnvision.viz.classification import explanation_figure

    model = load_model(args.checkpoint)
    out = ensure_dir(args.out)
    images, skipped = _read_images(args.images)
    results = []
    for path, image in images:
        x = preprocess(image, model.config)
        e = explain_model(model, x)
        picture = explanation_figure(image, x[0], e.probabilities[0], e.rollout[0],
                                     e.cls_attention[0], model.config.class_names,
                                     out / f"explain_{Path(path).stem}.png")
        best = int(e.probabilities[0].argmax())
        results.append({"path": path, "prediction": _class_name(model, best),
                        "probability": round(float(e.probabilities[0, best]), 6),
                        "picture": str(picture)})
    return {"command": "explain vit", "results": results, "skipped": skipped,
            "files": [r["picture"] for r in results]}
