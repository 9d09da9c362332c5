"""SAM as ONNX graphs: the prompt decoder (with the official I/O contract) and the image encoder.

Two graphs, so that a browser or a phone embeds an image once and prompts it many times:

- ``sam_decoder.onnx`` (:class:`SamOnnxDecoder`): prompt encoder + mask decoder + mask
  upscaling, with the official export's inputs and outputs, so code written for the official
  ONNX example runs unchanged.

  ====================  ==================  ==============================================
  input                 shape, type         meaning
  ====================  ==================  ==============================================
  ``image_embeddings``  (1, 256, 64, 64) f  the encoder's output
  ``point_coords``      (1, N, 2) float     (x, y) in the resized frame (longest side 1024);
                                            N is dynamic
  ``point_labels``      (1, N) float        1 object, 0 background, 2 / 3 box top-left /
                                            bottom-right corner, -1 padding
  ``mask_input``        (1, 1, 256, 256) f  low-res logits of an earlier call (or zeros)
  ``has_mask_input``    (1,) float          1 to use ``mask_input``, 0 to ignore it
  ``orig_im_size``      (2,) float          (H, W) of the original image
  ====================  ==================  ==============================================

  Outputs: ``masks`` (1, C, H, W) logits at the original size (threshold at 0), with H, W read
  from ``orig_im_size`` at run time; ``iou_predictions`` (1, C); ``low_res_masks`` (1, C, 256,
  256) logits, to feed back as ``mask_input``. C = 4 (the single-mask token first, then the
  three multimask outputs), or 1 with ``return_single_mask``.

  As in the official graph, the caller lays out the prompt: points, then either the two box
  corners (labels 2, 3) or, when there is no box, one padding point (0, 0) with label -1 (the
  decoder was trained that way; :func:`decoder_inputs` does it).

- ``sam_encoder.onnx`` (:class:`SamOnnxEncoder`): normalisation, padding and the ViT. Input
  ``image`` (1, 3, h, w) float RGB in 0..255, already resized so that max(h, w) = 1024
  (:class:`~attnvision.sam.transforms.ResizeLongestSide`, the one step left outside: resizing
  is best done by the image library that decoded the picture); h and w are dynamic. Output
  ``image_embeddings`` (1, 256, 64, 64).

Two exporters, each where it works:

- the decoder goes through PyTorch's TorchScript tracer (``dynamo=False``). Its output size
  is a run-time *value* (``orig_im_size``), which tracing records as a dynamic ``Resize``, as
  the official export relies on; ``torch.export`` would need unbacked symbolic sizes there,
  and cannot trace the prompt encoder's dense-PE cache (keyed on a data pointer). The tracer
  is deprecated since torch 2.9 but complete in 2.14; its notice is silenced here.
- the encoder goes through ``torch.export`` (``dynamo=True``, which needs ``onnxscript``).
  The tracer cannot express the encoder's eager-mode economies (window padding written into a
  preallocated tensor, bands of 14 rows out of 64, a bias summed into a reused buffer: its
  graph fails shape inference or crashes); ``torch.export`` functionalises them. It writes
  opset 18 natively (its conversion down to 17 leaves an invalid ``Split``), so the encoder
  graph is opset 18 or newer.

Every graph is checked with ``onnx.checker`` and compared with PyTorch in the tests.
``onnx``, ``onnxruntime`` and ``onnxscript`` are optional (``pip install attnvision[onnx]``):
they are imported inside the functions that need them, so this module imports without them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnvision.errors import UserError
from attnvision.files import atomic_path
from attnvision.sam.masks import stability_score
from attnvision.sam.model import Sam

DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input",
                  "has_mask_input", "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
ENCODER_INPUTS = ("image",)
ENCODER_OUTPUTS = ("image_embeddings",)
DEFAULT_OPSET = 17  # the decoder's, as the official export
ENCODER_OPSET = 18  # the lowest that torch.export writes cleanly
# Attention exports from opset 14; the TorchScript exporter goes up to 20, torch.export to 23.
DECODER_OPSETS = range(14, 21)
ENCODER_OPSETS = range(ENCODER_OPSET, 24)
_INSTALL = "pip install attnvision[onnx]"


class SamOnnxDecoder(nn.Module):
    """Prompt encoder + mask decoder + upscaling of a :class:`Sam`, written for tracing.

    Every branch is on Python values fixed at export (options, sizes of the embedding grid);
    what depends on the inputs (labels, ``has_mask_input``, the number of points, the output
    size) is arithmetic, so one graph serves any prompt.

    ``return_single_mask`` keeps one mask as the official export does: with more than two
    prompt points (padding and box corners included) the single-mask token, otherwise the
    best-scoring of the three multimask outputs. ``use_stability_score`` replaces the
    predicted IoU by the stability score of the low-res logits (offset 1.0), before that
    choice, as the official option does.
    """

    def __init__(self, model: Sam, return_single_mask: bool = False,
                 use_stability_score: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = model.img_size
        self.mask_threshold = model.mask_threshold
        self.return_single_mask = return_single_mask
        self.use_stability_score = use_stability_score
        self.stability_score_offset = 1.0

    def _embed_points(self, coords: Tensor, labels: Tensor) -> Tensor:
        # coords: (1, N, 2) resized-frame pixels, labels: (1, N) float -> (1, N, D)
        pe = self.prompt_encoder.pe_layer.forward_with_coords(
            coords + 0.5, self.prompt_encoder.input_image_size)  # pixel centres
        labels = labels[..., None]  # (1, N, 1), broadcasts over D
        # Padding carries no position, only the "not a point" vector; every other label adds
        # its learned embedding (0 negative, 1 positive, 2 / 3 box corners) to the position.
        emb = torch.where(labels == -1, self.prompt_encoder.not_a_point_embed.weight, pe)
        for i, point_embedding in enumerate(self.prompt_encoder.point_embeddings):
            emb = emb + (labels == i).to(emb.dtype) * point_embedding.weight
        return emb

    def _embed_mask(self, mask_input: Tensor, has_mask_input: Tensor) -> Tensor:
        # mask_input: (1, 1, 4h, 4w), has_mask_input: (1,) -> (1, D, h, w)
        # Both branches run; the flag blends them, 1 or 0, as a weight.
        has = has_mask_input.reshape(-1, 1, 1, 1)
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has * self.prompt_encoder.mask_downscaling(mask_input) + (1 - has) * no_mask

    def _select(self, masks: Tensor, scores: Tensor, num_points: Tensor) -> tuple[Tensor, Tensor]:
        # masks: (1, 4, 4h, 4w), scores: (1, 4), num_points: (1,) float -> (1, 1, ...), (1, 1)
        # The official rule without control flow: a huge bonus (or malus) on the single-mask
        # token, +500 from three points on, -500 below.
        bonus = torch.zeros(scores.shape[1], dtype=scores.dtype)
        bonus[0] = 1000.0  # a constant of the graph
        best = torch.argmax(scores + (num_points[:, None] - 2.5) * bonus, dim=1)  # (1,)
        scores = torch.gather(scores, 1, best[:, None])
        index = best[:, None, None, None].expand(-1, 1, masks.shape[2], masks.shape[3])
        return torch.gather(masks, 1, index), scores

    def _upscale(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        # masks: (1, C, 4h, 4w), orig_im_size: (2,) float (H, W) -> (1, C, H, W)
        # Sam.postprocess_masks with sizes computed in the graph: up to the padded input,
        # crop the padding, down (or up) to the original size.
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear",
                              align_corners=False)
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (self.img_size / size.max()) + 0.5).to(torch.int64)
        # Gathering rows and columns 0..n-1 is a crop whose n is an input, not a constant.
        masks = masks.index_select(2, torch.arange(resized[0]))
        masks = masks.index_select(3, torch.arange(resized[1]))
        h, w = size.to(torch.int64)
        return F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(self, image_embeddings: Tensor, point_coords: Tensor, point_labels: Tensor,
                mask_input: Tensor, has_mask_input: Tensor,
                orig_im_size: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # image_embeddings: (1, D, h, w), point_coords: (1, N, 2), point_labels: (1, N),
        # mask_input: (1, 1, 4h, 4w), has_mask_input: (1,), orig_im_size: (2,)
        sparse = self._embed_points(point_coords, point_labels)  # (1, N, D)
        dense = self._embed_mask(mask_input, has_mask_input)  # (1, D, h, w)
        low_res, scores = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)  # all 4
        if self.use_stability_score:
            scores = stability_score(low_res, self.mask_threshold, self.stability_score_offset)
        if self.return_single_mask:
            # The point count as a value computed from the input, so it stays dynamic.
            low_res, scores = self._select(low_res, scores, torch.ones_like(point_labels).sum(1))
        return self._upscale(low_res, orig_im_size), scores, low_res


class SamOnnxEncoder(nn.Module):
    """Normalise, pad and encode one resized image: (1, 3, h, w) 0..255 -> (1, 256, 64, 64).

    ``Sam.preprocess`` inside the graph, so a client only resizes the longest side to
    ``img_size``; padding comes after normalisation, as the model was trained.
    """

    def __init__(self, model: Sam) -> None:
        super().__init__()
        self.image_encoder = model.image_encoder
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), False)
        self.img_size = model.img_size

    @torch.no_grad()
    def forward(self, image: Tensor) -> Tensor:
        # image: (1, 3, h, w) RGB 0..255 with max(h, w) = img_size -> (1, 256, g, g)
        x = (image - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        x = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))  # (1, 3, S, S)
        return self.image_encoder(x)


def io_spec(model: Sam) -> dict[str, Any]:
    """Both graphs' inputs and outputs (name, shape, type, meaning) for ``model``'s sizes:
    what a client needs to feed them, written beside the files by ``attnvision export-onnx``."""
    d = model.prompt_encoder.embed_dim
    h, w = model.prompt_encoder.image_embedding_size
    size = model.img_size

    def io(name: str, shape: list[int | str], meaning: str) -> dict[str, Any]:
        return {"name": name, "shape": shape, "dtype": "float32", "meaning": meaning}

    return {
        "decoder": {
            "inputs": [
                io("image_embeddings", [1, d, h, w], "the encoder's output"),
                io("point_coords", [1, "num_points", 2],
                   f"(x, y) pixels in the resized frame (longest side {size})"),
                io("point_labels", [1, "num_points"],
                   "1 object, 0 background, 2 / 3 box top-left / bottom-right, -1 padding"),
                io("mask_input", [1, 1, 4 * h, 4 * w], "low-res logits of an earlier call"),
                io("has_mask_input", [1], "1 to use mask_input, 0 to ignore it"),
                io("orig_im_size", [2], "(H, W) of the original image"),
            ],
            "outputs": [
                io("masks", [1, "C", "H", "W"],
                   "mask logits at the original size; a pixel is in the mask where > 0"),
                io("iou_predictions", [1, "C"], "predicted IoU of each mask"),
                io("low_res_masks", [1, "C", 4 * h, 4 * w], "logits to feed back as mask_input"),
            ],
            "masks_per_prompt": "C = 4 (single-mask token first, then 3 multimask outputs), "
                                "or 1 with return_single_mask",
            "prompt_layout": "points, then the box as two corner points labelled 2 and 3; "
                             "without a box, one padding point (0, 0) labelled -1",
        },
        "encoder": {
            "inputs": [io("image", [1, 3, "height", "width"],
                          f"RGB pixels 0..255, resized so that max(height, width) = {size}")],
            "outputs": [io("image_embeddings", [1, d, h, w], "the decoder's first input")],
            "preprocessing": f"resize the longest side to {size} (bilinear, aspect kept, "
                             "rounded half up); the graph normalises with the ImageNet mean "
                             "and std and pads to the square",
        },
    }


# --- prompts in the official layout -------------------------------------------------------------

def decoder_inputs(image_embeddings: np.ndarray | Tensor, original_size: tuple[int, int],
                   point_coords: np.ndarray | None = None,
                   point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                   mask_input: np.ndarray | None = None,
                   img_size: int = 1024) -> dict[str, np.ndarray]:
    """The decoder graph's feed for one prompt given in original-image pixels.

    Points (N, 2) with labels (N,), and/or a box (4,) as x0, y0, x1, y1, are moved to the
    resized frame and laid out as the decoder was trained: the box as two corner points
    (labels 2, 3) after the points, or, without a box, a padding point (0, 0) labelled -1.
    ``mask_input`` (1, 256, 256) or (1, 1, 256, 256) low-res logits, if given, switch
    ``has_mask_input`` on.
    """
    from attnvision.sam.transforms import ResizeLongestSide

    transform = ResizeLongestSide(img_size)
    coords = np.zeros((0, 2)) if point_coords is None else np.asarray(point_coords, float)
    labels = np.zeros(0) if point_labels is None else np.asarray(point_labels, float)
    if coords.shape[0] != labels.shape[0]:
        raise UserError(f"{coords.shape[0]} points and {labels.shape[0]} labels: give one "
                        "label per point")
    if box is not None:
        coords = np.concatenate([coords, np.asarray(box, float).reshape(2, 2)])
        labels = np.concatenate([labels, [2.0, 3.0]])
    else:
        coords = np.concatenate([coords, np.zeros((1, 2))])
        labels = np.concatenate([labels, [-1.0]])
    coords = transform.apply_coords(coords, original_size)  # the padding point stays at 0
    embeddings = np.asarray(image_embeddings, dtype=np.float32)
    grid = embeddings.shape[-2:]
    if mask_input is None:
        mask = np.zeros((1, 1, 4 * grid[0], 4 * grid[1]), np.float32)
    else:
        mask = np.asarray(mask_input, np.float32).reshape(1, 1, 4 * grid[0], 4 * grid[1])
    return {
        "image_embeddings": embeddings.reshape(1, -1, *grid),
        "point_coords": coords[None].astype(np.float32),
        "point_labels": labels[None].astype(np.float32),
        "mask_input": mask,
        "has_mask_input": np.array([0.0 if mask_input is None else 1.0], np.float32),
        "orig_im_size": np.array(original_size, np.float32),
    }


# --- export -------------------------------------------------------------------------------------

def _require(package: str) -> Any:
    """Import an optional package, or say in one line how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        name = package.split(".")[0]
        raise UserError(f"ONNX export needs the {name} package: {_INSTALL}") from None


