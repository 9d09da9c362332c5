"""One training loop for every model: AdamW, warm-up + cosine, label smoothing, checkpoints.

``fit(model, train_set, eval_set, config, out_dir)`` trains any ``nn.Module`` whose forward takes
a batch of inputs and whose output ``loss_fn(output, targets)`` turns into a scalar; datasets
yield (input, target) pairs. The same call runs in one process or under
``torchrun --nproc_per_node N`` (see :mod:`attnvision.train.ddp`).

What ends up in ``out_dir`` (each file written to a temporary name, then renamed):

- ``model.safetensors`` + ``model.json``: the weights after the latest epoch, and what they are
  (metadata given by the caller, config, metrics, history);
- ``best.safetensors`` + ``best.json``: the epoch with the highest eval ``accuracy`` (or the
  metric named by ``best_metric``), if any;
- ``train_state.pt``: everything to continue (weights, AdamW and schedule state, epoch, step,
  history, every rank's torch RNG state), only tensors and plain containers, read back with
  ``torch.load(weights_only=True)``. It carries its own copy of the weights so that a crash
  between two renames can never pair weights and optimizer state from different epochs.

Reproducibility: the data order of epoch e is a permutation seeded with seed + e on every rank;
augmentation draws from a generator seeded from (seed, epoch, rank); dropout and other
``torch.rand`` users draw from the global generator, whose state is saved after each epoch. An
epoch thus depends only on the saved state, and a resumed run ends with the same weights as an
uninterrupted one. Initialising the model is the caller's job.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset, TensorDataset, default_collate
from tqdm import tqdm

from attnvision.errors import UserError
from attnvision.files import atomic_path, ensure_dir, write_json
from attnvision.precision import warn_if_bf16_emulated
from attnvision.train import ddp
from attnvision.train.losses import label_smoothing_cross_entropy
from attnvision.train.schedule import warmup_cosine_schedule
from attnvision.weights import load_failure

WEIGHTS = "model.safetensors"
INFO = "model.json"
BEST_WEIGHTS = "best.safetensors"
BEST_INFO = "best.json"
STATE = "train_state.pt"
STATE_FORMAT = 1
NO_DECAY_NAMES = ("pos_embed", "cls_token")
AMP_MODES = ("none", "bf16")
# Fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = frozenset({"eval_every"})

Batch = Any
AugmentFn = Callable[[Tensor, torch.Generator], Tensor]
EvaluateFn = Callable[[nn.Module, Dataset], dict]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # global: split across ranks under torchrun
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0  # linear warm-up, then cosine to min_lr
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    seed: int = 0
    amp: str = "none"  # "none" | "bf16" (torch.autocast on CPU or GPU)
    # (parameter-name prefix, factor) pairs: those parameters train at factor x lr (and
    # factor x min_lr), e.g. a part grown from zero beside trained ones.
    lr_scale: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
            (0 <= self.min_lr <= self.lr, f"min lr must be in [0, lr], got {self.min_lr}"),
            (0 <= self.label_smoothing < 1,
             f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip >= 0, f"grad clip must be >= 0 (0 disables), got {self.grad_clip}"),
            (self.eval_every >= 1, f"eval every must be >= 1 epoch, got {self.eval_every}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.amp in AMP_MODES, f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}"),
            (all(f > 0 for _, f in self.lr_scale),
             f"learning-rate factors must be > 0, got {self.lr_scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


def parameter_groups(model: nn.Module, weight_decay: float,
                     lr_scale: Sequence[tuple[str, float]] = ()) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only; then the ``lr_scale`` parts apart.

    Biases, norm scales (every 1-D parameter) and the position embedding and class token get no
    decay: pulling them to zero has no regularising meaning. A model may name more through a
    timm-style ``no_weight_decay()`` method returning parameter names. The first two groups
    (decay, no decay) hold every parameter outside the ``lr_scale`` prefixes; each prefix adds
    its own two, marked ``"lr_scale": factor`` (the longest prefix that matches a name wins).
    """
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    prefixes = [prefix for prefix, _ in lr_scale]
    groups: list[tuple[list[nn.Parameter], list[nn.Parameter]]] = [
        ([], []) for _ in range(len(prefixes) + 1)]
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (p.ndim <= 1 or name.endswith(".bias") or name in extra
                or any(key in name for key in NO_DECAY_NAMES))
        # The longest matching prefix wins: "encoder=2,encoder.stem=10" scales the stem by 10.
        matches = [(len(prefix), i + 1) for i, prefix in enumerate(prefixes)
                   if name == prefix or name.startswith(prefix + ".")]
        which = max(matches)[1] if matches else 0
        groups[which][1 if skip else 0].append(p)
    result = [{"params": groups[0][0], "weight_decay": weight_decay},
              {"params": groups[0][1], "weight_decay": 0.0}]
    for (prefix, factor), (decay, no_decay) in zip(lr_scale, groups[1:], strict=True):
        if not decay and not no_decay:
            raise UserError(f"learning-rate factor for {prefix!r}: no trained parameter's name "
                            "starts with it; name a part of the model that is not frozen")
        result += [{"params": params, "weight_decay": wd, "lr_scale": factor}
                   for params, wd in ((decay, weight_decay), (no_decay, 0.0)) if params]
    return result


