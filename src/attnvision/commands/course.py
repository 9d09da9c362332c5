"""``attnvision figures``: the course's figures from the library's own functions.

The memory-attention picture tracks a clip with SAM 2: ``--sam2-checkpoint``'s, else the
shipped ``sam2_tiny``; an install without it skips that picture (said on stderr) and draws the
rest. The track-attention picture tracks a grid over the same clip with the offline
CoTracker3 of ``--cotracker-checkpoint``, else the shipped ``cotracker_tiny``; an install
without it skips that picture (said on stderr). The diffusion pictures: the forward process
(the figure image noised at t = 0 … T, with the schedule's ᾱ_t) always; the denoising
trajectory and a DiT block's attention over the latent patches with the pipeline of
``--diffusion-checkpoint``, else the shipped ``digits`` model, else skipped (said on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import add_command, common

TRACK_CLIP_FRAMES = 12  # the track-attention clip: the full model took ~40 s on 2 busy cores


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "figures", "write the course's figures (positional encoding, "
                                         "P.P^T, patch grid, attention maps) as PNG files")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--image", help="image to cut into patches (default: built-in astronaut)")
    p.add_argument("--patch-size", type=int, default=16, help="patch width P in pixels")
    p.add_argument("--size", type=int, default=224,
                   help="the image is centre-cropped and resized to SIZE x SIZE")
    p.add_argument("--sam2-checkpoint", metavar="FILE",
                   help="the SAM 2 checkpoint (official sam2.1_hiera_*.pt or ours) of "
                        "memory_attention.png, where a query of a tracked clip's last frame "
                        "attends in each memory frame (default: the shipped sam2_tiny)")
    p.add_argument("--cotracker-checkpoint", metavar="FILE",
                   help="the offline CoTracker3 weights (official scaled_offline.pth or ours, "
                        ".safetensors) of track_attention.png, what one tracked point attends "
                        "to in time and through the virtual tracks (default: the shipped "
                        "cotracker_tiny)")
    p.add_argument("--diffusion-checkpoint", metavar="DIR|FILE",
                   help="the DiT pipeline (a diffusers folder or our one-file pipeline) whose "
                        "generation denoising_trajectory.png and dit_attention.png watch "
                        "(default: the shipped digits model; skipped without one)")
    p.add_argument("--cotracker-resolution", metavar="H,W",
                   help="the size CoTracker3 resizes the clip's frames to (default: 384,512, "
                        "the released models'); multiples of 4")
    common(p, figures)


def figures(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.data.images import load_image
    from attnvision.files import ensure_dir
    from attnvision.viz.course import check_geometry, course_figures

    check_geometry(args.patch_size, args.size)
    # The checkpoints are read before anything is written: a bad file leaves no folder behind.
    model, note = _sam2(args.sam2_checkpoint)
    tracker, tracker_note = _cotracker(args.cotracker_checkpoint, args.cotracker_resolution)
    generator, generator_note = _diffusion(args.diffusion_checkpoint)
    ensure_dir(args.out)
    if args.image is None:
        print("attnvision: using the built-in sample image 'astronaut' (pass --image for yours)",
              file=sys.stderr)
    image = None if args.image is None else load_image(args.image)
    # Only now: a mistake above is the one line on stderr.
    for line in (note, tracker_note, generator_note):
        if line:
            print(line, file=sys.stderr)
    files = course_figures(args.out, image=image, patch_size=args.patch_size, size=args.size,
                           progress=not args.quiet)
    if model is not None:
        from attnvision.viz.memory_attention import memory_attention_figure, sample_clip

        clip = sample_clip()
        files["memory_attention"] = memory_attention_figure(
            model, clip.frames, clip.click, clip.query, Path(args.out) / "memory_attention.png",
            progress=not args.quiet, clip_name=clip.name)
    if tracker is not None:
        from attnvision.viz.memory_attention import sample_clip
        from attnvision.viz.track_attention import track_attention_figure

        # Longer than SAM 2's clip, so the time attention has frames to choose from; the
        # tracked point is the one nearest the click on the man's face (or the astronaut's).
        clip = sample_clip(TRACK_CLIP_FRAMES)
        files["track_attention"] = track_attention_figure(
            tracker, clip.frames, Path(args.out) / "track_attention.png", point=clip.click,
            clip_name=clip.name)
    files.update(_diffusion_figures(generator, image, args.size, Path(args.out)))
    return {"command": "figures", "out": str(Path(args.out)),
            "files": {k: str(v) for k, v in files.items()}}


def _diffusion(checkpoint: str | None) -> tuple[Any, str | None]:
    """The DiT pipeline of the checkpoint (one-line errors), else the shipped one, else None
    (the forward-process picture needs none); and the note for stderr."""
    from attnvision.diffusion import DiTPipeline, pretrained

    if checkpoint is not None:
        return DiTPipeline.from_pretrained(checkpoint), None
    if not pretrained.has_shipped():
        return None, ("attnvision: the denoising-trajectory and DiT-attention pictures need a "
                      "latent diffusion model and this install ships none: pass "
                      "--diffusion-checkpoint DIR|FILE; skipped")
    return DiTPipeline.from_pretrained(pretrained.shipped_checkpoint()), (
        f"attnvision: the diffusion pictures use the shipped {pretrained.SHIPPED_NAME} model; "
        "pass --diffusion-checkpoint for another")


def _diffusion_figures(pipe: Any, image: Any, size: int, out: Path) -> dict[str, Path]:
    """forward_process.png always (on the figure image, with the model's schedule when there
    is a model); the trajectory and attention pictures with a model."""
    from attnvision.data.images import sample_image
    from attnvision.viz.course import center_square
    from attnvision.viz.diffusion_figures import forward_process_picture, reverse_process_pictures

    square = center_square(sample_image() if image is None else image, min(size, 128))
    files = {"forward_process": forward_process_picture(square, out / "forward_process.png",
                                                         pipe)}
    if pipe is not None:
        label = min(pipe.id2label) if pipe.id2label else 0
        files.update(reverse_process_pictures(pipe, out, label))
    return files


def _shipped_cotracker() -> str | None:
    """The shipped cotracker_tiny's weights, or None for an install without them."""
    from attnvision.cotracker.pretrained import has_shipped, shipped_checkpoint

    return str(shipped_checkpoint()) if has_shipped() else None


