"""Embed once, prompt many times: the official ``SamPredictor`` interface, and more.

Beyond the official predictor: several boxes or several point sets in one ``predict`` call
(one decoder pass), file paths and any image mode in ``set_image``, clear errors for prompts
outside the image, and embeddings saved to and loaded from files so that an image is never
encoded twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from attnvision.errors import UserError
from attnvision.files import atomic_path
from attnvision.sam.model import Sam
from attnvision.sam.text_locator import peak_click
from attnvision.sam.transforms import ResizeLongestSide, preprocess_shape
from attnvision.sam.two_way import ImageContext

ImageLike = np.ndarray | str | os.PathLike


def as_rgb_uint8(image: ImageLike, image_format: str = "RGB") -> np.ndarray:
    """A file path or an array (H, W), (H, W, 1|3|4) -> (H, W, 3) uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        from attnvision.data.images import load_image

        return load_image(image)  # EXIF orientation, every mode -> RGB
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise UserError(f"SAM expects a uint8 image (0..255), got {image.dtype}: convert with "
                        "(image * 255).round().astype(np.uint8) if it is in [0, 1]")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise UserError(f"SAM expects an (H, W, 3) image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[..., :3]  # drop alpha, as Pillow's convert("RGB") does
    if image_format not in ("RGB", "BGR"):
        raise UserError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    if image_format == "BGR":
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def model_fingerprint(model: Sam) -> str:
    """A short hash of the encoder's first and last weights and its input size: embeddings
    belong to a model, and the same weights run at another size (``build_sam(...,
    img_size=S)``) give embeddings of another grid."""
    h = hashlib.sha1(str(model.image_encoder.img_size).encode())
    for t in (model.image_encoder.patch_embed.proj.weight, model.image_encoder.neck[-1].weight):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def check_points(coords: np.ndarray, labels: np.ndarray | None, size: tuple[int, int]) -> None:
    """One-line errors for point prompts that do not fit an image of ``size`` (H, W)."""
    if labels is None:
        raise UserError("point_coords needs point_labels (1 = foreground, 0 = background)")
    if coords.shape[-1] != 2 or coords.ndim not in (2, 3):
        raise UserError(f"point_coords must be (N, 2) or (K, N, 2), got {coords.shape}")
    if labels.shape != coords.shape[:-1]:
        raise UserError(f"point_labels of shape {labels.shape} do not match point_coords "
                        f"of shape {coords.shape}: one label per point")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise UserError("point_labels must be 1 (foreground) or 0 (background)")
    h, w = size
    bad = (coords[..., 0] < 0) | (coords[..., 0] > w) | (coords[..., 1] < 0) | (
        coords[..., 1] > h)
    if bad.any():
        x, y = coords[bad][0]
        raise UserError(f"point ({x:g}, {y:g}) is outside the {w}x{h} image: x must be in "
                        f"[0, {w}] and y in [0, {h}]")


def check_boxes(boxes: np.ndarray, size: tuple[int, int]) -> None:
    """One-line errors for XYXY boxes that are reversed or leave an image of ``size``."""
    if boxes.shape[-1] != 4 or boxes.ndim > 2:
        raise UserError(f"box must be (4,) or (K, 4) as x0, y0, x1, y1, got {boxes.shape}")
    h, w = size
    for x0, y0, x1, y1 in boxes.reshape(-1, 4):
        if x1 < x0 or y1 < y0:
            raise UserError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has x1 < x0 or y1 < y0: "
                            "give the top-left corner first")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise UserError(f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) extends outside the "
                            f"{w}x{h} image: clip it to the image")


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set = False
        self.image: np.ndarray | None = None  # the RGB image of set_image, for zooming in
        self.features: Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self._context: ImageContext | None = None

    # --- the image ---------------------------------------------------------------------------

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        """Embed an (H, W, 3) uint8 image (or a path; grayscale and RGBA are converted)."""
        rgb = as_rgb_uint8(image, image_format)
        if min(rgb.shape[:2]) < 1:
            raise UserError(f"the image is empty (shape {rgb.shape})")
        resized = self.transform.apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        self.set_torch_image(x, rgb.shape[:2])
        self.keep_image(rgb, image)

    def keep_image(self, rgb: np.ndarray, given: ImageLike | None = None) -> None:
        """Keep ``rgb``, the (H, W, 3) uint8 pixels of the current embedding, for zooming in
        (:mod:`attnvision.sam.zoom`). ``given``: what the caller passed, if ``rgb`` came from
        it; ``rgb`` is copied only while it is still the caller's buffer, which the caller
        may reuse (video frames), never when it is an array of its own."""
        caller = isinstance(given, np.ndarray) and np.may_share_memory(rgb, given)
        self.image = rgb.copy() if caller else rgb

    @torch.no_grad()
    def set_torch_image(self, transformed_image: Tensor, original_image_size: tuple[int, ...]
                        ) -> None:
        """Embed a (1, 3, h, w) image already resized so max(h, w) = img_size."""
        size = self.model.image_encoder.img_size
        if (transformed_image.ndim != 4 or transformed_image.shape[1] != 3
                or max(transformed_image.shape[2:]) != size):
            raise UserError(f"set_torch_image expects (1, 3, h, w) with max(h, w) = {size}, "
                            f"got {tuple(transformed_image.shape)}: use set_image")
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[2]), int(transformed_image.shape[3]))
        with self.model.autocast():
            self.features = self.model.image_encoder(self.model.preprocess(transformed_image))
        self.is_image_set = True

    @torch.no_grad()
    def decoder_context(self) -> ImageContext:
        """The mask decoder's prompt-independent work on the current image, computed at the
        first prompt and kept until the image changes."""
        self._require_image()
        if self._context is None:
            prompt_encoder = self.model.prompt_encoder
            with self.model.autocast():
                self._context = self.model.mask_decoder.prepare_image(
                    self.features, prompt_encoder.get_dense_pe(),
                    prompt_encoder(points=None, boxes=None, masks=None)[1])
        return self._context

    def get_image_embedding(self) -> Tensor:
        """(1, 256, 64, 64) embedding of the current image."""
        self._require_image()
        return self.features

    def set_image_embedding(self, embedding: Tensor, original_size: tuple[int, int],
                            input_size: tuple[int, int] | None = None,
                            context: ImageContext | None = None) -> None:
        """Use an embedding computed earlier for an image of ``original_size`` (H, W);
        ``context``: its :meth:`decoder_context` from an earlier predictor, if kept."""
        size = self.model.image_encoder.img_size
        grid = size // self.model.image_encoder.patch_embed.proj.kernel_size[0]
        if embedding.ndim == 3:
            embedding = embedding[None]
        if tuple(embedding.shape[1:]) != (self.model.prompt_encoder.embed_dim, grid, grid):
            raise UserError(f"embedding of shape {tuple(embedding.shape)} does not fit this "
                            f"model: expected (1, {self.model.prompt_encoder.embed_dim}, "
                            f"{grid}, {grid})")
        self.reset_image()
        self.original_size = (int(original_size[0]), int(original_size[1]))
        self.input_size = input_size or preprocess_shape(*self.original_size, size)
        self.features = embedding.to(self.device)
        self._context = context
        self.is_image_set = True

    def save_embedding(self, path: str | os.PathLike[str]) -> Path:
        """Write the current embedding (and which model and image size it belongs to)."""
        self._require_image()
        metadata = {"original_size": f"{self.original_size[0]},{self.original_size[1]}",
                    "input_size": f"{self.input_size[0]},{self.input_size[1]}",
                    "model": model_fingerprint(self.model)}
        with atomic_path(path) as tmp:
            save_file({"embedding": self.features.detach().contiguous().cpu()}, str(tmp),
                      metadata=metadata)
        return Path(path)

    def load_embedding(self, path: str | os.PathLike[str]) -> None:
        """Set an embedding saved by :meth:`save_embedding` for this same model."""
        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                embedding = f.get_tensor("embedding")
        except (SafetensorError, OSError, KeyError) as e:
            raise UserError(f"{path} is not an embedding file written by save_embedding "
                            f"({e})") from None
        if meta.get("model") != model_fingerprint(self.model):
            raise UserError(f"{path} was computed by another model: embed the image again")
        orig = tuple(int(v) for v in meta["original_size"].split(","))
        inp = tuple(int(v) for v in meta["input_size"].split(","))
        self.set_image_embedding(embedding, orig, inp)

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask "
                               "prediction.")

    # --- prompts -----------------------------------------------------------------------------

    def _phrase_vectors(self, text: str | list[str]) -> Tensor:
        """(K, text_dim) sentence vectors of one phrase or K, on the model's device."""
        phrases = [text] if isinstance(text, str) else list(text)
        if not phrases or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise UserError("text must be a non-empty phrase (or a list of them), e.g. "
                            "text='the red star'")
        self.model.prompt_encoder.require_text()
        from attnvision.text.sentence_encoder import sentence_encoder

        return sentence_encoder().encode([p.strip() for p in phrases]).to(self.device)

    @torch.no_grad()
    def locate_text(self, text: str) -> np.ndarray:
        """Where a phrase points before the decoder answers: (H, W) probabilities over the
        original image, the text locator's coarse map that a text prompt starts from."""
        self._require_image()
        if not isinstance(text, str):
            raise UserError(f"locate_text takes one phrase (a str), got {type(text).__name__}: "
                            "call it once per phrase")
        vectors = self._phrase_vectors(text)
        with self.model.autocast():
            low = self.model.prompt_encoder.locate_text(self.features, vectors)
        heat = self.model.postprocess_masks(low.float(), self.input_size, self.original_size)
        return torch.sigmoid(heat)[0, 0].cpu().numpy()

    def predict(self, point_coords: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None, multimask_output: bool = True,
                return_logits: bool = False, text: str | list[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for prompts in original-image pixels, as the official ``predict``.

        One prompt (points (N, 2) and/or a box (4,)) gives masks (C, H, W), scores (C,) and
        low-res logits (C, 256, 256), C = 3 with ``multimask_output`` else 1. Several prompts,
        points (K, N, 2) and/or boxes (K, 4), give the same with a leading K, in one pass.
        ``text``: a phrase naming the object ("the red star"), alone or with points and a box,
        or K phrases for K prompts; only models trained for text take it (``attnvision
        train sam --text``), and it needs ``pip install 'attnvision[text]'``. Where the phrase
        points (:meth:`locate_text`) becomes the mask prompt, unless ``mask_input`` is given,
        and a phrase with no points, box or mask also gets a click at the strongest point of
        that map. Text prompts are trained for the single mask: pass
        ``multimask_output=False`` with them.
        """
        self._require_image()
        batched = False
        coords_t = labels_t = box_t = mask_t = text_t = None
        if text is not None:
            text_t = self._phrase_vectors(text)
            batched |= not isinstance(text, str)
        if point_coords is not None:
            coords = np.asarray(point_coords, dtype=float)
            labels = None if point_labels is None else np.asarray(point_labels)
            check_points(coords, labels, self.original_size)
            batched |= coords.ndim == 3
            coords = coords if coords.ndim == 3 else coords[None]
            labels = labels if labels.ndim == 2 else labels[None]
            coords_t = torch.as_tensor(self.transform.apply_coords(coords, self.original_size),
                                       dtype=torch.float, device=self.device)
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)
        if box is not None:
            boxes = np.asarray(box, dtype=float)
            check_boxes(boxes, self.original_size)
            batched |= boxes.ndim == 2 and boxes.shape[0] > 1
            box_t = torch.as_tensor(self.transform.apply_boxes(boxes, self.original_size),
                                    dtype=torch.float, device=self.device)  # (K, 4)
        # K prompts: each kind gives K, or one that all K share.
        sizes = {what: t.shape[0] for what, t in (("point sets", coords_t), ("boxes", box_t),
                                                  ("phrases", text_t)) if t is not None}
        if len(set(sizes.values()) - {1}) > 1:
            raise UserError(" and ".join(f"{n} {what}" for what, n in sizes.items())
                            + ": give as many of each, or one to share")
        k = max(sizes.values(), default=1)
        if coords_t is not None:
            coords_t, labels_t = coords_t.expand(k, -1, -1), labels_t.expand(k, -1)
        box_t = None if box_t is None else box_t.expand(k, 4)
        text_t = None if text_t is None else text_t.expand(k, -1)
        if mask_input is not None:
            mask_t = torch.as_tensor(np.asarray(mask_input), dtype=torch.float,
                                     device=self.device)
            if mask_t.ndim == 3:
                mask_t = mask_t[None]
            low = 4 * self.features.shape[-1]  # the decoder's low-res size, 256 for SAM
            if tuple(mask_t.shape[1:]) != (1, low, low):
                raise UserError(f"mask_input must be (1, {low}, {low}) low-res logits (from a "
                                f"previous predict), got {tuple(mask_t.shape)}")
        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t,
                                                 multimask_output, return_logits, text_t)
        masks_np, iou_np, low_np = (t.detach().cpu().numpy() for t in (masks, iou, low_res))
        return (masks_np, iou_np, low_np) if batched else (masks_np[0], iou_np[0], low_np[0])

    @torch.no_grad()
    def predict_torch(self, point_coords: Tensor | None, point_labels: Tensor | None,
                      boxes: Tensor | None = None, mask_input: Tensor | None = None,
                      multimask_output: bool = True, return_logits: bool = False,
                      text_embeddings: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Batched prompts already in the resized frame: (B, N, 2) points, (B, 4) boxes,
        (B, 1, 256, 256) masks, (B, text_dim) phrase vectors -> masks (B, C, H, W),
        scores (B, C), logits (B, C, 256, 256)."""
        self._require_image()
        points = (point_coords, point_labels) if point_coords is not None else None
        with self.model.autocast():
            if text_embeddings is not None and mask_input is None:
                # Where the phrase points is the mask prompt; a given mask takes its place.
                mask_input = self.model.prompt_encoder.locate_text(self.features,
                                                                   text_embeddings)
                if points is None and boxes is None:
                    # A phrase alone is answered as the phrase with a click where it points
                    # most: the decoder outlines a clicked object far better than it turns
                    # a coarse map into one (benchmarks/RESULTS.md, text prompts).
                    points = peak_click(mask_input, self.input_size, self.model.img_size)
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes,
                                                      masks=mask_input, text=text_embeddings)
            low_res, iou = self.model.mask_decoder(
                image_embeddings=self.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                context=None if mask_input is not None else self.decoder_context())
        low_res, iou = low_res.float(), iou.float()
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res
