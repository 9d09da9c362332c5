"""Synthetic videos with exact masks and exact point tracks: the synthetic scenes set in motion.

SAM 2 (video segmentation) and CoTracker (point tracking) are trained and measured here on
clips whose every motion is known, so the truth is exact rather than annotated: for each frame
the instance mask of every object, and for any point of a query frame (on an object or on the
background) its position and visibility in every frame.

What a clip holds. Objects of :data:`scenes.SHAPES` in :data:`scenes.COLOURS`, plain or shaded
by a texture photo, each on its own smooth path (translation, rotation, scale, a small
non-rigid wobble), in a fixed depth order, over a background photo; the camera pans and zooms;
the lighting drifts. Objects leave and enter the frame. An *occlusion* (``occlusion=True``, or
one clip in two by default) sends a larger object across a smaller one so that it is wholly
hidden for at least :data:`HIDDEN_RUN` frames, visible before and after; a *distractor*
(``distractor=True``, or one clip in three) is a look-alike of an object (same shape kind,
colour and texture photo, another instance of the shape) that crosses near it. The test split
draws backgrounds and textures from photos training never sees (:data:`scenes.PHOTOS`).

Conventions. Points are (x, y) = (column, row) with pixel centres at integers, so a point lies
in the pixel ``floor(xy + 0.5)``. ``Clip.masks`` is (T, H, W) uint8: 0 the background, k the
object ``Clip.objects[k - 1]``; ids are the paint order, so a larger id is nearer the camera.
That is DAVIS' format (one array of ids rather than T x K boolean planes, a quarter of the
memory at K = 4), which :func:`attnvision.data.davis.write_indexed_png` writes as it is;
``masks[t] == k`` gives an object's plane.

Why it is built this way:

- Each object is a *sprite*, drawn once in its own coordinates (a boolean shape mask and a
  uint8 fill), at :data:`OVERSAMPLE` times its size in the frame so that edges stay sharp when
  it turns. Its motion maps sprite coordinates to the frame in closed form: a wobble
  ``a' = a + V_t(a')``, then a similarity (path p(t), angle, scale) into the *world* (the
  background photo's pixels), then the camera's pan and zoom. Every frame is drawn by mapping
  each pixel *backwards* and reading the sprite's nearest pixel; one lookup gives both the
  colour and the mask, so masks match the drawn pixels exactly.
- The wobble is written as the backward map ``a = a' - V_t(a')`` (a sum of three
  low-frequency sines, amplitude at most 4.5 % of the object's radius, Lipschitz constant at
  most 0.12), so drawing, which maps many pixels, needs no iteration; only tracking, which
  maps a few points forwards, solves ``a' = a + V_t(a')`` by fixed-point iteration, a
  contraction converged to 1e-9 sprite pixels (and checked: it raises if it does not).
- A track is then exact: a query point's sprite (or world) coordinate at the query frame,
  mapped forwards at every frame. Visibility is read from the masks: a point is visible when
  it is in the frame and its pixel belongs to its own object (or to the background). Truth
  and masks therefore never disagree; a point on an object's very rim may read as hidden
  where the rounded pixel falls just outside the object, as it would on a real mask.
- Paths are sums of sines, linear drifts and Gaussian bumps in frame units per frame, not
  fitted to the clip's length, so speed does not depend on how long a clip is (no teleports in
  short clips) and any length works. Per frame a point moves at most about 0.15 of the frame
  side (path, spin, breathing, camera together); most far less.
- The background is a square crop of a photo :data:`BACKGROUND` times the frame's longer side,
  read bilinearly (it carries no mask, and bilinear keeps a zoomed photo from shimmering); the
  camera's pan and zoom stay within it.
- The occlusion is planned from the sprites' geometry, not hoped for: the occluder's inscribed
  disc (around the point it turns about) is made 1.8-2.3 times the target's circumscribed disc
  plus both wobbles, and it sweeps past the target slowly enough that the target is covered
  for the planned 3-6 frames whatever the angles, across its narrowest width so that the
  target shows again a frame later. The target is held to at most :data:`TARGET_RADIUS` of
  the side so that such a sweep stays smooth. The clip is then checked on its masks (hidden
  for at least :data:`HIDDEN_RUN` frames, visible at frame 0 and again after) and planned anew
  from another random stream if anything else spoiled it: most clips pass at once, a 16-pixel
  5-frame clip within five tries. An occlusion left to chance that finds no plan is dropped.
- Every random choice comes from its own stream of the seed (background, objects, camera,
  lighting, occlusion, distractor), so switching the lighting off changes colours only, and
  switching the camera off keeps the background and the objects (an occlusion may then be
  planned anew, from its next stream), and an occlusion or a distractor, forced or not, comes
  on top of the same objects (an occluder takes the place of the nearest).

Speed (one thread, a busy 2-core machine): a 24-frame 256 x 256 clip takes 0.15 s (median of
10; 0.3 s at most, when an occlusion is planned twice), tracking 1,000 points through it
0.01 s. Drawing maps only each object's box of pixels; photos are cached by
:func:`scenes._photo`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from attnvision.data import scenes
from attnvision.errors import UserError

OVERSAMPLE = 2.0  # sprite pixels per frame pixel at scale 1
RADIUS = (0.07, 0.16)  # object radius, as a share of the frame's shorter side
MIN_SPRITE_RADIUS = 3.0  # sprite pixels: smaller shapes may not draw at all
# How far a shape reaches from its centre, in radii: letters and silhouettes reach further.
REACH = {"ellipse": 1.1, "ring": 1.1, "polygon": 1.1, "star": 1.1, "blob": 1.7,
         "letter": 1.8, "animal": 2.4}
SPEED = 0.035  # the fastest a path drifts, as a share of the shorter side per frame
TEXTURED = 0.6  # share of textured objects
WOBBLE_TERMS = 3
WOBBLE_AMPLITUDE = (0.005, 0.015)  # each term, as a share of the sprite's reach (radius)
WOBBLE_WAVES = (1.0, 2.5)  # wave numbers per radius: at most 3 x 0.015 x 2.5 = 0.11 Lipschitz
BACKGROUND = 1.6  # the background photo's side, in frame sides: room to pan and zoom out
ZOOM_OUT = math.exp(-0.15)  # the least zoom, and so the widest view of the background
OCCLUSION_SHARE = 0.5  # clips with a planned occlusion when the caller leaves it to chance
DISTRACTOR_SHARE = 0.3  # clips with a look-alike distractor, likewise
HIDDEN_RUN = 3  # frames an occluded object stays wholly hidden
MIN_OCCLUSION_FRAMES = HIDDEN_RUN + 2  # visible, hidden x 3, visible
OCCLUDER_SHAPES = ("ellipse", "polygon", "blob")  # solid: no hole to see the target through
TARGET_RADIUS = 0.09  # an occluded object's largest radius, as a share of the shorter side
SWEEP = 0.09  # an occluder's fastest sweep past it, likewise, per frame
TINY = 2.5  # frame px: the least of both, so that tiny frames still show a target come back
PLANNING_TRIES = 40  # a 16-pixel 5-frame clip needed 14 once in 400 seeds, most need 1
MIN_SIDE, MAX_SIDE = 16, 4096
MAX_OBJECTS = 30  # ids are uint8, with a distractor on top
CONVERGED = 1e-9  # sprite pixels: the forward wobble's fixed point
STREAMS = {"background": 0, "objects": 1, "camera": 2, "lighting": 3, "occlusion": 4,
           "distractor": 5}
HALF_DIAGONAL = math.sqrt(0.5)  # from a pixel's centre to its corner


# ---------------------------------------------------------------------------------------------
# Motion: paths, object motions (sprite <-> world) and the camera (world <-> frame)

@dataclass(frozen=True, eq=False)
class _Path:
    """A smooth path of world points: start + velocity (t - t0) + sum of sines + a Gaussian
    bump, plus the path it follows (an occluder or distractor moves relative to its target)."""

    start: np.ndarray  # (2,) world px (relative to ``follows`` if given)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) px per frame
    t0: float = 0.0
    waves: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (J, 4) ax ay k phase
    bump: np.ndarray = field(default_factory=lambda: np.zeros(4))  # bx by t_peak sigma
    follows: _Path | None = None

    def __call__(self, t: float) -> np.ndarray:
        p = self.start + self.velocity * (t - self.t0)
        if len(self.waves):
            p = p + np.sin(self.waves[:, 2] * t + self.waves[:, 3]) @ self.waves[:, :2]
        if self.bump[3] > 0:
            p = p + self.bump[:2] * math.exp(-0.5 * ((t - self.bump[2]) / self.bump[3]) ** 2)
        return p if self.follows is None else p + self.follows(t)


@dataclass(frozen=True, eq=False)
class _Motion:
    """An object's motion: sprite coordinates <-> world coordinates at frame t."""

    path: _Path
    angle: tuple[float, float, float, float, float]  # angle0, spin, sway, sway rate, phase
    scale: tuple[float, float, float, float]  # scale0, breathing, rate, phase
    wobble: np.ndarray  # (J, 7): amplitude, direction x y, wave vector x y, phase, rate
    centroid: np.ndarray  # (2,) sprite px: the point the object turns about

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """World position of the centroid (2,), angle and scale at frame t."""
        a0, spin, sway, rate, phase = self.angle
        s0, breathe, srate, sphase = self.scale
        return (self.path(t), a0 + spin * t + sway * math.sin(rate * t + phase),
                s0 * math.exp(breathe * math.sin(srate * t + sphase)))

    def _wobble(self, t: float, a: np.ndarray) -> np.ndarray:
        # a: (N, 2) centred, unwobbled sprite coordinates -> (N, 2) displacement V_t(a)
        w = self.wobble
        arg = a @ w[:, 3:5].T + (w[:, 5] + w[:, 6] * t)  # (N, J)
        return np.sin(arg) @ (w[:, :1] * w[:, 1:3])

    def to_sprite(self, t: float, world: np.ndarray) -> np.ndarray:
        """(N, 2) world points -> (N, 2) sprite coordinates at frame t (explicit)."""
        p, angle, s = self.pose(t)
        d = world - p
        c, n = math.cos(angle), math.sin(angle)
        a = np.stack([c * d[:, 0] + n * d[:, 1], -n * d[:, 0] + c * d[:, 1]], axis=1) / s
        return a - self._wobble(t, a) + self.centroid

    def from_sprite(self, t: float, uv: np.ndarray) -> np.ndarray:
        """(N, 2) sprite coordinates -> (N, 2) world points at frame t: the wobble is inverted
        by fixed-point iteration, a contraction (Lipschitz <= 0.12) converged to 1e-9 px."""
        a = uv - self.centroid
        b = a + self._wobble(t, a)
        for _ in range(60):
            nxt = a + self._wobble(t, b)
            change = np.abs(nxt - b).max(initial=0.0)
            b = nxt
            if change < CONVERGED:
                break
        else:
            raise RuntimeError(f"the wobble's inverse did not converge ({change:.2g} px)")
        p, angle, s = self.pose(t)
        c, n = math.cos(angle), math.sin(angle)
        return p + s * np.stack([c * b[:, 0] - n * b[:, 1], n * b[:, 0] + c * b[:, 1]], axis=1)


