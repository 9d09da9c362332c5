"""The model at work for the app: images encoded in the background, prompts answered at once.

- Encoding (seconds on a CPU) runs on one background thread, one image at a time, under the
  encoder lock; a job's progress is the share of encoder blocks done (forward hooks), which
  the page polls. The on-disk ``EmbeddingCache`` is asked first, so an image seen before (by
  the app or by ``attnvision segment``) is never encoded again.
- Prompts (milliseconds) run on one decoder thread, each on a fresh ``SamPredictor`` given
  the cached embedding: one decoder pass at a time keeps the CPU's threads on one job, so a
  burst of clicks queues instead of thrashing, and always the same thread (not whichever
  request thread asked) keeps one warm OpenMP team instead of one per request thread, each
  spinning on its own after its job (measurably slower on 2 cores). A click is never held up
  by an encoding: the modules are only read (eval, no grad), so encoding, prompts and
  segment-everything may run side by side. The exception is a box zoomed in on: its window
  is encoded on the decoder thread, as part of that prompt (about 0.1 s for sam_tiny, seconds
  for vit_b on a CPU), and prompts behind it wait.
- A text prompt's phrase is encoded on the decoder thread as well, so the sentence encoder
  and its per-phrase cache are only ever used by one thread; the first phrase loads the
  encoder (seconds), later ones cost milliseconds, a phrase seen before nothing.
- Embeddings live in the memory LRU; one evicted from there is read back from the disk cache
  in the request (never re-encoded), and only an image missing from both is queued again.
- Segment everything reuses the image's embedding: the generator's predictor is one that
  already holds it (``_EmbeddedPredictor``), so the grid of prompts costs decoder passes only.
  Results are kept on disk beside the image, tagged with the model, so a restart keeps them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnvision.errors import UserError
from attnvision.files import write_json
from attnvision.sam import Sam, SamAutomaticMaskGenerator, SamPredictor
from attnvision.sam.embedding_cache import EmbeddingCache
from attnvision.sam.predictor import ImageLike, as_rgb_uint8, model_fingerprint
from attnvision.sam.pretrained import SHIPPED, everything_thresholds
from attnvision.sam.zoom import predict_zoomed
from attnvision.web.embeddings import Embedding, EmbeddingLRU
from attnvision.web.errors import ApiError
from attnvision.web.model import NO_MODEL, LoadedModel
from attnvision.web.uploads import ImageStore, StoredImage

log = logging.getLogger("attnvision.web")

QUEUED, ENCODING, READY, FAILED, UNAVAILABLE = (
    "queued", "encoding", "ready", "failed", "unavailable")


@dataclass
class Job:
    """One image's embedding in the making (fields are written by the encoder thread)."""

    state: str = QUEUED
    progress: float = 0.0
    error: str | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "progress": round(self.progress, 3), "error": self.error}


@dataclass(frozen=True)
class Prediction:
    masks: np.ndarray  # (C, H, W) bool
    scores: np.ndarray  # (C,)
    seconds: float  # in the decoder, lock wait excluded


class _EmbeddedPredictor(SamPredictor):
    """A predictor that already holds one image's embedding.

    The automatic generator calls ``set_image`` once per crop; with no crop layers its only
    crop is the whole image, whose embedding is here: no encoder pass. Another image (a crop)
    is encoded as usual.
    """

    def __init__(self, model: Sam, embedding: Embedding) -> None:
        super().__init__(model)
        self._embedding = embedding

    def set_image(self, image: ImageLike, image_format: str = "RGB") -> None:
        rgb = as_rgb_uint8(image, image_format)
        e = self._embedding
        if tuple(rgb.shape[:2]) == e.original_size:
            self.set_image_embedding(e.features, e.original_size, e.input_size, e.context)
        else:
            super().set_image(rgb)


def _not_ready(image_id: str, job: Job) -> ApiError:
    return ApiError(409, f"image {image_id} is not embedded yet ({job.state}, "
                         f"{job.progress:.0%}): poll GET /api/images/{image_id} until its "
                         "state is 'ready'")