def _check_opset(opset: int, allowed: range, graph: str) -> None:
    if opset not in allowed:
        raise UserError(f"opset {opset} is not supported for the {graph}: choose "
                        f"{allowed.start} to {allowed.stop - 1}")


@contextlib.contextmanager
def _inference_only(module: nn.Module) -> Iterator[None]:
    """No parameter asks for gradients while exporting: ``torch.export`` traces with autograd
    on, and refuses the encoder's ``out=`` sums on tensors that require grad."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _publish(staged: Path, path: Path) -> Path:
    """Check the graph saved at ``staged`` and move it (and a weights file beside it, for
    graphs over protobuf's 2 GiB) into place, the graph last: ``path`` appears only whole."""
    onnx = _require("onnx")
    onnx.checker.check_model(str(staged))  # by path: works past 2 GiB
    extras = [f for f in staged.parent.iterdir() if f != staged]
    for extra in extras:
        os.replace(extra, path.parent / extra.name)
    stale = path.with_name(f"{path.name}.data")  # of an earlier, larger export to this name
    if stale.name not in {f.name for f in extras}:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    os.replace(staged, path)
    return path


@contextlib.contextmanager
def _staging(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A file name in a fresh folder beside ``path``, removed with whatever is left in it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        (Path(tmp) / "graph").mkdir()
        yield Path(tmp) / "graph" / path.name


def _example_decoder_inputs(model: Sam, num_points: int = 5, seed: int = 0
                            ) -> tuple[Tensor, ...]:
    """A random prompt in the decoder's input layout: N points, the last one padding."""
    gen = torch.Generator().manual_seed(seed)
    dim = model.prompt_encoder.embed_dim
    h, w = model.prompt_encoder.image_embedding_size
    labels = torch.randint(0, 2, (1, num_points), generator=gen).float()
    labels[0, -1] = -1.0
    return (torch.randn(1, dim, h, w, generator=gen),
            torch.rand(1, num_points, 2, generator=gen) * model.img_size,
            labels,
            torch.randn(1, 1, 4 * h, 4 * w, generator=gen),
            torch.ones(1),
            torch.tensor([0.75 * model.img_size, 1.0 * model.img_size]))


def export_decoder(model: Sam, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                   quantize: bool = False, return_single_mask: bool = False,
                   use_stability_score: bool = False) -> dict[str, Path]:
    """Write the prompt decoder graph (:class:`SamOnnxDecoder`) to ``path``.

    With ``quantize``, also ``<stem>_quantized.onnx`` beside it (:func:`quantize_decoder`).
    Returns ``{"decoder": path[, "decoder_quantized": path]}``.
    """
    _check_opset(opset, DECODER_OPSETS, "decoder")
    onnx = _require("onnx")
    decoder = SamOnnxDecoder(model, return_single_mask, use_stability_score).eval()
    path = Path(path)
    with _staging(path) as staged:
        with warnings.catch_warnings():
            # TracerWarnings name the Python values frozen into the graph (sizes fixed at
            # export, by design); the deprecation notice is about this exporter, chosen on
            # purpose (see the module's docstring).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                decoder, _example_decoder_inputs(model), str(staged), dynamo=False,
                opset_version=opset, input_names=list(DECODER_INPUTS),
                output_names=list(DECODER_OUTPUTS), do_constant_folding=True,
                dynamic_axes={"point_coords": {1: "num_points"},
                              "point_labels": {1: "num_points"},
                              "masks": {2: "orig_height", 3: "orig_width"}})
        proto = onnx.load(str(staged))
        proto.doc_string = "SAM prompt encoder + mask decoder + upscaling (attnvision)"
        onnx.helper.set_model_props(proto, {
            "producer": "attnvision", "graph": "sam_decoder", "img_size": str(model.img_size),
            "return_single_mask": str(return_single_mask).lower(),
            "use_stability_score": str(use_stability_score).lower(),
            "prompt_layout": "points then box corners (labels 2, 3); without a box, one "
                             "padding point (0, 0) labelled -1"})
        onnx.save_model(proto, str(staged))
        written = {"decoder": _publish(staged, path)}
    if quantize:
        written["decoder_quantized"] = quantize_decoder(
            path, path.with_name(f"{path.stem}_quantized{path.suffix}"))
    return written


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hold back ONNX Runtime's advice to run its shape pre-processing first, which it logs on
    the root logger at every call: dynamic quantisation of this graph does not need it."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_decoder(source: str | os.PathLike[str], target: str | os.PathLike[str],
                     weight_type: str = "quint8") -> Path:
    """8-bit weights for the decoder's matrix products (ONNX Runtime's dynamic quantisation).

    About a quarter of the file and faster on CPUs; activations are quantised per call, so
    logits move by about a tenth and a percent or two of mask pixels flip (measured in the
    tests). ``weight_type`` "quint8" (as the official export) or "qint8".
    """
    _require("onnx")
    quantization = _require("onnxruntime.quantization")
    types = {"quint8": quantization.QuantType.QUInt8, "qint8": quantization.QuantType.QInt8}
    if weight_type not in types:
        raise UserError(f"weight_type must be one of {sorted(types)}, got {weight_type!r}")
    target = Path(target)
    with atomic_path(target) as tmp, _quiet_root_logger():
        quantization.quantize_dynamic(str(source), str(tmp), per_channel=False,
                                      reduce_range=False, weight_type=types[weight_type])
    return target