@dataclass(frozen=True, eq=False)
class _Camera:
    """Pan and zoom: world (background photo) pixels <-> frame pixels at frame t."""

    rest: np.ndarray  # (2,) world point at the frame's centre when the camera is at rest
    centre: np.ndarray  # (2,) the frame's centre, ((W - 1) / 2, (H - 1) / 2)
    pan: np.ndarray  # (J, 4): ax ay rate phase
    zoom: tuple[float, float, float, float]  # log-zoom mean, amplitude, rate, phase

    def pose(self, t: float) -> tuple[np.ndarray, float]:
        mean, amp, rate, phase = self.zoom
        c = self.rest + np.sin(self.pan[:, 2] * t + self.pan[:, 3]) @ self.pan[:, :2]
        return c, math.exp(mean + amp * math.sin(rate * t + phase))

    def to_world(self, t: float, xy: np.ndarray) -> np.ndarray:
        c, z = self.pose(t)
        return (xy - self.centre) / z + c

    def to_frame(self, t: float, world: np.ndarray) -> np.ndarray:
        c, z = self.pose(t)
        return (world - c) * z + self.centre


# ---------------------------------------------------------------------------------------------
# The clip


@dataclass(frozen=True, eq=False)
class ClipObject:
    """One object of a clip: what it is, when it is hidden or out of the frame, its sprite."""

    id: int  # its value in Clip.masks; larger ids are nearer the camera
    shape: str
    colour: str
    textured: bool
    distractor: bool  # a look-alike crossing near another object, not one to follow
    look_alike_of: int  # a distractor: the id of the object it imitates; 0 otherwise
    hidden: tuple[int, ...]  # frames where it is in the frame but wholly covered
    out_of_frame: tuple[int, ...]  # frames where no pixel of it lies in the frame
    first_visible: int  # the first frame with a visible pixel of it; -1 if none
    sprite: np.ndarray = field(repr=False)  # (h, w, 3) uint8, its fill in its own pixels
    sprite_mask: np.ndarray = field(repr=False)  # (h, w) bool, its shape in its own pixels
    motion: _Motion = field(repr=False)


