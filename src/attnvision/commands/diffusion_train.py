"""``attnvision train vae`` and ``attnvision train diffusion``: a small latent diffusion model
on MNIST-5k's training split (the ViT's split: 4,000 digits; the 1,000 test digits are never
seen), in two steps.

1. ``train vae``: the KL autoencoder, 28 x 28 digits to 4 x 7 x 7 latents (1/4 of the side),
   L1 + a perceptual term on the shipped ViT's features + a small KL weight
   (:class:`attnvision.diffusion.training.VAETraining`). ``--export`` writes the last epoch's
   autoencoder with its ``scaling_factor`` (1 / std of the training latents).
2. ``train diffusion --vae VAE``: a class-conditional DiT over those latents (patch 1: 49
   tokens), labels dropped to the null class 10 % of the time for classifier-free guidance,
   with EMA weights. ``--export`` writes the whole pipeline, the last epoch's EMA DiT, the
   autoencoder and the sampler (DPM-Solver++ on the training schedule), as one file that
   ``attnvision generate --checkpoint`` reads.

The shipped file is the last epoch's, whatever any evaluation says: the rule, chosen before
the runs, leaves nothing to pick by looking at held-out figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnvision.commands.options import (
    add_command,
    check_out_dir,
    common,
    train_log,
    training_options,
)
from attnvision.errors import UserError

VAE_RECIPE = {"epochs": 40, "batch_size": 64, "lr": 1e-3, "widths": "16,32,32",
              "latent_channels": 4, "kl_weight": 1e-6, "perceptual_weight": 1.0}
# Sized for two CPU cores and about half an hour: 1.9 M parameters over 49 tokens, ~0.5 s a
# step of 128 latents.
DIT_RECIPE = {"epochs": 130, "batch_size": 128, "lr": 5e-4, "hidden": 128, "depth": 6,
              "heads": 4, "ema_decay": 0.999}
# clip_sample False: latents of unit variance are not images in -1..1, and DDPM and DDIM
# (diffusers' defaults: True) would clip every x̂₀ to that range when switched to.
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001,
            "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": False}


def register_train(models: argparse._SubParsersAction) -> None:
    p = add_command(models, "vae", "train the KL autoencoder of a latent diffusion model on "
                                   "MNIST-5k's training split (28x28 digits -> 4x7x7 latents)")
    p.add_argument("--widths", default=VAE_RECIPE["widths"], metavar="C1,C2,C3",
                   help="channels of the levels; each level after the first halves the side "
                        f"(default {VAE_RECIPE['widths']}: 28 -> 14 -> 7)")
    p.add_argument("--latent-channels", type=int, default=VAE_RECIPE["latent_channels"])
    p.add_argument("--kl-weight", type=float, default=VAE_RECIPE["kl_weight"])
    p.add_argument("--perceptual-weight", type=float, default=VAE_RECIPE["perceptual_weight"],
                   help="weight of the squared distance between the shipped ViT's features "
                        "of the digit and of its reconstruction (0: none)")
    _per_class_option(p)
    training_options(p, epochs=f"default: {VAE_RECIPE['epochs']}",
                     batch_size=f"digits per step (default {VAE_RECIPE['batch_size']})",
                     lr=str(VAE_RECIPE["lr"]), weight_decay=0.0, warmup_epochs=1.0)
    p.add_argument("--export", metavar="PATH",
                   help="also write the last epoch's autoencoder, with its scaling factor, to "
                        "PATH (.safetensors)")
    common(p, train_vae)

    p = add_command(models, "diffusion", "train a class-conditional DiT on the latents of a "
                                         "trained autoencoder (MNIST-5k's training split), "
                                         "with EMA weights and the null class for guidance")
    p.add_argument("--vae", required=True, metavar="FILE",
                   help="the autoencoder (train vae --export), with its scaling factor")
    p.add_argument("--init", metavar="FILE",
                   help="start from these DiT weights instead of random ones: a train "
                        "diffusion run's model.safetensors (its EMA weights), a pipeline "
                        "file (--export, the shipped digits) or any DiT file load_dit reads; "
                        "the architecture is the file's")
    p.add_argument("--hidden", type=int,
                   help=f"DiT width (default {DIT_RECIPE['hidden']}, or --init's)")
    p.add_argument("--depth", type=int,
                   help=f"DiT blocks (default {DIT_RECIPE['depth']}, or --init's)")
    p.add_argument("--heads", type=int,
                   help=f"attention heads (default {DIT_RECIPE['heads']}, or --init's)")
    p.add_argument("--ema-decay", type=float, default=DIT_RECIPE["ema_decay"])
    _per_class_option(p)
    training_options(p, epochs=f"default: {DIT_RECIPE['epochs']}",
                     batch_size=f"latents per step (default {DIT_RECIPE['batch_size']})",
                     lr=str(DIT_RECIPE["lr"]), weight_decay=0.0, warmup_epochs=2.0)
    p.add_argument("--export", metavar="PATH",
                   help="also write the pipeline (last epoch's EMA DiT + the autoencoder + "
                        "DPM-Solver++) as one float16 file at PATH (.safetensors)")
    p.add_argument("--guidance", type=float, default=4.0,
                   help="the guidance scale the export stores as the model's default, which "
                        "generate, eval diffusion and demo use (default 4; the shipped "
                        "digits' was chosen on the training split by "
                        "recipes/digits_guidance.py)")
    common(p, train_diffusion)


def _per_class_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-class", type=int, metavar="N",
                   help="train on the first N training digits of each class (default: all "
                        "400; a quick look)")


def _numbers(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Any]:
    chosen = {k: recipe[k] if getattr(args, k) is None else getattr(args, k)
              for k in ("epochs", "batch_size", "lr")}
    for name, ok in (("epochs", chosen["epochs"] >= 1), ("batch-size", chosen["batch_size"] >= 1),
                     ("lr", chosen["lr"] > 0)):
        if not ok:
            raise UserError(f"--{name} must be positive, got {chosen[name.replace('-', '_')]}")
    return chosen


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) < 1 or any(w < 8 or w % 8 for w in widths):
        raise UserError(f"--widths {text!r}: give channel counts that are multiples of 8, "
                        "comma-separated (e.g. 32,64,64)")
    return widths


def _digits(per_class: int | None):
    """MNIST-5k's split, its training digits cut to the first ``per_class`` of each class."""
    import dataclasses

    import torch
    from torch.utils.data import TensorDataset

    from attnvision.data.datasets import load_dataset

    data = load_dataset("mnist5k")
    if per_class is None:
        return data
    if per_class < 1:
        raise UserError(f"--per-class must be >= 1, got {per_class}")
    images, labels = data.train.tensors
    keep = torch.cat([torch.nonzero(labels == c)[:per_class, 0]
                      for c in range(data.num_classes)]).sort().values
    return dataclasses.replace(data, train=TensorDataset(images[keep], labels[keep]),
                               description=f"{data.description}; the first {per_class} "
                                           "training digits of each class")


