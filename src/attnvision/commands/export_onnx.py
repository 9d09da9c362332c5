"""``attnvision export-onnx``: SAM's prompt decoder (and image encoder), or CoTracker3's online
step, as ONNX files.

SAM (the default): writes ``sam_decoder.onnx`` (the official input and output names),
optionally ``sam_decoder_quantized.onnx`` and ``sam_encoder.onnx``, and ``sam_onnx.json``
saying what each graph takes and returns. Before reporting success it runs the decoder in
ONNX Runtime and in PyTorch on one random prompt and reports the largest logit difference, so
a broken export never passes for a good one.

``export-onnx cotracker [--checkpoint scaled_online.pth]`` (default: the shipped
``cotracker_tiny``, where the install has it): writes
``cotracker_online_step.onnx`` (one window of the online model, state in and out:
:mod:`attnvision.cotracker.onnx`) and ``cotracker_onnx.json`` (its inputs, outputs and how to
loop it). The model is named by a word after the command, as ``train vit`` / ``eval track``
name theirs, and optional so that every SAM command line stays as it was; the SAM options
are refused with it, ``--model-resolution`` without it. Before the graph is moved into place
it runs in ONNX Runtime and PyTorch over a synthetic clip of four windows (so the state
passed between windows is checked) and must place every point within :data:`TOLERANCE_PX`
of PyTorch, or, where the model's own float32 rounding is larger than that, no farther from
float64 PyTorch than twice PyTorch float32's distance
(:func:`attnvision.cotracker.onnx.compare_online_step`); otherwise nothing is written and the
command fails (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnvision.commands.options import SAM_SIZES, add_command, common
from attnvision.errors import UserError

# Largest |ONNX Runtime - PyTorch| logit difference that counts as the same model (float32).
TOLERANCE = 1e-3
# Largest |ONNX Runtime - PyTorch| track position difference, pixels (float32); see the
# module's docstring for models whose own float32 rounding is larger.
TOLERANCE_PX = 1e-3
MODELS = ["sam", "cotracker"]
COTRACKER_GRAPH = "cotracker_online_step.onnx"
COTRACKER_METADATA = "cotracker_onnx.json"


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "export-onnx", "SAM's prompt decoder (the official ONNX inputs) "
                                             "and image encoder, or CoTracker3's online step, "
                                             "as ONNX files, checked against PyTorch")
    p.add_argument("target", nargs="?", choices=MODELS, default="sam", metavar="MODEL",
                   help="sam (default): SAM's decoder and encoder; cotracker: CoTracker3's "
                        "online step, one window with its state in and out")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours; with "
                                        "cotracker: the online CoTracker3, scaled_online.pth "
                                        "or ours (default: the shipped cotracker_tiny)")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--out", required=True, help="folder for the .onnx files and the .json "
                                                "describing them")
    p.add_argument("--quantize", action="store_true",
                   help="also write sam_decoder_quantized.onnx (8-bit weights, 1/4 the size)")
    p.add_argument("--encoder", action=argparse.BooleanOptionalAction, default=True,
                   help="also write sam_encoder.onnx (default: yes; minutes for vit_h)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset of the decoder, 14 to 20 (the encoder's is at least 18), "
                        "or of CoTracker's step, 14 to 20")
    p.add_argument("--return-single-mask", action="store_true",
                   help="the decoder returns only the best mask (the official option)")
    p.add_argument("--use-stability-score", action="store_true",
                   help="score masks by stability instead of predicted IoU (official option)")
    p.add_argument("--model-resolution", metavar="H,W",
                   help="cotracker: the frame size the graph takes (default: the one our "
                        "weights file records, else 384,512, the released models'); "
                        "multiples of 4")
    common(p, export_onnx)


def _log(message: str) -> None:
    print(f"attnvision export-onnx: {message}", file=sys.stderr)


def _require_onnx(encoder: bool) -> None:
    """Fail before the (slow) model load when the optional packages are missing."""
    import importlib.util

    needed = ("onnx", "onnxruntime") + (("onnxscript",) if encoder else ())
    missing = [p for p in needed if importlib.util.find_spec(p) is None]
    if missing:
        raise UserError(f"export-onnx needs {' and '.join(missing)}: "
                        "pip install attnvision[onnx]")


def export_onnx(args: argparse.Namespace) -> dict[str, Any]:
    if getattr(args, "target", "sam") == "cotracker":
        return export_cotracker(args)
    if getattr(args, "model_resolution", None) is not None:
        raise UserError("--model-resolution is CoTracker's: export-onnx cotracker "
                        "--checkpoint scaled_online.pth --model-resolution H,W (SAM's input "
                        "size is in its checkpoint)")
    return export_sam(args)


def export_sam(args: argparse.Namespace) -> dict[str, Any]:
    from attnvision.commands.sam import load_sam
    from attnvision.files import ensure_dir, write_json
    from attnvision.sam import onnx as sam_onnx

    opsets = sam_onnx.DECODER_OPSETS
    if args.opset not in opsets:  # said before the (slow) model load
        raise UserError(f"--opset {args.opset} is not supported: choose {opsets.start} to "
                        f"{opsets.stop - 1} (default {sam_onnx.DEFAULT_OPSET})")
    _require_onnx(args.encoder)
    model = load_sam(args.checkpoint, args.model)  # a bad checkpoint leaves no empty --out
    out = ensure_dir(args.out)
    single = args.return_single_mask
    stability = args.use_stability_score

    _log(f"exporting the prompt decoder to {out / 'sam_decoder.onnx'}")
    files = sam_onnx.export_decoder(model, out / "sam_decoder.onnx", opset=args.opset,
                                    quantize=args.quantize, return_single_mask=single,
                                    use_stability_score=stability)
    check = sam_onnx.compare_decoder(model, files["decoder"], return_single_mask=single,
                                     use_stability_score=stability)
    check["max_logit_diff"] = max(check["masks"], check["low_res_masks"])
    check["within_tolerance"] = check["max_logit_diff"] <= TOLERANCE
    _log(f"ONNX Runtime vs PyTorch: largest logit difference {check['max_logit_diff']:.2g} "
         f"(tolerance {TOLERANCE:g})")
    if not check["within_tolerance"]:
        _log("warning: the decoder graph does not reproduce PyTorch; please report this")
    if args.quantize:
        quantized = sam_onnx.compare_decoder(model, files["decoder_quantized"],
                                             return_single_mask=single,
                                             use_stability_score=stability)
        check["quantized"] = quantized
        _log(f"quantised decoder: {quantized['mask_agreement']:.2%} of mask pixels as in "
             "float32")
    if args.encoder:
        _log(f"exporting the image encoder to {out / 'sam_encoder.onnx'} (the slow part)")
        # torch.export writes opset 18 and newer (see attnvision.sam.onnx)
        encoder_opset = max(args.opset, sam_onnx.ENCODER_OPSET)
        files["encoder"] = sam_onnx.export_encoder(model, out / "sam_encoder.onnx",
                                                   opset=encoder_opset)
        data = files["encoder"].with_name(files["encoder"].name + ".data")
        if data.exists():
            files["encoder_data"] = data

    spec = sam_onnx.io_spec(model)
    metadata = {
        "checkpoint": str(args.checkpoint), "opset": args.opset, "img_size": model.img_size,
        "decoder": {"file": files["decoder"].name, "return_single_mask": single,
                    "use_stability_score": stability, **spec["decoder"]},
        "check": check,
    }
    if "decoder_quantized" in files:
        metadata["decoder_quantized"] = {
            "file": files["decoder_quantized"].name,
            "weights": "uint8, ONNX Runtime dynamic quantisation; same inputs and outputs"}
    if "encoder" in files:
        metadata["encoder"] = {"file": files["encoder"].name, "opset": encoder_opset,
                               **spec["encoder"]}
    files["metadata"] = write_json(out / "sam_onnx.json", metadata)

    return {"command": "export-onnx", "weights": str(args.checkpoint),
            "opset": args.opset, "img_size": model.img_size,
            "files": {k: str(v) for k, v in files.items()},
            "bytes": {k: Path(v).stat().st_size for k, v in files.items()},
            "check": check}


def export_cotracker(args: argparse.Namespace) -> dict[str, Any]:
    """``export-onnx cotracker``: the online step graph, checked, and its description."""
    import time

    from attnvision.commands.track import OFFICIAL_WEIGHTS, parse_resolution
    from attnvision.files import atomic_path, ensure_dir, write_json

    sam_only = [name for name, given in (
        ("--model", args.model is not None), ("--quantize", args.quantize),
        ("--return-single-mask", args.return_single_mask),
        ("--use-stability-score", args.use_stability_score)) if given]
    if sam_only:
        one = len(sam_only) == 1
        raise UserError(f"{' and '.join(sam_only)} {'is' if one else 'are'} SAM's: drop "
                        f"{'it' if one else 'them'} for export-onnx cotracker")
    weights = args.checkpoint
    if weights is None:  # the shipped cotracker_tiny, where this install has it
        from attnvision.cotracker.pretrained import has_shipped, shipped_checkpoint

        if not has_shipped():
            raise UserError("this install ships no CoTracker3: export-onnx cotracker needs "
                            "--checkpoint FILE, the online CoTracker3 (the official "
                            f"scaled_online.pth is at {OFFICIAL_WEIGHTS})")
        weights = str(shipped_checkpoint())
        _log(f"no --checkpoint: exporting the shipped cotracker_tiny ({weights})")
    resolution = parse_resolution(args.model_resolution, weights)  # else the file's own
    from attnvision.cotracker import onnx as cotracker_onnx  # torch: after the checks above

    opsets = cotracker_onnx.OPSETS
    if args.opset not in opsets:
        raise UserError(f"--opset {args.opset} is not supported: choose {opsets.start} to "
                        f"{opsets.stop - 1} (default {cotracker_onnx.DEFAULT_OPSET})")
    _require_onnx(encoder=False)
    model = cotracker_onnx.online_model(weights, resolution)  # before --out exists
    out = ensure_dir(args.out)
    path = out / COTRACKER_GRAPH
    _log(f"exporting CoTracker3's online step to {path}")
    with atomic_path(path) as staged:  # in place only once it has passed the check
        start = time.perf_counter()
        cotracker_onnx.export_online_step(model, staged, opset=args.opset)
        export_seconds = time.perf_counter() - start
        _log("checking it in ONNX Runtime against PyTorch over a synthetic clip of four "
             "windows")
        check = cotracker_onnx.compare_online_step(model, staged, tolerance_px=TOLERANCE_PX,
                                                   log=_log)
        _log(f"ONNX Runtime vs PyTorch: largest position difference "
             f"{check['max_position_diff_px']:.2g} px (tolerance {TOLERANCE_PX:g})")
        if "float64" in check:
            f64 = check["float64"]
            _log(f"against float64 PyTorch: ONNX Runtime {f64['onnxruntime_error_px']:.2g} px "
                 f"off, PyTorch float32 {f64['pytorch_float32_error_px']:.2g} px off")
        if not check["within_tolerance"]:
            raise RuntimeError(
                f"the exported graph does not reproduce PyTorch (positions differ by up to "
                f"{check['max_position_diff_px']:.3g} px over the check clip): nothing was "
                "written; please report this")
    config = model.config
    metadata = {
        "checkpoint": weights, "opset": args.opset,
        "model_resolution": list(resolution), "window_len": config.window_len,
        "step": config.window_len // 2, "iters": cotracker_onnx.ITERS,
        "online_step": {"file": path.name, **cotracker_onnx.io_spec(model)},
        "runner": "attnvision.cotracker.runtime.OnnxOnlineTracker(path).track(frames, "
                  "queries=... | grid_size=N): NumPy and onnxruntime only",
        "check": check,
    }
    files = {"online_step": path, "metadata": write_json(out / COTRACKER_METADATA, metadata)}
    return {"command": "export-onnx", "model": "cotracker", "weights": weights,
            "opset": args.opset, "model_resolution": list(resolution),
            "window_len": config.window_len, "export_seconds": export_seconds,
            "files": {k: str(v) for k, v in files.items()},
            "bytes": {k: Path(v).stat().st_size for k, v in files.items()},
            "check": check}