def _cotracker(checkpoint: str | None, resolution: str | None) -> tuple[Any, str | None]:
    """The offline CoTracker3 of the checkpoint (one-line errors), else the shipped one, else
    None; and the note to say on stderr when the checkpoint was not given."""
    import torch

    from attnvision.commands.track import parse_resolution
    from attnvision.cotracker import build_cotracker

    path, note = checkpoint, None
    if path is None:
        path = _shipped_cotracker()
        if path is None:
            return None, ("attnvision: the track-attention picture needs CoTracker3 weights and "
                          "this install ships none: pass --cotracker-checkpoint FILE (the "
                          "official scaled_offline.pth); skipped")
        note = ("attnvision: the track-attention picture uses the shipped cotracker_tiny; "
                "pass --cotracker-checkpoint for another")
    size = parse_resolution(resolution, path, option="--cotracker-resolution")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return build_cotracker(path, offline=True, model_resolution=size, device=device), note


def _sam2(checkpoint: str | None) -> tuple[Any, str | None]:
    """The SAM 2 of the checkpoint (one-line errors), else the shipped sam2_tiny, else None
    (the other figures need no SAM 2), on the GPU when there is one; and the note to say on
    stderr when the checkpoint was not given."""
    import torch

    from attnvision.errors import UserError
    from attnvision.sam2 import build_sam2
    from attnvision.sam2.pretrained import shipped_checkpoint

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if checkpoint is not None:
        return build_sam2(None, checkpoint, device=device), None
    try:
        path = shipped_checkpoint()
    except UserError:
        return None, ("attnvision: the memory-attention picture needs SAM 2 weights and this "
                      "install ships none: pass --sam2-checkpoint FILE; skipped")
    return build_sam2(None, path, device=device), (
        "attnvision: the memory-attention picture uses the shipped sam2_tiny; pass "
        "--sam2-checkpoint for another SAM 2")
