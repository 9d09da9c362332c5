"""Synthetic scenes for training and testing SAM: objects with exact masks and a description.

No segmentation dataset can be downloaded here, so scenes are made: objects of six shapes
(ellipse, polygon, star, ring, blob, letter) in eight named colours, plain or textured with a
patch of a real photo, pasted with occlusion on a background cropped from another photo. Every
object comes with its exact visible mask (what later objects leave of it), its box, and a
short description of colour, shape, size and position ("the small red star on the left"),
for text prompts.

A scene is a pure function of its seed and split. The photos come from scikit-image
(``pip install 'attnvision[data]'``), which ships them; the test split's backgrounds and
textures are photos the training split never uses, so a model is tested on unseen pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from attnvision.errors import UserError

# "animal" is a silhouette (body, neck and head, legs, tail) that only the large style draws;
# the other styles draw the first six, so their scenes keep their pixels.
SHAPES = ("ellipse", "polygon", "star", "ring", "blob", "letter", "animal")
PLAIN_SHAPES = SHAPES[:6]
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 215),
    "yellow": (235, 205, 40), "orange": (240, 135, 30), "purple": (135, 55, 185),
    "white": (240, 240, 240), "black": (25, 25, 25)}
SIZES = ("small", "medium", "large")
# scikit-image photos that load offline; the two splits share none.
PHOTOS = {
    "train": {"backgrounds": ("astronaut", "coffee", "rocket", "hubble_deep_field", "camera",
                              "moon"),
              "textures": ("grass", "gravel", "brick", "immunohistochemistry")},
    "test": {"backgrounds": ("chelsea", "retina", "clock", "page"),
             "textures": ("coins", "cell", "colorwheel")},
}
LETTERS = "ABEFHKLMNPRSTVWXYZ"
MIN_PIXELS = 20  # an object with fewer visible pixels is clutter, not an object


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str  # small / medium / large, by the share of the image it covers
    position: str  # "on the left", "at the top right", "in the centre", ...
    textured: bool
    visible: float  # share of the object that later objects leave visible, 0..1
    mask: np.ndarray  # (H, W) bool: the visible part, after occlusion
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the visible part, inclusive

    @property
    def description(self) -> str:
        return f"the {self.size} {self.colour} {self.shape} {self.position}"


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    objects: tuple[SceneObject, ...]  # in paint order; visible masks never overlap


@functools.cache
def _photo(name: str) -> np.ndarray:
    """A scikit-image photo as (H, W, 3) uint8."""
    try:
        from skimage import data
    except ImportError:
        raise UserError("synthetic scenes cut their backgrounds and textures from "
                        "scikit-image's photos: pip install 'attnvision[data]'") from None
    image = np.asarray(getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of at least half the photo's shorter side, resized to size."""
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR))


def _outline(shape: str, cx: float, cy: float, r: float, rng: np.random.Generator
             ) -> list[tuple[float, float]]:
    """Vertices of a polygon, star or blob around (cx, cy) of radius about r."""
    angle0 = rng.uniform(0, 2 * math.pi)
    if shape == "polygon":
        k = int(rng.integers(3, 8))
        radii = np.full(k, r)
    elif shape == "star":
        k = 2 * int(rng.integers(4, 7))
        radii = np.where(np.arange(k) % 2 == 0, r, r * rng.uniform(0.35, 0.55))
    else:  # blob: a smooth random radius, a few low harmonics
        k = 48
        t = np.linspace(0, 2 * math.pi, k, endpoint=False)
        wobble = sum(rng.uniform(-0.18, 0.18) * np.cos(j * t + rng.uniform(0, 6.3))
                     for j in range(2, 5))
        radii = r * (1 + wobble)
    angles = angle0 + np.linspace(0, 2 * math.pi, k, endpoint=False)
    return [(cx + ri * math.cos(a), cy + ri * math.sin(a)) for ri, a in zip(radii, angles,
                                                                              strict=True)]


