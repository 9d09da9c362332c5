"""``attnvision generate``: class-conditional images from a latent diffusion model.

The model is a DiT pipeline: a diffusers folder (``model_index.json`` with ``transformer/``,
``vae/`` and ``scheduler/``, e.g. facebook/DiT-XL-2-256 as downloaded), our one-file pipeline
(``.safetensors``, as ``attnvision train diffusion`` writes), or a lone DiT (Meta's
``DiT-XL-2-256x256.pt`` or a diffusers ``transformer/`` folder) with ``--vae`` naming the
autoencoder. The sampler is switched with ``--sampler`` and keeps the model's noise schedule.

``--n`` images are drawn for each ``--class`` (a class number, or a label the model's class
names know), or ``--n`` of random classes without one. Writes, in ``--out``: one PNG per image
(``000_class7.png``, ...) and ``grid.png`` (one row per class asked for). Every option, the
classes and the size are checked, and the model read, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from attnvision.commands.options import add_command, check_out_dir, common, precision_option
from attnvision.errors import UserError

SAMPLERS = ["dpm++", "ddim", "ddpm", "euler"]


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "generate", "latent diffusion: draw images of the classes asked "
                                          "for with a DiT and its autoencoder")
    p.add_argument("--checkpoint", metavar="DIR|FILE",
                   help="a diffusers DiT pipeline folder (or its Hugging Face Hub id, "
                        "fetched when online), our one-file pipeline (.safetensors), or a lone "
                        "DiT (Meta's .pt or a diffusers transformer folder) with --vae")
    p.add_argument("--vae", metavar="DIR|FILE",
                   help="the autoencoder of a lone DiT: a diffusers folder (e.g. "
                        "stabilityai/sd-vae-ft-mse) or an original-format VAE file")
    p.add_argument("--class", dest="classes", action="append", metavar="N|LABEL",
                   help="a class to draw (repeatable): its number or its name")
    p.add_argument("--n", type=int, default=16, help="images per class (default: 16)")
    p.add_argument("--steps", type=int, default=25,
                   help="denoising steps (default: 25)")
    p.add_argument("--sampler", choices=SAMPLERS, default="dpm++",
                   help="DPM-Solver++ (2M), DDIM, DDPM or Euler, on the model's noise schedule "
                        "(default: dpm++)")
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale s: ε = ε_u + s (ε_c − ε_u); 1 turns it "
                        "off (default: the model's own, which the shipped digits' file "
                        "stores; 4 for a file that stores none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--size", type=int, metavar="PIXELS",
                   help="image side (default: the model's own)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images denoised together (default: 16)")
    p.add_argument("--tiled", action="store_true",
                   help="decode the latents tile by tile: large images in less memory")
    precision_option(p)
    p.add_argument("--out", required=True, help="folder for the images")
    common(p, generate)


def _log(message: str) -> None:
    print(f"attnvision: {message}", file=sys.stderr)


def load_pipeline(checkpoint: str | None, vae: str | None = None, sampler: str | None = None):
    """The pipeline of ``--checkpoint`` (else the shipped one) with ``sampler``."""
    from attnvision.diffusion import pretrained
    from attnvision.diffusion.pipeline import DiTPipeline

    if checkpoint is None:
        path = pretrained.shipped_checkpoint()
        _log(f"using the shipped model '{pretrained.SHIPPED_NAME}' (pass --checkpoint for "
             "another)")
    else:
        path = checkpoint
    return DiTPipeline.from_pretrained(path, scheduler=sampler, vae=vae)


def _classes(pipe, given: list[str] | None, n: int, seed: int) -> list[int]:
    import torch

    if not given:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(pipe.transformer.config.num_classes, (n,), generator=g).tolist()
    ids = []
    for c in given:
        ids.append(int(c) if c.lstrip("-").isdigit() else pipe.get_label_ids(c)[0])
    pipe.check_labels(ids)
    return [c for c in ids for _ in range(n)]


def generate(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from attnvision.files import ensure_dir
    from attnvision.precision import PRECISIONS, check_precision
    from attnvision.viz.diffusion import save_grid
    from attnvision.viz.overlays import save_png

    for name in ("n", "steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got "
                            f"{getattr(args, name)}")
    if args.guidance is not None and not args.guidance >= 0:
        raise UserError(f"--guidance must be >= 0 (1 turns guidance off), got {args.guidance}")
    check_precision(args.precision, "cpu")
    check_out_dir(args.out)
    pipe = load_pipeline(args.checkpoint, args.vae, args.sampler)
    if args.precision != "fp32":
        pipe.to(PRECISIONS[args.precision])
    # No --guidance: the model's own scale, so the report says what was used.
    guidance = pipe.guidance_scale if args.guidance is None else args.guidance
    size = args.size or pipe.default_size
    latent_h, latent_w = pipe.check_size(size, size)
    classes = _classes(pipe, args.classes, args.n, args.seed)

    # All the noise is drawn first from one seeded generator, so an image does not depend on
    # --batch-size; a stochastic sampler's later draws come from the same generator.
    generator = torch.Generator().manual_seed(args.seed)
    channels = pipe.transformer.config.in_channels
    noise = torch.randn((len(classes), channels, latent_h, latent_w), generator=generator)
    images = []
    start = time.perf_counter()
    batches = range(0, len(classes), args.batch_size)
    for b in tqdm(batches, desc="batches", unit="batch", disable=args.quiet or len(batches) < 2,
                  file=sys.stderr):
        out = pipe(classes[b:b + args.batch_size], guidance_scale=guidance,
                   generator=generator, num_inference_steps=args.steps, output_type="latent",
                   latents=noise[b:b + args.batch_size], height=size, width=size,
                   progress=not args.quiet)
        images.append(pipe.decode(out.images, tiled=args.tiled).float())
    pictures = torch.cat(images).permute(0, 2, 3, 1).numpy()  # (N, H, W, 3) in 0..1
    seconds = time.perf_counter() - start

    out_dir = ensure_dir(args.out)
    written = []
    for i, (picture, c) in enumerate(zip(pictures, classes, strict=True)):
        pixels = (picture * 255).round().astype(np.uint8)
        path = save_png(pixels[..., 0] if pixels.shape[-1] == 1 else pixels,
                        out_dir / f"{i:03d}_class{c}.png")
        written.append({"path": str(path), "class": c, "label": pipe.id2label.get(c)})
    rows = len(args.classes) if args.classes else None
    grid = save_grid(pictures, out_dir / "grid.png", rows=rows, scale=max(1, 128 // size))
    return {"command": "generate", "images": written, "grid": str(grid),
            "count": len(written), "seconds": round(seconds, 3),
            "seconds_per_image": round(seconds / len(written), 3),
            "sampler": args.sampler, "steps": args.steps, "guidance": guidance,
            "seed": args.seed, "size": size, "precision": args.precision,
            "checkpoint": args.checkpoint or "shipped"}
