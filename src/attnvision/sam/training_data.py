"""Training examples for SAM: an image at the model's input size and its object masks.

Every example is ``(inputs, masks)`` with inputs a dict: ``image`` (3, S, S) uint8, resized
so the longest side is S (as the predictor resizes) and padded bottom/right; ``masks``
(K, S, S) bool, one per object, empty rows padding to K; ``size`` (2,) the (h, w) of the image
inside the padding; and for text prompts ``attributes``. The training module reads them all
(it draws the prompts from the masks), and the pair form is what
:func:`attnvision.train.loop.fit` expects.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from attnvision.data.coco import read_coco, segmentation_to_mask
from attnvision.data.scenes import Scene
from attnvision.errors import UserError
from attnvision.sam.transforms import ResizeLongestSide, preprocess_shape

Example = tuple[dict[str, Tensor], Tensor]


def to_square(image: np.ndarray, masks: np.ndarray, size: int, max_masks: int
              ) -> tuple[Tensor, Tensor, list[int]]:
    """(H, W, 3) uint8 and (K, H, W) bool -> (3, S, S) uint8, (max_masks, S, S) bool and the
    index in ``masks`` of each kept row.

    The largest max_masks objects are kept; a mask the resize empties is dropped.
    """
    h, w = image.shape[:2]
    nh, nw = preprocess_shape(h, w, size)
    out = torch.zeros(3, size, size, dtype=torch.uint8)
    out[:, :nh, :nw] = torch.from_numpy(ResizeLongestSide(size).apply_image(image)).permute(2, 0, 1)
    kept = torch.zeros(max_masks, size, size, dtype=torch.bool)
    order = np.argsort([-int(m.sum()) for m in masks], kind="stable")
    index: list[int] = []
    for k in order:
        if len(index) == max_masks:
            break
        small = Image.fromarray(masks[k].astype(np.uint8) * 255).resize((nw, nh), Image.NEAREST)
        m = torch.from_numpy(np.asarray(small) > 127)
        if m.any():
            kept[len(index), :nh, :nw] = m
            index.append(int(k))
    return out, kept, index


def valid_pixels(size: Tensor, s: int) -> Tensor:
    """(B, 2) the (h, w) of each image inside its S x S padded square -> (B, S, S) bool map
    of the real pixels."""
    ys = torch.arange(s, device=size.device)
    return (ys[None, :, None] < size[:, :1, None]) & (ys[None, None, :] < size[:, 1:, None])


def normalised_input(images: Tensor, valid: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(B, 3, S, S) uint8 images padded bottom/right, (B, S, S) :func:`valid_pixels` -> the
    encoder's input, padding 0 after normalisation, as ``Sam.preprocess`` pads."""
    return (images.float() - mean) / std * valid[:, None]


def valid_size(image: np.ndarray, size: int) -> Tensor:
    """(h, w) of ``image`` once resized into the S x S input, the rest being padding."""
    return torch.tensor(preprocess_shape(image.shape[0], image.shape[1], size))


