"""The JSON bodies of the HTTP API; FastAPI builds the OpenAPI page (``/docs``) from them.

Coordinates are in the pixels of the image as stored (EXIF orientation applied): x to the
right, y down, (0, 0) the top-left corner. Unknown fields are refused, so a misspelt field
is an error rather than a silently ignored prompt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, StringConstraints

MAX_POINTS = 64
MAX_OBJECTS = 256
MAX_TEXT = 200  # characters: a phrase naming one object, not a paragraph

Point = tuple[FiniteFloat, FiniteFloat]
Box = tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]
# Stripped before the length check, so "   " is refused like "" (422), not sent as no text.
Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                          max_length=MAX_TEXT)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prompt(Strict):
    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS,
                                description="[x, y] in image pixels", examples=[[[320, 180]]])
    labels: list[Literal[0, 1]] = Field(default_factory=list, max_length=MAX_POINTS,
                                        description="one per point: 1 object, 0 background",
                                        examples=[[1]])
    box: Box | None = Field(None, description="[x0, y0, x1, y1] in image pixels")
    text: Phrase | None = Field(None, description="a phrase naming the object, alone or with "
                                "points and/or a box; only for models that take text "
                                "(GET /api/status says `text`)", examples=["the red star"])
    zoom: bool = Field(False, description="with a box alone (and one mask): segment again in "
                       "a window around the box at the model's full resolution (sharper "
                       "small objects; one more image encoding)")


class PredictRequest(Prompt):
    multimask: bool = Field(True, description="three ambiguous masks (True) or one (False)")
    format: Literal["png", "rle", "both"] = Field(
        "png", description="masks as base64 PNG (grayscale, 255 inside), COCO RLE, or both")


class MaskOut(BaseModel):
    score: float = Field(description="the model's predicted IoU")
    area: int = Field(description="pixels inside the mask")
    bbox: list[int] = Field(description="COCO [x, y, width, height]")
    png: str | None = Field(None, description="base64 PNG, the image's size")
    rle: dict[str, Any] | None = Field(None, description="COCO RLE {size: [h, w], counts}")


class PredictResponse(BaseModel):
    width: int
    height: int
    masks: list[MaskOut]
    best: int = Field(description="index of the mask with the highest score")
    decoder_ms: float = Field(description="time in the mask decoder (and, for a phrase not "
                                          "seen before, the sentence encoder; with zoom, "
                                          "the window's encoding)")


class ImageInfo(BaseModel):
    id: str = Field(description="32 hex digits, random")
    name: str
    width: int
    height: int
    state: Literal["queued", "encoding", "ready", "failed", "unavailable"]
    progress: float = Field(description="share of the embedding done, 0..1")
    error: str | None = None


class AutoMask(BaseModel):
    segmentation: dict[str, Any] = Field(description="COCO RLE")
    area: int
    bbox: list[int] = Field(description="COCO [x, y, width, height]")
    score: float
    stability_score: float


class EverythingResponse(BaseModel):
    count: int
    overlay_png: str = Field(description="base64 RGBA PNG: every mask in its own colour")
    masks: list[AutoMask]


class ObjectPrompt(Prompt):
    candidate: int = Field(0, ge=0, le=2, description="which of the three masks to keep")


class CocoRequest(Strict):
    objects: list[ObjectPrompt] = Field(default_factory=list, max_length=MAX_OBJECTS,
                                        description="one annotation per prompt")
    everything: bool = Field(True, description="add the segment-everything masks if computed")


class Status(BaseModel):
    model: str | None = Field(description="the loaded SAM, or null")
    message: str = Field(description="what the page shows about the model")
    text: bool = Field(description="the loaded model takes text prompts")
    token_required: bool
    max_upload_bytes: int
    max_pixels: int
    points_per_side: int
    images: int = Field(description="images stored")


class Problem(BaseModel):
    detail: str = Field(description="what is wrong and how to fix it, in one line")