def _animal(cx: float, cy: float, r: float, rng: np.random.Generator
            ) -> list[list[tuple[float, float]]]:
    """Polygons of a four-legged silhouette about 2r long around (cx, cy): a body, a neck and
    head, legs and a tail, turned a little and facing either way. Thin legs and concave
    outlines are what a horse-like shape asks of a mask, and no plain shape has them."""
    flip = 1 if rng.random() < 0.5 else -1
    turn = rng.uniform(-0.35, 0.35)
    c, s = math.cos(turn), math.sin(turn)
    body_h = r * rng.uniform(0.35, 0.55)  # half-height of the body
    parts: list[list[tuple[float, float]]] = []
    t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
    parts.append([(r * math.cos(a), body_h * math.sin(a)) for a in t])  # body
    neck = r * rng.uniform(0.45, 0.8)  # neck rises forward from the front of the body
    nx, ny = 0.75 * r, -0.2 * body_h
    hx, hy = nx + 0.45 * neck, ny - neck
    w = body_h * rng.uniform(0.35, 0.55)
    parts.append([(nx - w, ny), (nx + w, ny + 0.3 * w), (hx + 0.5 * w, hy), (hx - 0.5 * w, hy)])
    head = body_h * rng.uniform(0.35, 0.5)
    parts.append([(hx + head * 1.6 * math.cos(a) * 0.8 + 0.4 * head, hy + head * math.sin(a) * 0.7)
                  for a in t])
    leg_len = r * rng.uniform(0.6, 1.1)
    leg_w = body_h * rng.uniform(0.15, 0.3)
    for x in (-0.7 * r, -0.5 * r, 0.45 * r, 0.65 * r)[:: 1 if rng.random() < 0.8 else 2]:
        lean = rng.uniform(-0.35, 0.35) * leg_len
        top = 0.6 * body_h
        parts.append([(x - leg_w, top), (x + leg_w, top), (x + lean + 0.7 * leg_w, top + leg_len),
                      (x + lean - 0.7 * leg_w, top + leg_len)])
    tail = r * rng.uniform(0.3, 0.7)
    tw = body_h * 0.12
    parts.append([(-0.95 * r, -0.3 * body_h - tw), (-0.95 * r, -0.3 * body_h + tw),
                  (-0.95 * r - tail * 0.6, tail * 0.8 + tw), (-0.95 * r - tail * 0.6 - tw,
                                                              tail * 0.8)])
    return [[(cx + flip * (x * c - y * s), cy + x * s + y * c) for x, y in part]
            for part in parts]


def _shape_mask(shape: str, size: int, rng: np.random.Generator,
                radius: tuple[float, float] = (0.07, 0.22), inside: bool = True) -> np.ndarray:
    """(size, size) bool mask of one object somewhere in the image: wholly inside it, or
    (``inside=False``) with its centre anywhere in the image, so the border may cut it."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    r = size * rng.uniform(*radius)
    lo, hi = (r, size - r) if inside else (0, size)
    cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
    _draw_shape(draw, shape, cx, cy, r, rng)
    return np.asarray(canvas) > 127


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                rng: np.random.Generator) -> None:
    """Fill one shape of radius about r around (cx, cy) with 255. Apart from :func:`_shape_mask`
    the moving scenes draw their sprites with it, each centred in a canvas of its own."""
    if shape == "ellipse" or shape == "ring":
        rx, ry = r, r * rng.uniform(0.55, 1.0)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        if shape == "ring":
            f = rng.uniform(0.45, 0.65)
            draw.ellipse([cx - rx * f, cy - ry * f, cx + rx * f, cy + ry * f], fill=0)
    elif shape == "letter":
        font = ImageFont.load_default(size=max(8, int(2.4 * r)))
        letter = LETTERS[int(rng.integers(len(LETTERS)))]
        draw.text((cx, cy), letter, fill=255, font=font, anchor="mm",
                  stroke_width=max(1, int(r / 12)), stroke_fill=255)
    elif shape == "animal":
        for part in _animal(cx, cy, r, rng):
            draw.polygon(part, fill=255)
    else:
        draw.polygon(_outline(shape, cx, cy, r, rng), fill=255)


ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")


def grid_cells(masks: torch.Tensor) -> torch.Tensor:
    """(row, column) of each mask's centre in thirds of the image, 0..2 each:
    (N, H, W) bool -> (N, 2). Training reads positions with it after flips."""
    h, w = masks.shape[1:]
    weights = masks.double()
    count = weights.sum((1, 2)).clamp_min(1)
    ys = (weights.sum(2) * torch.arange(h, dtype=torch.double, device=masks.device)).sum(1)
    xs = (weights.sum(1) * torch.arange(w, dtype=torch.double, device=masks.device)).sum(1)
    rows = (3 * (ys / count) / h).long().clamp_max(2)
    cols = (3 * (xs / count) / w).long().clamp_max(2)
    return torch.stack([rows, cols], dim=1)


def grid_cell(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of one (H, W) mask's centre, as :func:`grid_cells`."""
    row, col = grid_cells(torch.from_numpy(np.asarray(mask, dtype=bool))[None])[0].tolist()
    return row, col