def _judge():
    """The shipped ViT's pre-logit features, or None for an install without it."""
    from torch import nn

    from attnvision.vit.pretrained import load_shipped

    vit = load_shipped()

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    return Features()


def _config(args: argparse.Namespace, numbers: dict[str, Any]):
    from attnvision.train.loop import TrainConfig

    return TrainConfig(epochs=numbers["epochs"], batch_size=numbers["batch_size"],
                       lr=numbers["lr"], warmup_epochs=min(args.warmup_epochs,
                                                           numbers["epochs"] / 2),
                       min_lr=min(1e-5, numbers["lr"]), weight_decay=args.weight_decay,
                       seed=args.seed, amp=args.amp, label_smoothing=0.0, grad_clip=1.0)


def train_vae(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import torch

    from attnvision.diffusion import AutoencoderKL, VAEConfig, save_vae
    from attnvision.diffusion.training import VAETraining, latent_statistics, loss_is_output
    from attnvision.train import ddp
    from attnvision.train.loop import fit

    numbers = _numbers(args, VAE_RECIPE)
    widths = _widths(args.widths)
    if args.latent_channels < 1 or args.kl_weight < 0 or args.perceptual_weight < 0:
        raise UserError("--latent-channels must be >= 1 and the loss weights >= 0")
    check_out_dir(args.out)
    data = _digits(args.per_class)
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(VAEConfig(in_channels=1, out_channels=1, block_out_channels=widths,
                                  layers_per_block=1, latent_channels=args.latent_channels,
                                  norm_num_groups=8, sample_size=data.image_size,
                                  scaling_factor=1.0))
    judge = _judge() if args.perceptual_weight else None
    net = VAETraining(vae, args.kl_weight, judge, args.perceptual_weight)
    described = f"{data.describe()}; trained on the train split only"
    train_log(f"attnvision train vae: {sum(p.numel() for p in vae.parameters()):,} parameters; "
              f"{described}")
    metadata = {"format": "attnvision.diffusion.vae", "config": vae.config.to_json(),
                "data": described, "kl_weight": args.kl_weight,
                "perceptual_weight": args.perceptual_weight}
    images = data.train.tensors[0]
    result = fit(net, data.train, None, _config(args, numbers), args.out,
                 loss_fn=loss_is_output, progress=not args.quiet, resume=not args.no_resume,
                 metadata=metadata)
    mean, logvar = latent_statistics(vae, images)
    std = float((mean + (0.5 * logvar).exp() * torch.randn_like(mean)).std())
    files = {"checkpoint": str(Path(args.out) / "model.safetensors")}
    if ddp.is_main_process() and args.export is not None:
        vae.config = dataclasses.replace(vae.config, scaling_factor=1.0 / std)
        files["export"] = str(save_vae(vae, args.export))
        train_log(f"attnvision train vae: wrote {args.export} (scaling factor {1 / std:.4f})")
    with torch.no_grad():
        test = data.test.tensors[0]
        recon = vae.decode(vae.encode(test * 2 - 1).mode())
        test_l1 = float(((recon + 1) / 2).clamp(0, 1).sub(test).abs().mean())
    return {"command": "train vae", "epochs": result["epochs"], "seconds": result["seconds"],
            "train_loss": result["train_loss"], "latent_std": std,
            "scaling_factor": 1.0 / std, "test_l1": test_l1, "data": described,
            "files": files, "history": result["history"]}


def train_diffusion(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from attnvision.diffusion import DiT, DiTConfig, DiTPipeline, load_vae, make_scheduler
    from attnvision.diffusion.pipeline import save_pipeline
    from attnvision.diffusion.training import (
        DiTTraining,
        LatentDigits,
        latent_statistics,
        loss_is_output,
    )
    from attnvision.train import ddp
    from attnvision.train.loop import fit

    numbers = _numbers(args, DIT_RECIPE)
    if not 0 < args.ema_decay < 1:
        raise UserError(f"--ema-decay must be between 0 and 1, got {args.ema_decay}")
    if not args.guidance >= 0:  # also refuses nan
        raise UserError(f"--guidance {args.guidance}: give 0 or more (1 turns guidance off)")
    shape = {k: getattr(args, k) for k in ("hidden", "depth", "heads")}
    if args.init is not None and any(v is not None for v in shape.values()):
        given = " ".join(f"--{k} {v}" for k, v in shape.items() if v is not None)
        raise UserError(f"{given} with --init: the architecture is --init's; drop {given}")
    shape = {k: DIT_RECIPE[k] if v is None else v for k, v in shape.items()}
    if shape["hidden"] % shape["heads"] or shape["hidden"] % 4 or shape["depth"] < 1:
        raise UserError(f"--hidden {shape['hidden']} must be a multiple of 4 and of --heads "
                        f"{shape['heads']}, and --depth at least 1")
    check_out_dir(args.out)
    vae = load_vae(args.vae).eval()
    data = _digits(args.per_class)
    mean, logvar = latent_statistics(vae, data.train.tensors[0])
    channels, side = mean.shape[1], mean.shape[-1]
    torch.manual_seed(args.seed)
    if args.init is not None:
        dit = _initial_dit(args.init, channels, side, data.num_classes)
        train_log(f"attnvision train diffusion: starting from {args.init}")
    else:
        dit = DiT(DiTConfig(input_size=side, patch_size=1, in_channels=channels,
                            hidden_size=shape["hidden"], depth=shape["depth"],
                            num_heads=shape["heads"], num_classes=data.num_classes,
                            class_dropout_prob=0.1, learn_sigma=False, freq_shift=0.0,
                            mlp_norm_eps=1e-6, guided_channels=channels))
    net = DiTTraining(dit, vae.config.scaling_factor, ema_decay=args.ema_decay, **{
        k: SCHEDULE[k] for k in ("beta_schedule", "num_train_timesteps", "beta_start",
                                 "beta_end")})
    train_set = LatentDigits(mean, logvar, data.train.tensors[1])
    described = (f"{data.describe()}; latents {channels}x{side}x{side} of {args.vae}; "
                 "trained on the train split only")
    train_log(f"attnvision train diffusion: {sum(p.numel() for p in dit.parameters()):,} "
              f"parameters; {described}")
    metadata = {"format": "attnvision.diffusion.dit", "config": dit.config.to_dict(),
                "data": described, "vae": str(args.vae), "schedule": SCHEDULE,
                "ema_decay": args.ema_decay, "init": args.init}
    result = fit(net, train_set, None, _config(args, numbers), args.out,
                 loss_fn=loss_is_output, progress=not args.quiet, resume=not args.no_resume,
                 metadata=metadata)
    files = {"checkpoint": str(Path(args.out) / "model.safetensors")}
    if ddp.is_main_process() and args.export is not None:
        scheduler = make_scheduler("dpm++", SCHEDULE)
        pipe = DiTPipeline(net.ema.eval(), vae, scheduler,
                           id2label={i: name for i, name in enumerate(data.class_names)},
                           guidance_scale=args.guidance)
        pipe.stored_scheduler_config = dict(SCHEDULE)  # clip_sample too: DPM has no such key
        files["export"] = str(save_pipeline(
            pipe, args.export, dtype=torch.float16,
            extra={"data": described, "epochs": result["epochs"], "seed": args.seed,
                   "init": str(args.init), "selection": "the last epoch's EMA weights"}))
        size = Path(args.export).stat().st_size / 1e6
        train_log(f"attnvision train diffusion: wrote {args.export} ({size:.1f} MB)")
    return {"command": "train diffusion", "epochs": result["epochs"],
            "seconds": result["seconds"], "train_loss": result["train_loss"],
            "parameters": sum(p.numel() for p in dit.parameters()), "data": described,
            "selection": "the last epoch's EMA weights", "files": files,
            "history": result["history"]}


def _initial_dit(path: str, channels: int, side: int, num_classes: int):
    """``--init``'s DiT (float32, train mode), checked against the latents it will see."""
    import json

    from attnvision.diffusion import DiT, DiTConfig, DiTPipeline, load_dit
    from attnvision.diffusion.pipeline import is_pipeline_file
    from attnvision.weights import key_problems, read_weights

    file = Path(path)
    info = file.with_name("model.json")
    if file.is_file() and info.is_file() and file.suffix == ".safetensors":
        # A run of this command: its checkpoint holds the raw and the EMA weights; the EMA
        # weights are the ones its export samples from, so they are the ones to go on from.
        try:
            config = json.loads(info.read_text())["metadata"]["config"]
            dit = DiT(DiTConfig.from_dict(config))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{info} is not the record of a train diffusion run: pass the "
                            "run's model.safetensors, a pipeline file or a DiT file") from None
        ema = {k.removeprefix("ema."): v for k, v in read_weights(file)[0].items()
               if k.startswith("ema.")}
        problems = key_problems(dit.state_dict(), ema)
        if problems:
            raise UserError(f"{file} does not hold the EMA DiT its model.json describes: "
                            f"{problems}")
        dit.load_state_dict(ema)
    elif file.is_file() and is_pipeline_file(file):
        dit = DiTPipeline.from_pretrained(file).transformer
    else:
        dit = load_dit(file)
    cfg = dit.config
    wanted = {"in_channels": channels, "input_size": side, "num_classes": num_classes}
    wrong = [f"{k} {getattr(cfg, k)} (the latents need {v})" for k, v in wanted.items()
             if getattr(cfg, k) != v]
    if cfg.class_dropout_prob <= 0:
        wrong.append("no null class (class_dropout_prob 0), so no guidance")
    if wrong:
        raise UserError(f"--init {path} does not fit these latents: {'; '.join(wrong)}; start "
                        "from a DiT trained on the same autoencoder")
    return dit.float().train().requires_grad_(True)
