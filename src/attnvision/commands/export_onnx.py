"""``attnvision export-onnx``: SAM's prompt decoder (and image encoder) as ONNX files.

Writes ``sam_decoder.onnx`` (the official input and output names), optionally
``sam_decoder_quantized.onnx`` and ``sam_encoder.onnx``, and ``sam_onnx.json`` saying what
each graph takes and returns. Before reporting success it runs the decoder in ONNX Runtime
and in PyTorch on one random prompt and reports the largest logit difference, so a broken
export never passes for a good one.
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


def register(commands: argparse._SubParsersAction) -> None:
    p = add_command(commands, "export-onnx", "SAM's prompt decoder (the official ONNX inputs) "
                                             "and image encoder as ONNX files, checked against "
                                             "PyTorch")
    p.add_argument("--checkpoint", help="SAM weights: an official sam_vit_*.pth or ours")
    p.add_argument("--model", choices=SAM_SIZES,
                   help="SAM size (default: read from the checkpoint)")
    p.add_argument("--out", required=True, help="folder for the .onnx files and sam_onnx.json")
    p.add_argument("--quantize", action="store_true",
                   help="also write sam_decoder_quantized.onnx (8-bit weights, 1/4 the size)")
    p.add_argument("--encoder", action=argparse.BooleanOptionalAction, default=True,
                   help="also write sam_encoder.onnx (default: yes; minutes for vit_h)")
    p.add_argument("--opset", type=int, default=17,
                   help="ONNX opset of the decoder, 14 to 20 (the encoder's is at least 18)")
    p.add_argument("--return-single-mask", action="store_true",
                   help="the decoder returns only the best mask (the official option)")
    p.add_argument("--use-stability-score", action="store_true",
                   help="score masks by stability instead of predicted IoU (official option)")
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