def export_encoder(model: Sam, path: str | os.PathLike[str],
                   opset: int = ENCODER_OPSET) -> Path:
    """Write the image encoder graph (:class:`SamOnnxEncoder`) to ``path``.

    Weights past protobuf's 2 GiB (ViT-H) go to ``<name>.data`` beside the graph: keep the two
    files together.
    """
    _check_opset(opset, ENCODER_OPSETS, "encoder")
    _require("onnx")
    _require("onnxscript")
    encoder = SamOnnxEncoder(model).eval()
    size = model.img_size
    example = torch.rand(1, 3, size, (3 * size) // 4) * 255  # a portrait image, resized
    dims = {2: torch.export.Dim("height", min=2, max=size),
            3: torch.export.Dim("width", min=2, max=size)}
    with _inference_only(encoder), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export's notes on specialised sizes
        program = torch.onnx.export(encoder, (example,), None, dynamo=True,
                                    opset_version=opset, input_names=list(ENCODER_INPUTS),
                                    output_names=list(ENCODER_OUTPUTS),
                                    dynamic_shapes={"image": dims}, verbose=False)
    program.model.doc_string = "SAM image encoder with its normalisation and padding (attnvision)"
    program.model.metadata_props.update({
        "producer": "attnvision", "graph": "sam_encoder", "img_size": str(size),
        "preprocessing": f"RGB, resized so that the longest side is {size} (bilinear), "
                         "float 0..255, (1, 3, h, w); the graph normalises and pads"})
    with _staging(path) as staged:
        program.save(str(staged))  # weights beside it past 2 GiB
        return _publish(staged, Path(path))


def compare_decoder(model: Sam, path: str | os.PathLike[str], num_points: int = 3,
                    seed: int = 0, return_single_mask: bool = False,
                    use_stability_score: bool = False) -> dict[str, float]:
    """Run a decoder graph in ONNX Runtime and PyTorch on one random prompt.

    Returns the largest absolute differences of ``masks``, ``iou_predictions`` and
    ``low_res_masks``, and the fraction of mask pixels on the same side of the threshold.
    """
    ort = _require("onnxruntime")
    args = _example_decoder_inputs(model, num_points, seed)
    with torch.no_grad():
        expected = SamOnnxDecoder(model, return_single_mask, use_stability_score).eval()(*args)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {name: t.numpy() for name, t in zip(DECODER_INPUTS, args,
                                                                  strict=True)})
    diffs = {name: float(np.abs(g - e.numpy()).max())
             for name, g, e in zip(DECODER_OUTPUTS, got, expected, strict=True)}
    threshold = model.mask_threshold
    diffs["mask_agreement"] = float(((got[0] > threshold) == (expected[0].numpy() > threshold))
                                    .mean())
    return diffs