@dataclass(frozen=True)
class Occlusion:
    """A planned occlusion: the target is visible at frame 0, wholly hidden by the occluder
    (nearer, larger) for ``frames``, and visible again at a later frame."""

    target: int  # the id of the object that is wholly hidden
    occluder: int  # the id of the object that hides it
    frames: tuple[int, ...]  # the consecutive frames it is hidden, >= HIDDEN_RUN of them


@dataclass(frozen=True, eq=False)
class Clip:
    """A synthetic video with its exact masks, and the maps that give exact tracks: frame
    points <-> world (background) points <-> each object's sprite coordinates, at any frame."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray  # (T, H, W) uint8: 0 background, k = objects[k - 1]
    objects: tuple[ClipObject, ...]  # in paint (depth) order, back to front
    background: np.ndarray = field(repr=False)  # (B, B, 3) uint8: the world the camera sees
    camera: _Camera = field(repr=False)  # world <-> frame at each frame
    occlusion: Occlusion | None  # the planned occlusion, if the clip has one
    seed: int
    split: str

    def _object(self, obj_id: int) -> ClipObject:
        if not 1 <= obj_id <= len(self.objects):
            raise UserError(f"object id must be 1..{len(self.objects)}, got {obj_id}")
        return self.objects[obj_id - 1]

    def _frame(self, t: int) -> int:
        if not 0 <= t < len(self.frames):
            raise UserError(f"frame must be 0..{len(self.frames) - 1}, got {t}")
        return int(t)

    def to_world(self, t: int, xy: np.ndarray) -> np.ndarray:
        """(N, 2) frame points of frame t -> (N, 2) world (background photo) points."""
        return self.camera.to_world(t, np.asarray(xy, np.float64).reshape(-1, 2))

    def to_frame(self, t: int, world: np.ndarray) -> np.ndarray:
        """(N, 2) world points -> (N, 2) points of frame t."""
        return self.camera.to_frame(t, np.asarray(world, np.float64).reshape(-1, 2))

    def to_sprite(self, obj_id: int, t: int, xy: np.ndarray) -> np.ndarray:
        """(N, 2) points of frame t -> (N, 2) coordinates in object ``obj_id``'s sprite; the
        sprite pixel a frame pixel shows is ``floor(uv + 0.5)``."""
        return self._object(obj_id).motion.to_sprite(t, self.to_world(t, xy))

    def from_sprite(self, obj_id: int, t: int, uv: np.ndarray) -> np.ndarray:
        """(N, 2) coordinates in object ``obj_id``'s sprite -> (N, 2) points of frame t."""
        motion = self._object(obj_id).motion
        return self.camera.to_frame(t, motion.from_sprite(
            t, np.asarray(uv, np.float64).reshape(-1, 2)))

    def owner(self, points: np.ndarray, frame: int = 0) -> np.ndarray:
        """(N,) int: the id whose pixel each (N, 2) point of ``frame`` lies in (0 background)."""
        frame = self._frame(frame)
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        h, w = self.masks.shape[1:]
        px = np.floor(pts + 0.5)
        if not np.isfinite(pts).all() or (px < 0).any() or (px[:, 0] >= w).any() \
                or (px[:, 1] >= h).any():
            raise UserError(f"query points must lie in the {w}x{h} frame (x in [-0.5, "
                            f"{w - 0.5}), y in [-0.5, {h - 0.5}))")
        px = px.astype(np.int64)
        return self.masks[frame, px[:, 1], px[:, 0]].astype(np.int64)

    def track(self, points: np.ndarray, frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Exact tracks of (N, 2) points of ``frame``: xy (T, N, 2) float32, the position in
        every frame, and visible (T, N) bool, true where the point is in the frame and its
        pixel belongs to its own object (or the background) in ``masks``. A point follows what
        its pixel shows in ``frame``: the object of that id, or the background."""
        frame = self._frame(frame)
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        owner = self.owner(pts, frame)
        world = self.to_world(frame, pts)  # background points keep their world coordinate
        uv = {k: self.objects[k - 1].motion.to_sprite(frame, world[owner == k])
              for k in np.unique(owner[owner > 0]).tolist()}
        t_count, h, w = self.masks.shape
        xy = np.empty((t_count, len(pts), 2), np.float32)
        visible = np.zeros((t_count, len(pts)), bool)
        for t in range(t_count):
            at = world.copy()
            for k, coords in uv.items():
                at[owner == k] = self.objects[k - 1].motion.from_sprite(t, coords)
            xy[t] = self.camera.to_frame(t, at)
            # Read visibility at the float32 positions handed out, so a caller who rounds
            # them finds the same pixel.
            px = np.floor(xy[t].astype(np.float64) + 0.5)
            inside = ((px >= 0).all(1) & (px[:, 0] < w) & (px[:, 1] < h)
                      & np.isfinite(px).all(1))
            ix = px[inside].astype(np.int64)
            visible[t, inside] = self.masks[t, ix[:, 1], ix[:, 0]] == owner[inside]
        return xy, visible

    def sample_tracks(self, n: int, rng: np.random.Generator, frame: int = 0,
                      on_objects: float = 0.5) -> np.ndarray:
        """(n, 2) float32 query points of ``frame``, about ``on_objects`` of them on objects
        (uniform over object pixels) and the rest on the background, each placed at random
        within its pixel; pass them to :meth:`track`."""
        frame = self._frame(frame)
        if n < 0 or not 0 <= on_objects <= 1:
            raise UserError(f"sample_tracks needs n >= 0 and on_objects in [0, 1], got n={n}, "
                            f"on_objects={on_objects}")
        mask = self.masks[frame]
        fg = np.argwhere(mask > 0)  # (M, 2) row, column
        bg = np.argwhere(mask == 0)
        n_fg = round(n * on_objects) if len(bg) else n
        n_fg = n_fg if len(fg) else 0
        picks = [pixels[rng.integers(0, len(pixels), count)]
                 for pixels, count in ((fg, n_fg), (bg, n - n_fg)) if count]
        rows_cols = np.concatenate(picks) if picks else np.zeros((0, 2), np.int64)
        jitter = rng.uniform(-0.45, 0.45, (len(rows_cols), 2))  # within the pixel
        return (rows_cols[:, ::-1] + jitter).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Planning: sprites, paths, the occlusion and the distractor


@dataclass(eq=False)
class _Plan:
    """One object before it is drawn: its sprite, its geometry and its motion."""

    shape: str
    colour: str
    textured: bool
    texture: str | None
    depth: float  # how deep the texture's shade goes
    sprite: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool
    centroid: np.ndarray  # (2,)
    reach: float  # sprite px: every sprite point that shows a mask pixel lies this close
    inner: float  # sprite px: every sprite point this close shows a mask pixel
    radius: float  # the sprite radius it was drawn with
    motion: _Motion | None = None
    distractor: bool = False
    look_alike_of: _Plan | None = None

    @property
    def wobble(self) -> float:
        """The most the wobble moves a point, in sprite px."""
        return float(self.motion.wobble[:, 0].sum()) if self.motion is not None else 0.0


def _sprite(shape: str, colour: str, radius: float, texture: str | None, depth: float,
            rng: np.random.Generator) -> _Plan:
    """One object drawn in its own canvas, cropped to its pixels with one empty pixel round."""
    radius = max(radius, MIN_SPRITE_RADIUS)
    half = math.ceil(REACH[shape] * radius) + 2
    side = 2 * half + 1
    canvas = Image.new("L", (side, side), 0)
    scenes._draw_shape(ImageDraw.Draw(canvas), shape, half, half, radius, rng)
    mask = np.asarray(canvas) > 127
    if not mask.any():  # a shape too small to draw: a dot of it
        mask = np.zeros_like(mask)
        mask[half - 1:half + 2, half - 1:half + 2] = True
    fill = np.broadcast_to(np.array(scenes.COLOURS[colour], np.float32), (side, side, 3))
    if texture is not None:  # the photo's light and shade, in the object's colour
        shade = scenes._crop(scenes._photo(texture), side, rng).mean(axis=2, keepdims=True)
        fill = fill * (1 - depth + depth * shade / 255.0)
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    mask = np.pad(mask[box], 1)
    fill = np.pad(np.clip(fill[box], 0, 255).round().astype(np.uint8), ((1, 1), (1, 1), (0, 0)),
                  mode="edge")
    ys, xs = np.nonzero(mask)
    centroid = np.array([xs.mean(), ys.mean()])
    inside = np.hypot(xs - centroid[0], ys - centroid[1])
    ys0, xs0 = np.nonzero(~mask)  # the empty rim is among them
    outside = np.hypot(xs0 - centroid[0], ys0 - centroid[1])
    return _Plan(shape, colour, texture is not None, texture, depth, fill, mask, centroid,
                 reach=float(inside.max()) + HALF_DIAGONAL,
                 inner=float(outside.min()) - HALF_DIAGONAL, radius=radius)


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def _waves(rng: np.random.Generator, count: int, amplitude: tuple[float, float],
           rate: tuple[float, float], speed: float) -> np.ndarray:
    """(count, 4) sines ax ay rate phase, slowed so that together they move <= speed px/frame."""
    waves = np.array([[*(rng.uniform(*amplitude) * _unit(rng)), rng.uniform(*rate),
                       rng.uniform(0, 2 * math.pi)] for _ in range(count)]).reshape(-1, 4)
    fastest = float((np.hypot(waves[:, 0], waves[:, 1]) * waves[:, 2]).sum())
    if fastest > speed:
        waves[:, 2] *= speed / fastest
    return waves


def _motion(plan: _Plan, path: _Path, scale0: float, rng: np.random.Generator,
            breathing: tuple[float, float] = (0.0, 0.15)) -> _Motion:
    """Turning, breathing and wobble drawn at random around a given path and scale."""
    angle = (rng.uniform(0, 2 * math.pi), rng.uniform(-0.05, 0.05), rng.uniform(0, 0.3),
             rng.uniform(0.05, 0.2), rng.uniform(0, 2 * math.pi))
    scale = (scale0, rng.uniform(*breathing), rng.uniform(0.03, 0.15),
             rng.uniform(0, 2 * math.pi))
    r = plan.reach
    wobble = np.array([[rng.uniform(*WOBBLE_AMPLITUDE) * r, *_unit(rng),
                        *(rng.uniform(*WOBBLE_WAVES) / r * _unit(rng)),
                        rng.uniform(0, 2 * math.pi), rng.uniform(0.1, 0.4) * rng.choice([-1, 1])]
                       for _ in range(WOBBLE_TERMS)])
    return _Motion(path, angle, scale, wobble, plan.centroid)


def _texture(rng: np.random.Generator, textures: tuple[str, ...]) -> str | None:
    return textures[int(rng.integers(len(textures)))] if rng.random() < TEXTURED else None


def _base_object(rng: np.random.Generator, textures: tuple[str, ...], frames: int,
                 extent: np.ndarray, rest: np.ndarray) -> _Plan:
    """An object of random shape, colour and texture on a drifting, crossing or excursion
    path (one that leaves the frame over an edge and comes back)."""
    side = float(extent.min())
    shape = scenes.SHAPES[int(rng.integers(len(scenes.SHAPES)))]
    colour = tuple(scenes.COLOURS)[int(rng.integers(len(scenes.COLOURS)))]
    texture = _texture(rng, textures)
    radius = side * rng.uniform(*RADIUS)
    plan = _sprite(shape, colour, OVERSAMPLE * radius, texture, rng.uniform(0.45, 0.9), rng)
    scale0 = rng.uniform(0.85, 1.15) / OVERSAMPLE
    size = scale0 * plan.reach * 1.25  # world px, with room for breathing and wobble
    kind = rng.choice(["drift", "cross", "excursion"], p=[0.5, 0.25, 0.25])
    start = rest + rng.uniform(-0.3, 0.3, 2) * extent
    if kind == "cross":  # a straight crossing, in the frame at t0
        path = _Path(start, rng.uniform(0.015, 0.045) * side * _unit(rng),
                     rng.uniform(0, max(frames - 1, 0)),
                     _waves(rng, 1, (0.02 * side, 0.06 * side), (0.05, 0.2), 0.012 * side))
    elif kind == "excursion" and frames >= 8:
        # Out over an edge in direction n and back: a Gaussian bump that carries the centre
        # past the frame's support (|nx| W/2 + |ny| H/2) by more than the object's size.
        n = _unit(rng)
        support = float(np.abs(n) @ extent) / 2
        inward = support - size - rng.uniform(0.02, 0.15) * side
        across = np.array([-n[1], n[0]]) * rng.uniform(-0.25, 0.25) * side
        height = support + 1.3 * size + 0.03 * side - inward
        sigma = max(1.5, 0.61 * height / (1.5 * SPEED * side))
        peak = (rng.uniform(sigma, frames - 1 - sigma) if frames - 1 > 2 * sigma
                else (frames - 1) / 2)
        path = _Path(rest + n * inward + across, bump=np.array([*(n * height), peak, sigma]),
                     waves=_waves(rng, 1, (0.02 * side, 0.05 * side), (0.05, 0.2),
                                  0.01 * side))
    else:  # drifting about, now and then out of the frame
        path = _Path(start, waves=_waves(rng, 2, (0.03 * side, 0.2 * side), (0.04, 0.25),
                                         SPEED * side))
    plan.motion = _motion(plan, path, scale0, rng)
    return plan


def _scale_range(motion: _Motion, times: np.ndarray) -> np.ndarray:
    return np.array([motion.pose(float(t))[2] for t in times])


def _narrowest(plan: _Plan) -> tuple[np.ndarray, float]:
    """The sprite direction (2,) across which the shape is narrowest, and its half-width
    there: the furthest its pixels reach from the centroid along that line, either way."""
    ys, xs = np.nonzero(plan.mask)
    points = np.stack([xs, ys], 1) - plan.centroid  # (M, 2)
    angles = np.linspace(0, math.pi, 36, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], 1)  # (36, 2)
    reach = np.abs(points @ directions.T).max(0) + HALF_DIAGONAL  # (36,)
    best = int(reach.argmin())
    return directions[best], float(reach[best])


def _occlusion(rng: np.random.Generator, objects: list[_Plan], frames: int,
               extent: np.ndarray, rest: np.ndarray, textures: tuple[str, ...]
               ) -> tuple[_Plan, _Plan]:
    """Plan a larger object crossing one of ``objects`` (which it changes: the target now
    drifts gently near the middle, at most :data:`TARGET_RADIUS` of the side) so that the
    target is wholly covered for a window of 3 to 6 frames with a visible frame either side.

    Covering does not depend on how either turns: the occluder's inscribed disc less its
    wobble, minus the target's circumscribed disc plus its wobble, leaves ``room`` for the
    centres to part, and the occluder sweeps past so that they part by at most that within
    the window. Uncovering soon after asks the sweep to cross the occluder's narrowest
    width, so it goes that way and the occluder barely turns meanwhile. Returns the target
    and the occluder."""
    side = float(extent.min())
    target = objects[int(rng.integers(len(objects)))]
    old = target.motion
    path = _Path(rest + rng.uniform(-0.15, 0.15, 2) * extent,
                 waves=_waves(rng, 2, (0.02 * side, 0.08 * side), (0.04, 0.2),
                              0.4 * SPEED * side))
    scale0 = min(old.scale[0], max(TARGET_RADIUS * side, TINY) / (target.reach + target.wobble))
    target.motion = _Motion(path, old.angle, (scale0, rng.uniform(0, 0.05), *old.scale[2:]),
                            old.wobble, old.centroid)
    length = int(rng.integers(HIDDEN_RUN, min(HIDDEN_RUN + 3, frames - 2) + 1))
    first = int(rng.integers(1, frames - length))  # a frame before and after it
    window = np.arange(first, first + length, dtype=np.float64)
    half = (length - 1) / 2
    middle = first + half
    covered = float((_scale_range(target.motion, window) * (target.reach + target.wobble)).max())
    factor = rng.uniform(1.8, 2.3)
    shape = OCCLUDER_SHAPES[int(rng.integers(len(OCCLUDER_SHAPES)))]
    colour = tuple(scenes.COLOURS)[int(rng.integers(len(scenes.COLOURS)))]
    texture = _texture(rng, textures)
    depth = rng.uniform(0.45, 0.9)
    radius = OVERSAMPLE * factor * covered / 0.8
    # Of a few draws, the one whose narrowest width is closest to its inscribed disc: the
    # sweep then uncovers the target soon after the window.
    occluder = max((_sprite(shape, colour, radius, texture, depth, rng) for _ in range(4)),
                   key=lambda p: p.inner / _narrowest(p)[1])
    motion = _motion(occluder, _Path(np.zeros(2)), 1.0, rng, breathing=(0.0, 0.05))
    angle = (motion.angle[0], rng.uniform(-0.02, 0.02), rng.uniform(0, 0.05), *motion.angle[3:])
    # (A hollow draw would leave no inscribed disc; the check on the masks then retries.)
    inner = max(occluder.inner - float(motion.wobble[:, 0].sum()), 0.25 * occluder.reach)
    scale0 = factor * covered * math.exp(motion.scale[1]) / inner
    motion = _Motion(motion.path, angle, (scale0, *motion.scale[1:]), motion.wobble,
                     occluder.centroid)
    room = float((_scale_range(motion, window) * inner
                  - _scale_range(target.motion, window) * (target.reach + target.wobble)).min())
    lateral = rng.uniform(-0.3, 0.3) * room
    reach = math.sqrt(max(room ** 2 - lateral ** 2, 0.0))
    speed = min(0.97 * reach / half, max(SWEEP * side, TINY))
    narrow, _ = _narrowest(occluder)
    turn = motion.pose(middle)[1]
    c, n = math.cos(turn), math.sin(turn)
    direction = np.array([c * narrow[0] - n * narrow[1], n * narrow[0] + c * narrow[1]])
    offset = lateral * np.array([-direction[1], direction[0]])
    occluder.motion = _Motion(_Path(offset, speed * direction, middle, follows=path),
                              motion.angle, motion.scale, motion.wobble, motion.centroid)
    return target, occluder


def _distractor(rng: np.random.Generator, model: _Plan, frames: int, side: float) -> _Plan:
    """A look-alike of ``model`` (its shape kind, colour and texture photo, another instance
    of the shape) that passes close by it, or across it."""
    plan = _sprite(model.shape, model.colour, model.radius * rng.uniform(0.85, 1.15),
                   model.texture, model.depth, rng)
    scale0 = model.motion.scale[0] * rng.uniform(0.9, 1.1)
    near = (model.reach * model.motion.scale[0] + plan.reach * scale0) * rng.uniform(0.2, 1.0)
    direction = _unit(rng)
    offset = near * rng.choice([-1, 1]) * np.array([-direction[1], direction[0]])
    path = _Path(offset, rng.uniform(0.015, 0.04) * side * direction,
                 rng.uniform(0, max(frames - 1, 0)), follows=model.motion.path)
    plan.motion = _motion(plan, path, scale0, rng)
    plan.distractor, plan.look_alike_of = True, model
    return plan


# ---------------------------------------------------------------------------------------------
# Drawing


def _background(background: np.ndarray, camera: _Camera, t: int, height: int, width: int
                ) -> np.ndarray:
    """(H, W, 3) float32: the camera's bilinear view of the background at frame t. Pan and zoom
    keep the axes, so the world coordinates of columns and rows are separable."""
    wx = camera.to_world(t, np.stack([np.arange(width), np.zeros(width)], 1))[:, 0]
    wy = camera.to_world(t, np.stack([np.zeros(height), np.arange(height)], 1))[:, 1]
    last = background.shape[0] - 1
    x0 = np.clip(np.floor(wx).astype(np.int64), 0, last - 1)
    y0 = np.clip(np.floor(wy).astype(np.int64), 0, last - 1)
    fx = (wx - x0).astype(np.float32)[None, :, None]
    fy = (wy - y0).astype(np.float32)[:, None, None]
    rows = background[y0].astype(np.float32) * (1 - fy) + background[y0 + 1] * fy  # (H, B, 3)
    return rows[:, x0] * (1 - fx) + rows[:, x0 + 1] * fx


def _footprint(obj: _Plan, camera: _Camera, t: int, height: int, width: int
               ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Where object ``obj`` covers frame t (ignoring what is in front): the box of the frame
    it may touch, the (h, w) bool of its pixels there and (h, w, 2) their sprite pixels."""
    motion = obj.motion
    p, _, s = motion.pose(t)
    _, z = camera.pose(t)
    centre = camera.to_frame(t, p[None])[0]
    r = z * s * (obj.reach + obj.wobble) + 1  # frame px: nothing of it lies further
    x0, y0 = max(math.floor(centre[0] - r), 0), max(math.floor(centre[1] - r), 0)
    x1, y1 = min(math.ceil(centre[0] + r), width - 1), min(math.ceil(centre[1] + r), height - 1)
    if x1 < x0 or y1 < y0:
        return None
    ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    xy = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    uv = motion.to_sprite(t, camera.to_world(t, xy))
    pix = np.floor(uv + 0.5)
    h, w = obj.mask.shape
    inside = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    pix = np.where(inside[:, None], pix, 0).astype(np.int64)
    inside &= obj.mask[pix[:, 1], pix[:, 0]]
    shape = (y1 - y0 + 1, x1 - x0 + 1)
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), inside.reshape(shape), pix.reshape(*shape, 2)