class SceneDataset(Dataset):
    """Synthetic scenes (:mod:`attnvision.data.scenes`) ``first, first + 1, ...`` of a split.

    With ``attributes``, inputs also hold each object's (shape, colour, size) indices
    (max_masks, 3), -1 on padding rows, for text prompts (positions are read from the masks
    after augmentation, which may flip them).
    """

    def __init__(self, split: str, size: int, length: int, first: int = 0,
                 max_masks: int = 6, attributes: bool = False, style: str = "standard") -> None:
        from attnvision.data.scenes import make_scene

        make_scene(0, split, size=16, style=style)  # one-line errors now: scikit-image, style
        self.split, self.size, self.length, self.first = split, size, length, first
        self.max_masks, self.attributes, self.style = max_masks, attributes, style

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        from attnvision.data.scenes import make_scene

        return make_scene(self.first + index, self.split, size=self.size,
                          n_objects=(2, self.max_masks), style=self.style)

    def raw(self, index: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        """The image and each object's (mask, shape name), at the scene's own size."""
        scene = self.scene(index)
        return scene.image, [(o.mask, o.shape) for o in scene.objects]

    def __getitem__(self, index: int) -> Example:
        scene = self.scene(index)
        masks = np.stack([o.mask for o in scene.objects]) if scene.objects else np.zeros(
            (0, self.size, self.size), bool)
        image, kept, index = to_square(scene.image, masks, self.size, self.max_masks)
        inputs = {"image": image, "masks": kept, "size": valid_size(scene.image, self.size)}
        if self.attributes:
            from attnvision.text.phrases import attributes

            attrs = torch.full((self.max_masks, 3), -1, dtype=torch.long)
            for row, k in enumerate(index):
                attrs[row] = torch.tensor(attributes(scene.objects[k])[:3])
            inputs["attributes"] = attrs
        return inputs, kept


class CocoDataset(Dataset):
    """A COCO-format dataset (images + polygon or RLE annotations) at the model's size."""

    def __init__(self, annotations: str | os.PathLike[str], images: str | os.PathLike[str] |
                 None, size: int, max_masks: int = 8) -> None:
        self.records = read_coco(annotations, images)
        self.size, self.max_masks = size, max_masks

    def __len__(self) -> int:
        return len(self.records)

    def raw(self, index: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        """The image and each object's (mask, "object"), at the image's own size; objects
        whose annotation covers no pixel are left out."""
        image, masks = self._read(index)
        return image, [(m, "object") for m in masks if m.any()]

    def __getitem__(self, index: int) -> Example:
        image, masks = self._read(index)
        image_t, kept, _ = to_square(image, masks, self.size, self.max_masks)
        return {"image": image_t, "masks": kept, "size": valid_size(image, self.size)}, kept

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from attnvision.data.images import load_image

        r = self.records[index]
        image = load_image(r.path)
        if image.shape[:2] != (r.height, r.width):
            raise UserError(f"{r.path} is {image.shape[1]}x{image.shape[0]} but its annotations "
                            f"say {r.width}x{r.height}: fix the COCO file (or the image's EXIF "
                            "orientation, which is applied when it is read)")
        try:
            masks = np.stack([segmentation_to_mask(s, r.height, r.width)
                              for s in r.segmentations])
        except (ValueError, TypeError) as e:
            raise UserError(f"an annotation of {r.path.name} is malformed: {e}") from None
        return image, masks


class SceneAugment:
    """Flips and photometric changes that keep masks exact: horizontal and vertical flips
    (image and masks), brightness and contrast jitter, and grey images now and then, so a
    model trained on colour shapes also meets grey photos (scikit-image's coins)."""

    def __init__(self, flips: bool = True, grey: float = 0.2, brightness: float = 0.25,
                 contrast: float = 0.3) -> None:
        # flips=False for padded (non-square) images: padding must stay bottom/right, where
        # the predictor puts it.
        self.flips, self.grey = flips, grey
        self.brightness, self.contrast = brightness, contrast

    def __call__(self, inputs: dict[str, Tensor], generator: torch.Generator
                 ) -> dict[str, Tensor]:
        images, masks = inputs["image"], inputs["masks"]  # (B, 3, S, S) uint8, (B, K, S, S)
        b = images.shape[0]

        def draw(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator).to(images.device)

        x = images.float()
        flips = (draw(b) < 0.5, draw(b) < 0.5)
        for dim, flip in zip((-1, -2), flips, strict=True) if self.flips else ():
            f = flip[:, None, None, None]
            x = torch.where(f, x.flip(dim), x)
            masks = torch.where(f, masks.flip(dim), masks)
        grey = (draw(b) < self.grey)[:, None, None, None]
        x = torch.where(grey, x.mean(1, keepdim=True).expand_as(x), x)
        mean = x.mean((1, 2, 3), keepdim=True)
        contrast = 1 + self.contrast * (2 * draw(b, 1, 1, 1) - 1)
        shift = 255 * self.brightness * (2 * draw(b, 1, 1, 1) - 1)
        x = (x - mean) * contrast + mean + shift
        return {**inputs, "image": x.clamp(0, 255).round().to(torch.uint8), "masks": masks}


class EncodedDataset(Dataset):
    """Another dataset's examples with each image replaced by its embedding from a frozen
    image encoder, computed once, here, instead of at every step of every epoch.

    With the encoder frozen (fine-tuning the decoder, training text prompts), a large encoder
    is most of a training step's time: on a 2-core CPU a vit_b step runs 9x faster on stored
    embeddings, a sam_tiny step 1.2x (``benchmarks/encode_once.py``). The price: no image
    augmentation, since an embedding cannot be flipped or recoloured, and the embeddings in
    memory (vit_b: 2 MB an image). Embeddings are kept in float16 and masks as packed bits
    (a sam_tiny scene: 128 KB + 48 KB).
    """

    def __init__(self, dataset: Dataset, image_encoder: torch.nn.Module, pixel_mean: Tensor,
                 pixel_std: Tensor, batch_size: int = 16, progress: bool = True) -> None:
        from tqdm import tqdm

        self.embeddings: list[Tensor] = []
        self.examples: list[dict[str, Tensor | np.ndarray]] = []
        device = pixel_mean.device
        bar = tqdm(total=len(dataset), desc="encoding the training images once", leave=False,
                   disable=not progress, unit="image")
        for start in range(0, len(dataset), batch_size):
            batch = [dataset[i][0] for i in range(start, min(len(dataset), start + batch_size))]
            images = torch.stack([b["image"] for b in batch]).to(device)
            size = torch.stack([b["size"] for b in batch]).to(device)
            x = normalised_input(images, valid_pixels(size, images.shape[-1]), pixel_mean,
                                 pixel_std)
            with torch.no_grad():
                embeddings = image_encoder(x).to("cpu", torch.float16)  # (b, 256, g, g)
            for example, embedding in zip(batch, embeddings, strict=True):
                masks = example["masks"].numpy()
                rest = {k: v for k, v in example.items() if k not in ("image", "masks")}
                self.examples.append({**rest, "packed": np.packbits(masks),
                                      "mask_shape": np.array(masks.shape)})
                self.embeddings.append(embedding)  # a view of this batch's own new tensor
            bar.update(len(batch))
        bar.close()

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        example = dict(self.examples[index])
        shape = tuple(int(n) for n in example.pop("mask_shape"))
        bits = np.unpackbits(example.pop("packed"), count=int(np.prod(shape)))
        masks = torch.from_numpy(bits.reshape(shape).astype(bool))
        return {**example, "embeddings": self.embeddings[index], "masks": masks}, masks