def _collate(dataset: Dataset, idx: Tensor) -> Batch:
    # Tensor datasets are indexed in one go; anything else goes example by example.
    if type(dataset) is TensorDataset:
        return tuple(t[idx] for t in dataset.tensors)
    if type(dataset) is Subset:
        return _collate(dataset.dataset, torch.as_tensor(dataset.indices)[idx])
    return default_collate([dataset[i] for i in idx.tolist()])


def _to(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _pair(batch: Batch) -> tuple[Any, Any]:
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise UserError("each example of the dataset must be an (input, target) pair")
    return batch[0], batch[1]


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _plain(value: Any) -> Any:
    """Metrics as JSON- and weights_only-safe Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (Tensor, np.ndarray, np.generic)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> dict:
    """Accuracy, per-class accuracy, confusion matrix and predictions of a (B, K)-logit model.

    ``confusion_matrix[i][j]`` counts examples of class i predicted as j; a class absent from
    the dataset has per-class accuracy ``None``.
    """
    n = len(dataset)
    if n == 0:
        raise UserError("the evaluation set is empty")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    preds, labels, num_classes = [], [], 0
    try:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(n, start + batch_size))
            inputs, targets = _pair(_collate(dataset, idx))
            logits = model(_to(inputs, device))  # (B, K)
            num_classes = logits.shape[-1]
            preds.append(logits.argmax(-1).cpu())
            labels.append(torch.as_tensor(targets).cpu().long())
    finally:
        model.train(was_training)
    pred, label = torch.cat(preds), torch.cat(labels)  # (N,), (N,)
    k = max(num_classes, int(label.max()) + 1)
    confusion = torch.bincount(label * k + pred, minlength=k * k).view(k, k)
    support = confusion.sum(1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(k)]
    return {
        "accuracy": float((pred == label).double().mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "predictions": pred.tolist(),
        "num_examples": n,
    }


def accuracy(model: nn.Module, dataset: Dataset) -> dict:
    """``fit``'s default evaluation: {"accuracy": fraction of correct argmax predictions}."""
    return {"accuracy": evaluate_classifier(model, dataset)["accuracy"]}


def _epoch_seed(*keys: int) -> int:
    # One well-mixed 63-bit seed per (seed, epoch, rank, ...), so no two streams collide.
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


def _rng_state(device: torch.device) -> dict[str, Tensor | None]:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict[str, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def _state_dict(model: nn.Module) -> dict[str, Tensor]:
    # Copies: safetensors refuses tensors that share memory (tied weights), and wants CPU.
    return {k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in ddp.unwrap(model).state_dict().items()}


def _save_weights(path: Path, weights: dict[str, Tensor], epoch: int) -> None:
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata={"format": "pt", "epoch": str(epoch)})


@dataclass
class _Progress:
    """What the loop has done so far; saved in train_state.pt and model.json."""

    epoch: int = 0
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)
    last_eval: dict | None = None
    best: dict | None = None  # {"epoch": e, best_metric: value}
    seconds: float = 0.0  # training time over every run of this out_dir