def position_words(row: int, col: int) -> str:
    """"on the left", "at the top right", "in the centre", ... for a cell of the 3x3 grid."""
    if row == 1:
        return "in the centre" if col == 1 else f"on the {COLUMNS[col]}"
    return f"at the {ROWS[row]}" if col == 1 else f"at the {ROWS[row]} {COLUMNS[col]}"


def _position(mask: np.ndarray) -> str:
    """Where the mask's centre lies, in thirds of the image."""
    return position_words(*grid_cell(mask))


def _size(area: int, image_area: int) -> str:
    share = area / image_area
    return "small" if share < 0.02 else "medium" if share < 0.06 else "large"


@dataclass(frozen=True)
class SceneStyle:
    radius: tuple[float, float] = (0.07, 0.22)  # object radius, as a share of the image side
    texture: float = 0.45  # how deep a texture's shade goes: colour x (1 - t + t x shade)
    # Instances of one kind: every object shares one shape, colour and texture photo, and
    # objects are placed apart. Nothing but its outline separates one from the next, which
    # a model that answers "all pixels like the clicked one" gets wrong (coins, cells).
    repeated: bool = False
    count: tuple[int, int] | None = None  # objects per scene, if not the caller's n_objects
    # Look-alikes in rows with gaps of a few pixels (coins on a tray, cells in a dish): one
    # click must keep one object, not the whole tray, when only a thin line parts them.
    packed: bool = False
    # One object from a third of the side up to the whole frame, often cut by the border, then
    # smaller ones on it, on a plain, textured or photo background (a horse in a field, a
    # silhouette on paper): the first click on a photo is often on its largest thing.
    large: bool = False


# "standard": the scenes every figure is measured on. "varied": objects from 0.05 to 0.45 of
# the side and textures twice as deep, closer to photos (a horse filling the frame).
# "repeated": 5 to 14 small look-alike objects apart from each other.
# "packed": a grid of 9 to 42 cells of look-alikes (about a tenth left empty), neighbours 0 to
# a few pixels apart, each a little lighter or darker (coins on a tray: the repeated style
# alone left the IoU head keeping the whole tray).
# "large": one object of radius 0.3 to 0.85 of the side, its centre anywhere, so it may fill
# the frame or be cut by the border, or (two scenes in five) a silhouette of 0.2 to 0.42, most
# often wholly in the frame, then 0 to 3 smaller
# ones (radius 0.05 to 0.35) of any shape, on a plain colour, a textured colour or a photo
# (the horse silhouette scored 0.1-0.4 from one click when no training scene had such objects).
# "mixed": each scene standard, varied or repeated (0.4 / 0.3 / 0.3), by its seed, so that
# training on the others keeps seeing standard scenes (it still costs clicks on them:
# benchmarks/RESULTS.md, stages 4 and 5).
STYLES = {"standard": SceneStyle(),
          "varied": SceneStyle(radius=(0.05, 0.45), texture=0.9),
          "repeated": SceneStyle(radius=(0.04, 0.12), texture=0.9, repeated=True,
                                 count=(5, 14)),
          "packed": SceneStyle(texture=0.9, repeated=True, packed=True),
          "large": SceneStyle(radius=(0.3, 0.85), texture=0.6, count=(1, 4), large=True)}
PACKED_SHAPES = ("ellipse", "ellipse", "ellipse", "ellipse", "polygon", "blob", "ring")
MIXED = {"standard": 0.4, "varied": 0.3, "repeated": 0.3}
STYLE_NAMES = (*STYLES, "mixed")
PLACING_TRIES = 30  # a repeated object that overlaps its neighbours is moved, this often
SMALLER_RADIUS = (0.05, 0.35)  # the large style's objects after the first
ANIMAL_SHARE = 0.4  # of the large style's first objects; a tenth of the others
ANIMAL_RADIUS = (0.2, 0.42)  # half a body's length: a silhouette reaches about 1.4 r each way
CONTRAST = 100.0  # least RGB distance between an object and a plain background