def _draw(objects: list[_Plan], background: np.ndarray, camera: _Camera, frames: int,
          height: int, width: int, gain: np.ndarray | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8, masks (T, H, W) uint8, and per object (K, T) the pixels its
    shape covers in the frame and the pixels of it that are visible."""
    video = np.empty((frames, height, width, 3), np.uint8)
    masks = np.zeros((frames, height, width), np.uint8)
    covers = np.zeros((len(objects), frames), np.int64)
    for t in range(frames):
        image = _background(background, camera, t, height, width)
        for k, obj in enumerate(objects):  # back to front: the nearest is painted last
            found = _footprint(obj, camera, t, height, width)
            if found is None:
                continue
            box, inside, pix = found
            covers[k, t] = inside.sum()
            masks[t][box][inside] = k + 1
            image[box][inside] = obj.sprite[pix[..., 1][inside], pix[..., 0][inside]]
        if gain is not None:  # lighting: masks and tracks never see it
            image *= gain[t]
        video[t] = np.clip(image, 0, 255).round().astype(np.uint8)
    seen = np.stack([np.bincount(m.ravel(), minlength=len(objects) + 1)[1:] for m in masks], 1)
    return video, masks, covers, seen


def _hidden_run(covers: np.ndarray, seen: np.ndarray) -> tuple[int, ...] | None:
    """The first run of >= HIDDEN_RUN frames where the object is in the frame but wholly
    covered, if it is visible at frame 0 and again after the run."""
    hidden = (covers > 0) & (seen == 0)
    if seen[0] == 0:
        return None
    start = None
    for t, h in enumerate([*hidden.tolist(), False]):
        if h and start is None:
            start = t
        elif not h and start is not None:
            if t - start >= HIDDEN_RUN and (seen[t:] > 0).any():
                return tuple(range(start, t))
            start = None
    return None


def _whole(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    pair = (size, size) if _whole(size) else tuple(size) if isinstance(size, tuple | list) \
        else ()
    if len(pair) != 2 or not all(_whole(s) and MIN_SIDE <= s <= MAX_SIDE for s in pair):
        raise UserError(f"clip size must be an int or (height, width), each {MIN_SIDE} to "
                        f"{MAX_SIDE} pixels, got {size!r}")
    return int(pair[0]), int(pair[1])


def make_clip(seed: int, split: str = "train", size: int | tuple[int, int] = 256,
              frames: int = 24, n_objects: tuple[int, int] = (1, 3),
              occlusion: bool | None = None, distractor: bool | None = None,
              camera: bool = True, lighting: bool = True) -> Clip:
    """The clip of ``seed`` in ``split`` ("train" or "test"): ``frames`` frames of ``size``
    (an int, or (height, width)) with n_objects[0] to n_objects[1] objects. ``occlusion``
    True plans one object wholly hidden by a larger one for >= 3 frames (then at least two
    objects, the occluder the nearest; it needs >= 5 frames), False plans none, None one clip
    in two where the clip is long enough. ``distractor`` likewise adds a look-alike of one
    object (one clip in three). ``camera`` False holds the camera still; ``lighting`` False
    draws without the lighting drift (pixels are then exactly the sprites' colours)."""
    if split not in scenes.PHOTOS:
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    height, width = _size(size)
    if not _whole(frames) or frames < 1:
        raise UserError(f"frames must be a whole number >= 1, got {frames!r}")
    frames = int(frames)
    if (not isinstance(n_objects, tuple | list) or len(n_objects) != 2
            or not all(_whole(n) for n in n_objects)
            or not 1 <= n_objects[0] <= n_objects[1] <= MAX_OBJECTS):
        raise UserError(f"n_objects must be (least, most) with 1 <= least <= most <= "
                        f"{MAX_OBJECTS}, got {n_objects!r}")
    if occlusion and frames < MIN_OCCLUSION_FRAMES:
        raise UserError(f"an occlusion needs frames >= {MIN_OCCLUSION_FRAMES} (visible, hidden "
                        f"{HIDDEN_RUN} frames, visible again), got {frames}: pass more frames "
                        "or occlusion=None")

    def stream(name: str, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([seed, 0 if split == "train" else 1, STREAMS[name],
                                      attempt])

    photos = scenes.PHOTOS[split]
    extent = np.array([width, height], np.float64)
    side = float(extent.min())
    rng = stream("background")
    names = photos["backgrounds"]
    world = math.ceil(BACKGROUND * extent.max()) + 4
    background = scenes._crop(scenes._photo(names[int(rng.integers(len(names)))]), world, rng)
    rest = np.full(2, (world - 1) / 2)

    rng = stream("camera")
    zoom = (rng.uniform(-0.05, 0.1), rng.uniform(0, 0.1), rng.uniform(0.03, 0.12),
            rng.uniform(0, 2 * math.pi))  # log-zoom within [-0.15, 0.2]
    # Pan within what the widest view (zoom e^-0.15) leaves of the background, 2 px to spare.
    room = (world - 1) / 2 - extent.max() / 2 / ZOOM_OUT - 2
    pan = _waves(rng, 2, (0.02 * extent.max(), room / 2), (0.03, 0.12), 0.024 * extent.max())
    view = _Camera(rest, (extent - 1) / 2, pan if camera else np.zeros((0, 4)),
                   zoom if camera else (0.0, 0.0, 0.0, 0.0))

    rng = stream("lighting")
    rates = rng.uniform(0.05, 0.2, 2)
    level, swing, tint = rng.uniform(-0.1, 0.1), rng.uniform(0, 0.12), rng.uniform(0, 0.05, 3)
    phases = rng.uniform(0, 2 * math.pi, 4)
    ts = np.arange(frames)[:, None]
    gain = (np.exp(level + swing * np.sin(rates[0] * ts + phases[0])
                   + tint * np.sin(rates[1] * ts + phases[1:])).astype(np.float32)
            if lighting else None)  # (T, 3): a slow change of brightness and tint

    rng = stream("objects")
    count = int(rng.integers(n_objects[0], n_objects[1] + 1))
    chances = rng.random(2)  # drawn whatever the caller chose, so the objects stay the same
    occluding = (occlusion if occlusion is not None
                 else frames >= MIN_OCCLUSION_FRAMES and bool(chances[0] < OCCLUSION_SHARE))
    distracting = distractor if distractor is not None else bool(chances[1] < DISTRACTOR_SHARE)
    # The occluder takes the place of the nearest object (an occlusion needs two).
    drawn = [_base_object(rng, photos["textures"], frames, extent, rest)
             for _ in range(max(count, 2) if occluding else count)]
    saved = [plan.motion for plan in drawn]
    # Plans: occlusions from fresh streams until one passes the check on the masks; then,
    # where the occlusion was left to chance, the clip without one (tiny frames are hard).
    plans: list[int | None] = list(range(PLANNING_TRIES)) if occluding else [None]
    if occluding and occlusion is None:
        plans.append(None)
    for attempt in plans:
        for plan, motion in zip(drawn, saved, strict=True):
            plan.motion = motion
        base = drawn[:-1] if attempt is not None else drawn[:count]
        ordered, target, occluder = list(base), None, None
        if attempt is not None:
            target, occluder = _occlusion(stream("occlusion", attempt), base, frames,
                                          extent, rest, photos["textures"])
        if distracting:
            rng = stream("distractor")
            model = target or base[int(rng.integers(len(base)))]
            ordered.insert(int(rng.integers(len(base) + 1)),
                           _distractor(rng, model, frames, side))
        if occluder is not None:
            ordered.append(occluder)  # the nearest of all
        video, masks, covers, seen = _draw(ordered, background, view, frames, height, width,
                                           gain)
        run = None
        if target is not None:
            k = ordered.index(target)
            run = _hidden_run(covers[k], seen[k])
            if run is None:
                continue
        break
    else:
        raise RuntimeError(f"no occlusion could be planned for seed {seed} in "
                           f"{PLANNING_TRIES} tries: try a larger size or more frames")

    ids = {id(plan): k + 1 for k, plan in enumerate(ordered)}
    objects = tuple(ClipObject(
        id=k + 1, shape=plan.shape, colour=plan.colour, textured=plan.textured,
        distractor=plan.distractor,
        look_alike_of=ids[id(plan.look_alike_of)] if plan.look_alike_of is not None else 0,
        hidden=tuple(np.nonzero((covers[k] > 0) & (seen[k] == 0))[0].tolist()),
        out_of_frame=tuple(np.nonzero(covers[k] == 0)[0].tolist()),
        first_visible=int(np.argmax(seen[k] > 0)) if (seen[k] > 0).any() else -1,
        sprite=plan.sprite, sprite_mask=plan.mask, motion=plan.motion)
        for k, plan in enumerate(ordered))
    occlusion_record = (Occlusion(ids[id(target)], ids[id(occluder)], run)
                        if target is not None and run is not None else None)
    return Clip(video, masks, objects, background, view, occlusion_record, seed, split)


class ClipsMadeOnUse:
    """``count`` clips that ``make()`` draws on first use and keeps: a trainer's per-epoch
    validation set, whose length the training loop needs at once and whose pixels only the
    evaluation reads (:meth:`clips`), seconds into the run rather than before it."""

    def __init__(self, count: int, make: Callable[[], list[Clip]]) -> None:
        self.count, self._make = count, make
        self._clips: list[Clip] | None = None

    def __len__(self) -> int:
        return self.count

    def clips(self) -> list[Clip]:
        if self._clips is None:
            self._clips = self._make()
        return self._clips

    def __getitem__(self, index: int) -> Clip:
        return self.clips()[index]