def _check_datasets(train_set: Dataset, eval_set: Dataset | None) -> None:
    for label, data in (("training", train_set), ("evaluation", eval_set)):
        if data is None:
            continue
        try:
            n = len(data)
        except TypeError:
            raise UserError(f"the {label} set must be a map-style dataset with a length") from None
        if n == 0:
            raise UserError(f"the {label} set is empty")


def _same(value: Any) -> Any:
    """A config value compared across a save: lists and tuples alike."""
    if isinstance(value, (list, tuple)):
        return tuple(_same(v) for v in value)
    return value


def _load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainConfig,
                layout: dict[str, int], device: torch.device) -> _Progress:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot resume from {path} ({type(e).__name__}: {load_failure(e)}); "
                        "delete it or train without resuming") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not an attnvision training state; delete it or train "
                        "without resuming")
    saved = state["config"]
    # A field newer than the saved run counts as its default there.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = sorted(k for k, v in dataclasses.asdict(config).items()
                     if k not in RESUMABLE_CHANGES and _same(saved.get(k, defaults[k])) != _same(v))
    if changed:
        diff = ", ".join(f"{k} {saved.get(k, defaults[k])} -> {getattr(config, k)}"
                         for k in changed)
        raise UserError(f"{path.parent} holds a run with another training config ({diff}); "
                        "use another output folder or train without resuming")
    # Another dataset size or process count changes the steps per epoch, hence the schedule.
    if any(state.get(k) != v for k, v in layout.items()):
        was = ", ".join(f"{k} {state.get(k)}" for k in layout)
        now = ", ".join(f"{k} {v}" for k, v in layout.items())
        raise UserError(f"{path.parent} holds a run with another data layout ({was}; now {now}); "
                        "use another output folder or train without resuming")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"{path} was saved from a different model ({first}); use another "
                        "output folder or train without resuming") from None
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    _set_rng_state(rng[ddp.rank() % len(rng)], device)
    return _Progress(epoch=state["epoch"], step=state["step"], history=state["history"],
                     last_eval=state["last_eval"], best=state["best"], seconds=state["seconds"])


def _checkpoint(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainConfig,
                metadata: dict, layout: dict[str, int], progress: _Progress, rng: list[dict],
                improved: bool) -> None:
    weights = _state_dict(model)
    info = {
        "weights": WEIGHTS,
        "metadata": metadata,
        "config": dataclasses.asdict(config),
        "epoch": progress.epoch,
        "global_step": progress.step,
        "world_size": ddp.world_size(),
        "metrics": {"train_loss": progress.history[-1]["train_loss"],
                    "eval": progress.last_eval},
        "best": progress.best,
        "seconds": round(progress.seconds, 3),
        "history": progress.history,
    }
    _save_weights(out / WEIGHTS, weights, progress.epoch)
    write_json(out / INFO, info)
    if improved:
        _save_weights(out / BEST_WEIGHTS, weights, progress.epoch)
        write_json(out / BEST_INFO, {**info, "weights": BEST_WEIGHTS})
    state = {
        "format": STATE_FORMAT,
        "config": dataclasses.asdict(config),
        **layout,
        "epoch": progress.epoch,
        "step": progress.step,
        "history": progress.history,
        "last_eval": progress.last_eval,
        "best": progress.best,
        "seconds": progress.seconds,
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,  # one entry per rank
    }
    with atomic_path(out / STATE) as tmp:
        torch.save(state, tmp)


