"""Phrases that name one object of a synthetic scene: "the red star", "the big ring on the
left", ... with the paraphrases text prompts are trained on.

An object is described by five attributes: shape, colour, size (share of the image its
unoccluded shape covers) and the row and column of its visible centre in thirds of the image.
A phrase mentions some of them; it names the object only if no other object of the scene has
the same values for those attributes, and only such phrases are used.
"""

from __future__ import annotations

from collections.abc import Sequence

from attnvision.data.scenes import COLOURS, SHAPES, SIZES, SceneObject, grid_cell, position_words

COLOUR_NAMES = tuple(COLOURS)
# Attribute index in an attribute tuple (shape, colour, size, row, column).
SHAPE, COLOUR, SIZE, ROW, COL = range(5)
POSITION = (ROW, COL)
SHAPE_WORDS = {"ellipse": ("ellipse", "oval"), "polygon": ("polygon",), "star": ("star",),
               "ring": ("ring", "donut"), "blob": ("blob",), "letter": ("letter",),
               "animal": ("animal", "silhouette")}
SIZE_WORDS = {"small": ("small", "little"), "medium": ("medium", "medium-sized"),
              "large": ("large", "big")}
# (attributes a phrase pins down, its wordings); {position} is "on the left", "at the top"...
TEMPLATES: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = (
    ((SHAPE,), ("the {shape}", "{shape}")),
    ((COLOUR,), ("the {colour} one", "the {colour} object")),
    ((SHAPE, COLOUR), ("{colour} {shape}", "the {colour} {shape}", "a {colour} {shape}")),
    ((SHAPE, SIZE), ("the {size} {shape}",)),
    ((SHAPE, *POSITION), ("the {shape} {position}",)),
    ((COLOUR, *POSITION), ("the {colour} object {position}",)),
    ((SHAPE, COLOUR, SIZE), ("the {size} {colour} {shape}", "{size} {colour} {shape}")),
    ((SHAPE, COLOUR, *POSITION), ("the {colour} {shape} {position}",
                                  "{colour} {shape} {position}")),
    ((SHAPE, COLOUR, SIZE, *POSITION), ("the {size} {colour} {shape} {position}",)),
)

Attributes = tuple[int, int, int, int, int]


def attributes(obj: SceneObject) -> Attributes:
    """(shape, colour, size, row, column) indices of a scene object."""
    row, col = grid_cell(obj.mask)
    return (SHAPES.index(obj.shape), COLOUR_NAMES.index(obj.colour), SIZES.index(obj.size),
            row, col)


def describe(a: Sequence[int]) -> str:
    """The full description, as :attr:`SceneObject.description` writes it."""
    return (f"the {SIZES[a[SIZE]]} {COLOUR_NAMES[a[COLOUR]]} {SHAPES[a[SHAPE]]} "
            f"{position_words(a[ROW], a[COL])}")


def _fill(template: str, a: Sequence[int]) -> list[str]:
    shapes = SHAPE_WORDS[SHAPES[a[SHAPE]]] if "{shape}" in template else ("",)
    sizes = SIZE_WORDS[SIZES[a[SIZE]]] if "{size}" in template else ("",)
    return [template.format(shape=shape, size=size, colour=COLOUR_NAMES[a[COLOUR]],
                            position=position_words(a[ROW], a[COL]))
            for shape in shapes for size in sizes]


def naming_phrases(index: int, scene: Sequence[Sequence[int]]) -> list[str]:
    """Every phrase that names object ``index`` of a scene of attribute tuples, and no other."""
    mine = scene[index]
    out = []
    for fields, templates in TEMPLATES:
        others = [o for i, o in enumerate(scene) if i != index]
        if any(all(o[f] == mine[f] for f in fields) for o in others):
            continue
        for template in templates:
            out.extend(_fill(template, mine))
    return out