class Segmenter:
    """SAM serving one app: encode jobs, embeddings, prompts, segment everything."""

    def __init__(self, model: LoadedModel, store: ImageStore, memory: EmbeddingLRU,
                 disk: EmbeddingCache, points_per_side: int = 16) -> None:
        self.loaded = model
        self.sam = model.sam
        self.store = store
        self.memory = memory
        self.disk = disk
        self.points_per_side = points_per_side
        self.encodes = 0  # images run through the encoder
        self.disk_loads = 0  # embeddings read from the disk cache instead
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._everything_lock = threading.Lock()
        self._current: Job | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnvision-encode")
        self._decoder = ThreadPoolExecutor(max_workers=1,
                                           thread_name_prefix="attnvision-decode")
        self._hooks = []
        self.fingerprint = None
        if self.sam is not None:
            self.fingerprint = model_fingerprint(self.sam)
            blocks = list(self.sam.image_encoder.blocks)
            for i, block in enumerate(blocks, start=1):
                self._hooks.append(block.register_forward_hook(
                    self._progress_hook(i / (len(blocks) + 1))))

    def close(self) -> None:
        """Stop the encoder and decoder threads (queued jobs are dropped), take the hooks off."""
        self._worker.shutdown(wait=False, cancel_futures=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _progress_hook(self, share: float):
        def hook(module, inputs, output) -> None:
            # Only the background encoding reports progress: a zoomed-in box's window is
            # encoded on the decoder thread and must not move another image's bar.
            job = self._current
            if job is not None and threading.current_thread().name.startswith(
                    "attnvision-encode"):
                job.progress = share

        return hook

    def _require_model(self) -> Sam:
        if self.sam is None:
            raise ApiError(503, NO_MODEL)
        return self.sam

    # --- embeddings ----------------------------------------------------------------------------

    def state(self, image_id: str) -> dict[str, Any]:
        """Where the embedding of an image stands; asking starts its encoding if needed."""
        image = self.store.get(image_id)
        if self.sam is None:
            return {"state": UNAVAILABLE, "progress": 0.0, "error": NO_MODEL}
        if image_id in self.memory:
            return Job(READY, 1.0).view()
        job = self._jobs.get(image_id)
        if job is None or job.state == READY:  # never seen, or evicted since
            found = self._from_disk(image)  # milliseconds: no need to queue it
            if found is not None:
                self.memory.put(image_id, found)
                return Job(READY, 1.0).view()
            job = self.start(image)
        return job.view()

    def delete(self, image_id: str) -> None:
        """Forget an image: its files, its embedding in memory and its job. The disk cache of
        embeddings is shared with the command line and keeps its own size bound."""
        self.store.remove(image_id)
        self.memory.pop(image_id)
        with self._jobs_lock:
            self._jobs.pop(image_id, None)

    def start(self, image: StoredImage) -> Job:
        """Queue the encoding of ``image`` unless it is queued or running already."""
        self._require_model()
        with self._jobs_lock:
            job = self._jobs.get(image.id)
            if job is not None and job.state in (QUEUED, ENCODING):
                return job
            job = self._jobs[image.id] = Job()
        self._worker.submit(self._encode, image, job)
        return job

    def _encode(self, image: StoredImage, job: Job) -> None:
        job.state = ENCODING
        try:
            rgb = self.store.pixels(image)
            predictor = SamPredictor(self.sam)
            with self._encode_lock:
                self._current = job
                try:
                    from_disk = self.disk.set_image(predictor, rgb)
                finally:
                    self._current = None
            if from_disk:
                self.disk_loads += 1
            else:
                self.encodes += 1
            self.memory.put(image.id, Embedding.of(predictor))
            job.progress = 1.0
            job.state = READY
        except (UserError, ApiError) as e:
            job.error, job.state = str(e), FAILED
        except Exception as e:  # reported to the page, logged here, the server goes on
            log.exception("embedding image %s failed", image.id)
            job.error, job.state = f"{type(e).__name__}: {e}", FAILED

    def _from_disk(self, image: StoredImage) -> Embedding | None:
        """The embedding from the disk cache, or None; never runs the encoder."""
        predictor = SamPredictor(self.sam)
        if not self.disk.load(predictor, self.store.pixels(image)):
            return None
        self.disk_loads += 1
        return Embedding.of(predictor)

    def embedding(self, image_id: str) -> tuple[StoredImage, Embedding]:
        """The image and its embedding, from memory or disk; 409 while it is being made."""
        self._require_model()
        image = self.store.get(image_id)
        found = self.memory.get(image_id)
        if found is not None:
            return image, found
        job = self._jobs.get(image_id)
        if job is not None and job.state in (QUEUED, ENCODING):
            raise _not_ready(image_id, job)
        if job is not None and job.state == FAILED:
            raise ApiError(422, f"image {image_id} could not be embedded: {job.error}")
        found = self._from_disk(image)
        if found is None:
            raise _not_ready(image_id, self.start(image))
        self.memory.put(image_id, found)
        return image, found

    # --- prompts -------------------------------------------------------------------------------

    @property
    def takes_text(self) -> bool:
        """Whether the loaded model was trained for text prompts (the page shows its field)."""
        return self.sam is not None and self.sam.prompt_encoder.text_projection is not None

    def predict(self, image_id: str, points: list[tuple[float, float]], labels: list[int],
                box: tuple[float, float, float, float] | None = None,
                multimask: bool = True, text: str | None = None, zoom: bool = False
                ) -> Prediction:
        """Masks for points (x, y in image pixels; label 1 object, 0 background), a box
        (x0, y0, x1, y1) and/or a phrase naming the object; ``zoom``: a box alone, segmented
        again in a window around it (:mod:`attnvision.sam.zoom`). Prompts that do not fit the
        image, and a phrase for a model without text, raise ``UserError`` (a 400)."""
        if not points and box is None and text is None:
            raise ApiError(400, "give a prompt: at least one point, a box or a text phrase")
        if zoom and (box is None or points or text is not None or multimask):
            raise ApiError(400, "zoom re-segments a box: send a box alone, with multimask "
                                "false")
        if len(points) != len(labels):
            raise ApiError(400, f"{len(points)} points but {len(labels)} labels: give one "
                                "label per point (1 = object, 0 = background)")
        sam = self._require_model()
        if text is not None:  # before the embedding: no 409 for a prompt that cannot work
            sam.prompt_encoder.require_text()
        image, emb = self.embedding(image_id)
        predictor = SamPredictor(sam)
        predictor.set_image_embedding(emb.features, emb.original_size, emb.input_size,
                                      context=emb.context)
        if zoom:  # the window is cut from the stored pixels
            try:
                predictor.keep_image(self.store.pixels(image))
            except UserError:  # deleted since: the same answer as any unknown image
                raise ApiError(404, f"image {image_id} not found") from None
        coords = np.asarray(points, dtype=float).reshape(-1, 2) if points else None
        point_labels = np.asarray(labels, dtype=np.int64) if points else None
        box_np = None if box is None else np.asarray(box, dtype=float)

        def decode() -> Prediction:  # a new phrase's sentence encoding runs here too
            start = time.perf_counter()
            if zoom:  # the window's encoding is part of the answer's time
                mask, score, _ = predict_zoomed(predictor, box_np)
                return Prediction(mask[None], np.array([score]), time.perf_counter() - start)
            masks, scores, _ = predictor.predict(point_coords=coords, point_labels=point_labels,
                                                 box=box_np, multimask_output=multimask,
                                                 text=text)
            return Prediction(masks, scores, time.perf_counter() - start)

        return self._decoder.submit(decode).result()

    # --- segment everything --------------------------------------------------------------------

    def _everything_path(self, image_id: str):
        return self.store.path(image_id, ".everything.json")

    def cached_everything(self, image_id: str) -> list[dict[str, Any]] | None:
        """Segment-everything records computed earlier for this image and model, or None."""
        try:
            saved = json.loads(self._everything_path(image_id).read_text())
        except (OSError, ValueError):
            return None
        if (saved.get("model") != self.fingerprint
                or saved.get("points_per_side") != self.points_per_side):
            return None
        return saved.get("records")

    def everything(self, image_id: str) -> list[dict[str, Any]]:
        """COCO-RLE records of every mask in the image, largest first."""
        sam = self._require_model()
        image, emb = self.embedding(image_id)
        with self._everything_lock:  # one at a time; a second asker gets the first's result
            records = self.cached_everything(image_id)
            if records is not None:
                return records
            iou, stability = everything_thresholds(self.loaded.source == SHIPPED)
            generator = SamAutomaticMaskGenerator(sam, points_per_side=self.points_per_side,
                                                  pred_iou_thresh=iou,
                                                  stability_score_thresh=stability,
                                                  output_mode="coco_rle")
            generator.predictor = _EmbeddedPredictor(sam, emb)
            records = generator.generate(self.store.pixels(image))
            records.sort(key=lambda r: -r["area"])
            write_json(self._everything_path(image_id),
                       {"model": self.fingerprint, "points_per_side": self.points_per_side,
                        "records": records})
        return records