def _train_epoch(net: nn.Module, train_set: Dataset, batches: list[Tensor],
                 optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, config: TrainConfig,
                 loss_fn: Callable[[Any, Any], Tensor], augment: AugmentFn | None,
                 generator: torch.Generator, device: torch.device,
                 bar: tqdm) -> tuple[float, float]:
    """One pass over this rank's batches; returns (mean loss over all ranks, last lr)."""
    net.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, examples)
    lr = optimizer.param_groups[0]["lr"]
    for i, idx in enumerate(batches):
        inputs, targets = _to(_pair(_collate(train_set, idx)), device)
        if augment is not None:
            inputs = augment(inputs, generator)
        lr = optimizer.param_groups[0]["lr"]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp == "bf16"):
            loss = loss_fn(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        totals[0] += loss.detach().double() * len(idx)
        totals[1] += len(idx)
        bar.update()
        if not bar.disable and (i % 10 == 0 or i == len(batches) - 1):
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
    ddp.all_reduce_sum(totals)
    return float(totals[0] / totals[1]), lr


def fit(model: nn.Module, train_set: Dataset, eval_set: Dataset | None, config: TrainConfig,
        out_dir: str | Path, *, augment: AugmentFn | None = None,
        loss_fn: Callable[[Any, Any], Tensor] | None = None, evaluate: EvaluateFn | None = None,
        metadata: dict | None = None, progress: bool = True, resume: bool = True,
        device: str | torch.device | None = None,
        on_epoch_end: Callable[[dict], None] | None = None,
        best_metric: str = "accuracy") -> dict:
    """Train ``model`` on ``train_set`` and checkpoint it into ``out_dir``; see the module doc.

    ``loss_fn(output, targets)`` defaults to label-smoothed cross entropy, ``evaluate(model,
    eval_set)`` to :func:`accuracy`; ``metadata`` (JSON-serialisable, e.g. the model's config)
    is stored in ``model.json``. ``device`` defaults to CUDA if available (this rank's GPU under
    torchrun), else CPU; the model is moved there. With ``resume``, an ``out_dir`` holding
    ``train_state.pt`` of the same config continues after its last finished epoch.
    ``on_epoch_end(record)`` is called on every rank after each epoch's checkpoint, with that
    epoch's history record; an exception raised there stops training. ``best_metric`` names
    the evaluation figure (higher is better) that picks ``best.safetensors``.

    Returns {"epochs", "epoch", "global_step", "train_loss", "eval", "best", "history",
    "seconds", "checkpoint", "files", "resumed_from"}.
    """
    started = time.perf_counter()
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except TypeError as e:
        raise TypeError(f"fit(metadata=...) must be JSON-serialisable: {e}") from None
    _check_datasets(train_set, eval_set)
    out = ensure_dir(out_dir)
    device = ddp.resolve_device(device)
    created_group = ddp.setup(device)
    try:
        result = _fit(model, train_set, eval_set, config, out, device, augment, loss_fn,
                      evaluate or accuracy, metadata, progress, resume, on_epoch_end,
                      best_metric)
        ddp.barrier()
    finally:
        if created_group:
            ddp.cleanup()
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _fit(model: nn.Module, train_set: Dataset, eval_set: Dataset | None, config: TrainConfig,
         out: Path, device: torch.device, augment: AugmentFn | None,
         loss_fn: Callable[[Any, Any], Tensor] | None, evaluate: EvaluateFn, metadata: dict,
         progress: bool, resume: bool, on_epoch_end: Callable[[dict], None] | None,
         best_metric: str = "accuracy") -> dict:
    rank, world, main = ddp.rank(), ddp.world_size(), ddp.is_main_process()
    if config.amp == "bf16" and device.type == "cpu" and main:
        # Measured on such a CPU (sam_tiny at 512 px): a bf16 step 28 s, a float32 one 15 s.
        warn_if_bf16_emulated("attnvision train", "--amp bf16", "leave --amp out")
    model.to(device)
    groups = parameter_groups(model, config.weight_decay, config.lr_scale)
    for g in groups:
        g["lr"] = config.lr * g.get("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    steps = ddp.steps_per_epoch(len(train_set), config.batch_size, world)
    total_steps = config.epochs * steps
    warmup_steps = min(total_steps, round(config.warmup_epochs * steps))
    scheduler = warmup_cosine_schedule(optimizer, total_steps, warmup_steps,
                                       [config.min_lr * g.get("lr_scale", 1.0) for g in groups])
    layout = {"num_examples": len(train_set), "steps_per_epoch": steps}
    done = _Progress()
    if resume and (out / STATE).exists():
        done = _load_state(out / STATE, model, optimizer, scheduler, config, layout, device)
    resumed_from = done.epoch or None
    if resumed_from and main and progress:
        print(f"{out} already holds all {config.epochs} epochs: nothing to train"
              if done.epoch >= config.epochs else
              f"resuming {out} after epoch {done.epoch}/{config.epochs}", file=sys.stderr)
    net = ddp.wrap(model, device)
    if loss_fn is None:
        loss_fn = partial(label_smoothing_cross_entropy, smoothing=config.label_smoothing)

    for epoch in range(done.epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        batches = ddp.epoch_batches(len(train_set), config.batch_size, config.seed, epoch,
                                    rank, world)
        generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch, rank))
        with tqdm(total=len(batches), desc=f"epoch {epoch}/{config.epochs}", file=sys.stderr,
                  leave=False, dynamic_ncols=True, disable=not (progress and main)) as bar:
            loss, lr = _train_epoch(net, train_set, batches, optimizer, scheduler, config,
                                    loss_fn, augment, generator, device, bar)
        if not math.isfinite(loss):
            raise UserError(f"training diverged at epoch {epoch} (loss {loss}); lower the "
                            "learning rate or enable gradient clipping")
        done.epoch, done.step = epoch, done.step + len(batches)
        record: dict[str, Any] = {"epoch": epoch, "train_loss": loss, "lr": lr}
        improved = False
        if eval_set is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            # Rank 0 evaluates the unwrapped model (identical on every rank) and shares it.
            metrics = _plain(evaluate(model, eval_set)) if main else None
            done.last_eval = ddp.broadcast_object(metrics)
            record["eval"] = {k: v for k, v in done.last_eval.items()
                              if isinstance(v, (int, float, bool))}
            value = done.last_eval.get(best_metric)
            if isinstance(value, (int, float)) and (done.best is None
                                                    or value > done.best[best_metric]):
                done.best, improved = {"epoch": epoch, best_metric: value}, True
        record["seconds"] = round(time.perf_counter() - t0, 3)
        done.seconds += record["seconds"]
        done.history.append(record)
        rng = ddp.gather_objects(_rng_state(device))
        if main:
            _checkpoint(out, model, optimizer, scheduler, config, metadata, layout, done, rng,
                        improved)
            if progress:
                shown = "".join(f", {k} {v:.4f}" for k, v in record.get("eval", {}).items()
                                if isinstance(v, float))
                tqdm.write(f"epoch {epoch}/{config.epochs}: loss {loss:.4f}{shown} "
                           f"({record['seconds']:.1f} s)", file=sys.stderr)
        if on_epoch_end is not None:
            on_epoch_end(dict(record))

    files = {"weights": out / WEIGHTS, "info": out / INFO, "state": out / STATE}
    if done.best is not None:
        files |= {"best_weights": out / BEST_WEIGHTS, "best_info": out / BEST_INFO}
    return {
        "epochs": config.epochs,
        "epoch": done.epoch,
        "global_step": done.step,
        "train_loss": done.history[-1]["train_loss"],
        "eval": done.last_eval,
        "best": done.best,
        "history": done.history,
        "checkpoint": str(out / WEIGHTS),
        "files": {k: str(v) for k, v in files.items()},
        "resumed_from": resumed_from,
    }