def mixture(style: str) -> dict[str, float] | None:
    """The shares of a mixed style, in :data:`STYLES`' order: "mixed" (:data:`MIXED`) or a
    mixture such as "standard=0.7,repeated=0.3" (shares summing to 1); None for one style."""
    if style == "mixed":
        return MIXED
    if "=" not in style:
        return None
    shares: dict[str, float] = {}
    for part in style.split(","):
        name, _, share = (t.strip() for t in part.partition("="))
        if name not in STYLES or name in shares:
            raise UserError(f"scene mixture {style!r}: {name!r} is not one style of "
                            f"{', '.join(STYLES)} named once (e.g. standard=0.7,repeated=0.3)")
        try:
            shares[name] = float(share)
        except ValueError:
            raise UserError(f"scene mixture {style!r}: {share!r} is not a share between 0 "
                            "and 1") from None
    if not all(0 <= v <= 1 for v in shares.values()) or abs(sum(shares.values()) - 1) > 1e-6:
        raise UserError(f"scene mixture {style!r}: the shares must lie between 0 and 1 and "
                        "sum to 1")
    return {name: shares[name] for name in STYLES if shares.get(name, 0) > 0}


def check_style(style: str) -> dict[str, float] | None:
    """:func:`mixture`'s shares of ``style``, after a one-line error if it is no style."""
    mix = mixture(style)
    if mix is None and style not in STYLES:
        raise UserError(f"scene style must be one of {', '.join(STYLE_NAMES)} or shares such "
                        f"as standard=0.7,repeated=0.3, got {style!r}")
    return mix


def _placed_apart(shape: str, size: int, rng: np.random.Generator, style: SceneStyle,
                  covered: np.ndarray) -> np.ndarray:
    """A mask that overlaps what is already ``covered`` by at most 3 % of itself, or the
    last try's mask (the scene is full)."""
    for _ in range(PLACING_TRIES):
        mask = _shape_mask(shape, size, rng, style.radius)
        if (mask & covered).sum() <= 0.03 * mask.sum():
            break
    return mask


def _packed_masks(shape: str, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Masks of look-alikes in a grid of rows x columns cells over most of the image, each
    drawn inside its own cell and filling 80-97 % of it: neighbours are 0 to a few pixels
    apart (an ellipse's bounds are inclusive, so two may share an edge pixel, which the later
    one keeps). A cell is left empty now and then, as on a real tray."""
    rows, cols = int(rng.integers(3, 7)), int(rng.integers(3, 8))
    cell = size * rng.uniform(0.6, 0.97) / max(rows, cols)
    x0 = rng.uniform(0, size - cols * cell)
    y0 = rng.uniform(0, size - rows * cell)
    masks = []
    for row in range(rows):
        for col in range(cols):
            r = cell / 2 * rng.uniform(0.8, 0.97)
            slack = cell / 2 - r  # how far the object may sit off its cell's centre
            cx = x0 + (col + 0.5) * cell + rng.uniform(-slack, slack)
            cy = y0 + (row + 0.5) * cell + rng.uniform(-slack, slack)
            if rng.random() < 0.1:
                continue
            canvas = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(canvas)
            if shape in ("ellipse", "ring"):
                rx, ry = r, r * rng.uniform(0.85, 1.0)
                if rng.random() >= 0.5:  # as often taller as wider
                    rx, ry = ry, rx
                draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
                if shape == "ring":
                    draw.ellipse([cx - rx / 2, cy - ry / 2, cx + rx / 2, cy + ry / 2], fill=0)
            else:  # a polygon or blob of about r (_outline's blobs reach 1.5 r, so shrunk)
                draw.polygon(_outline(shape, cx, cy, r / 1.3 if shape == "blob" else r, rng),
                             fill=255)
            masks.append(np.asarray(canvas) > 127)
    return masks


def _large_background(size: int, rng: np.random.Generator, style: SceneStyle,
                      textures: tuple[str, ...], photos: tuple[str, ...]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The large style's background and its colour if plain: white or light paper (a fifth),
    any plain colour (a fifth), a colour shaded by a texture photo (a fifth) or a photo."""
    kind = rng.random()
    if kind < 0.4:
        colour = (np.full(3, rng.uniform(215, 255)) if kind < 0.2
                  else rng.uniform(0, 255, 3)).astype(np.float32)
        return np.broadcast_to(colour, (size, size, 3)).copy(), colour
    if kind < 0.6:
        shade = _crop(_photo(textures[int(rng.integers(len(textures)))]), size, rng)
        shade = shade.mean(axis=2, keepdims=True) / 255.0
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        return colour * (1 - style.texture + style.texture * shade), None
    return _crop(_photo(photos[int(rng.integers(len(photos)))]), size, rng), None


def _standing_out(plain: np.ndarray | None, rng: np.random.Generator) -> str:
    """A colour name drawn at random, at least :data:`CONTRAST` away from a plain background
    (a white horse on white paper has no outline to find)."""
    names = tuple(COLOURS)
    if plain is not None:
        names = tuple(n for n in names if np.linalg.norm(np.array(COLOURS[n]) - plain)
                      >= CONTRAST) or names
    return names[int(rng.integers(len(names)))]


def make_scene(seed: int, split: str = "train", size: int = 256,
               n_objects: tuple[int, int] = (2, 6), style: str = "standard") -> Scene:
    """The scene of ``seed`` in ``split`` ("train" or "test"): (size, size) pixels with
    between n_objects[0] and n_objects[1] objects (fewer if occlusion hides some; the repeated
    style has its own count), drawn in one of the :data:`STYLES`, or in a mixture of them
    (each scene one style, drawn by its seed): "mixed" (:data:`MIXED`) or shares such as
    "standard=0.7,repeated=0.3"."""
    if split not in PHOTOS:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    mix = check_style(style)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    if mix is not None and len(mix) > 1:  # drawn only here: single styles keep their pixels
        style = str(rng.choice(list(mix), p=list(mix.values())))
    elif mix is not None:
        style = next(iter(mix))
    style = STYLES[style]
    photos = PHOTOS[split]
    backgrounds, textures = photos["backgrounds"], photos["textures"]
    plain = None  # the colour of a plain background, which objects must stand out from
    if style.large:
        image, plain = _large_background(size, rng, style, textures, backgrounds)
    else:
        image = _crop(_photo(backgrounds[int(rng.integers(len(backgrounds)))]), size, rng)
    image = image.astype(np.float32)

    def draw(options: tuple, value: str | None) -> str:
        return value if style.repeated and value is not None else options[
            int(rng.integers(len(options)))]

    shape = colour = texture_name = None  # the one kind of a repeated scene, once drawn
    textured_kind = bool(rng.random() < 0.7) if style.repeated else None
    count = style.count or n_objects
    tray: list[np.ndarray] = []
    if style.packed:
        shape = PACKED_SHAPES[int(rng.integers(len(PACKED_SHAPES)))]
        tray = _packed_masks(shape, size, rng)
    painted: list[tuple[str, str, bool, np.ndarray]] = []
    covered = np.zeros((size, size), bool)
    for i in range(len(tray) if style.packed else int(rng.integers(count[0], count[1] + 1))):
        if style.large:
            animal = rng.random() < (ANIMAL_SHARE if i == 0 else ANIMAL_SHARE / 4)
            shape = "animal" if animal else PLAIN_SHAPES[int(rng.integers(len(PLAIN_SHAPES)))]
            colour = _standing_out(plain, rng)
            radius = (ANIMAL_RADIUS if animal else style.radius) if i == 0 else SMALLER_RADIUS
            whole = bool(animal and i == 0 and rng.random() < 0.7)  # a horse in the frame
            mask = _shape_mask(shape, size, rng, radius, inside=whole)
        else:
            shape = draw(PLAIN_SHAPES, shape)
            colour = draw(tuple(COLOURS), colour)
            mask = (tray[i] if style.packed
                    else _placed_apart(shape, size, rng, style, covered) if style.repeated
                    else _shape_mask(shape, size, rng, style.radius))
        if not mask.any():
            continue
        covered |= mask
        fill = np.broadcast_to(np.array(COLOURS[colour], np.float32), image.shape)
        textured = textured_kind if style.repeated else bool(rng.random() < 0.5)
        if textured:  # the photo's light and shade, in the object's colour
            texture_name = draw(textures, texture_name)
            texture = _crop(_photo(texture_name), size, rng)
            shade = texture.mean(axis=2, keepdims=True) / 255.0
            fill = fill * (1 - style.texture + style.texture * shade)
        if style.packed:  # no two coins have quite the same light
            fill = fill * rng.uniform(0.8, 1.15)
        image[mask] = fill[mask]
        painted.append((shape, colour, textured, mask))

    objects = []
    covered = np.zeros((size, size), bool)
    for shape, colour, textured, mask in reversed(painted):  # the last painted is on top
        visible = mask & ~covered
        covered |= mask
        if visible.sum() < MIN_PIXELS:
            continue
        ys, xs = np.nonzero(visible)
        objects.append(SceneObject(shape, colour, _size(int(mask.sum()), size * size),
                                   _position(visible), textured,
                                   round(float(visible.sum() / mask.sum()), 3), visible,
                                   (int(xs.min()), int(ys.min()), int(xs.max()),
                                    int(ys.max()))))
    return Scene(np.clip(image, 0, 255).round().astype(np.uint8), tuple(reversed(objects)))
