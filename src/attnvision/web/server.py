"""The FastAPI app: the page, the HTTP API under /api, and the answers to bad requests.

Every error is JSON ``{"detail": "<one line: what is wrong and how to fix it>"}`` with a 4xx
status (5xx only for a model that is not loaded (503) or a bug (500, logged with its
traceback); the server goes on either way). Handlers that touch the model are plain ``def``
functions: FastAPI runs them on its thread pool, so a slow one never blocks the event loop.

The page (``static/``) is plain HTML, CSS and JavaScript, served from the package under a
strict Content-Security-Policy (same origin only): no build step, no CDN, no network.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnvision import __version__
from attnvision.errors import UserError
from attnvision.sam.embedding_cache import EmbeddingCache
from attnvision.web import render
from attnvision.web.config import ServerConfig
from attnvision.web.embeddings import EmbeddingLRU
from attnvision.web.engine import Segmenter
from attnvision.web.errors import ApiError
from attnvision.web.guards import RequestGuard
from attnvision.web.model import NO_MODEL, LoadedModel
from attnvision.web.schemas import (
    CocoRequest,
    EverythingResponse,
    ImageInfo,
    PredictRequest,
    PredictResponse,
    Problem,
    Status,
)
from attnvision.web.uploads import ImageStore, StoredImage

STATIC = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
BEARER = HTTPBearer(auto_error=False, description="the token given to attnvision serve --token")
MULTIPART_OVERHEAD = 64 << 10  # form boundaries and headers around the file
log = logging.getLogger("attnvision.web")

DESCRIPTION = """Click-to-segment with Segment Anything.

1. `POST /api/images` an image file (multipart field `file`): you get its `id`, and its
   embedding starts in the background.
2. Poll `GET /api/images/{id}` until `state` is `ready` (`progress` goes 0 to 1).
3. `POST /api/images/{id}/predict` points (`[x, y]`, label 1 object / 0 background), a `box`
   and/or a `text` phrase ("the red star"; only for models that take text: `GET /api/status`
   says `text`): three masks with scores, as base64 PNG or COCO RLE.
4. `POST /api/images/{id}/everything`: every mask in the image; `GET|POST .../coco`: COCO JSON.

Errors are `{"detail": "..."}` with a 4xx status (503 while no model is loaded). When the
server was started with `--token`, every `/api` call needs `Authorization: Bearer <token>`.
"""


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60] or "image"


def _validation_message(errors: list[dict[str, Any]]) -> tuple[int, str]:
    """A RequestValidationError's errors as a status and one line."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "not JSON")
        return 400, (f"malformed JSON body ({reason}, at character {first['loc'][-1]}): send "
                     'a JSON object such as {"points": [[120, 80]], "labels": [1]}')
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, f"invalid request: {where}: {first.get('msg', 'invalid')}{more}"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, exc.status, headers=headers)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (see /docs)"
        return JSONResponse({"detail": detail}, exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status, message = _validation_message(errors)
        return JSONResponse({"detail": message,
                             "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg"),
                                         "type": e.get("type")} for e in errors]}, status)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); the "
                                       "server log has the details"}, 500)


def _install_docs(app: FastAPI) -> None:
    """The interactive API page at /docs, from the Swagger UI files of the swagger-ui-bundle
    package (no network); without that package, a page pointing at /openapi.json."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)),
                  name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return HTMLResponse("<!doctype html><title>attnvision API</title><p>The API "
                                "schema is at <a href='/openapi.json'>/openapi.json</a>. For "
                                "the interactive page, <code>pip install "
                                "swagger-ui-bundle</code> (part of "
                                "<code>attnvision[web]</code>).</p>")
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title="attnvision API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(config: ServerConfig, model: LoadedModel) -> FastAPI:
    """The app for one model and one data folder. ``app.state.engine`` is its ``Segmenter``."""
    store = ImageStore(config.data_dir, config.max_pixels)
    engine = Segmenter(model, store, EmbeddingLRU(config.cache_bytes),
                       EmbeddingCache(config.embedding_dir), config.points_per_side)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    # /docs is served below from local files: FastAPI's default loads Swagger UI from a CDN.
    app = FastAPI(title="attnvision", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.config = config
    _install_error_handlers(app)

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                             Depends(BEARER)]) -> None:
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), (config.token or "").encode()):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                "with the token given to attnvision serve --token")

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem} for code in (400, 401, 404, 409, 413, 415, 422, 503)}
    api = APIRouter(prefix="/api", responses=errors,
                    dependencies=[Depends(require_token)] if config.token else [])

    def info(image: StoredImage) -> dict[str, Any]:
        return {"id": image.id, "name": image.name, "width": image.width,
                "height": image.height, **engine.state(image.id)}

    @api.get("/status", response_model=Status, summary="The model and the limits")
    def status() -> dict[str, Any]:
        return {"model": model.describe() if model.sam is not None else None,
                "message": (f"SAM {model.describe()} is loaded" if model.sam is not None
                            else NO_MODEL),
                "text": engine.takes_text, "token_required": config.token is not None,
                "max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                "points_per_side": config.points_per_side, "images": store.count()}

    @api.post("/images", status_code=201, response_model=ImageInfo,
              summary="Upload an image; its embedding starts in the background")
    async def upload(file: Annotated[UploadFile, File(description="PNG, JPEG, GIF, BMP, TIFF "
                                                                   "or WebP")]
                     ) -> dict[str, Any]:
        data = await file.read(config.max_upload_bytes + 1)
        if len(data) > config.max_upload_bytes:
            raise ApiError(413, f"the file is over the limit of {config.max_upload_bytes:,} "
                                "bytes: send a smaller image")
        image = await run_in_threadpool(store.add, data, file.filename)
        if engine.sam is not None:  # queued at once: the encoder thread asks the disk cache
            engine.start(image)
        return await run_in_threadpool(info, image)

    @api.get("/images/{image_id}", response_model=ImageInfo,
             summary="An image and the state of its embedding (poll until 'ready')")
    def image_state(image_id: str) -> dict[str, Any]:
        return info(store.get(image_id))

    @api.delete("/images/{image_id}", status_code=204,
                summary="Delete an image, its masks and its embedding from the server")
    def delete_image(image_id: str) -> Response:
        engine.delete(image_id)
        return Response(status_code=204)

    @api.get("/images/{image_id}/image", response_class=FileResponse,
             summary="The image as stored (RGB PNG, EXIF orientation applied)")
    def image_file(image_id: str) -> FileResponse:
        return FileResponse(store.get(image_id).path, media_type="image/png")

    @api.post("/images/{image_id}/predict", response_model=PredictResponse,
              summary="Masks from points, a box and/or a text phrase")
    def predict(image_id: str, body: PredictRequest) -> dict[str, Any]:
        p = engine.predict(image_id, [tuple(pt) for pt in body.points], list(body.labels),
                           body.box, body.multimask, body.text, zoom=body.zoom)
        masks = []
        for mask, score in zip(p.masks, p.scores, strict=True):
            out: dict[str, Any] = {"score": round(float(score), 6), "area": int(mask.sum()),
                                   "bbox": render.mask_bbox(mask)}
            if body.format in ("png", "both"):
                out["png"] = render.b64(render.mask_png(mask))
            if body.format in ("rle", "both"):
                out["rle"] = render.mask_rle(mask)
            masks.append(out)
        height, width = p.masks.shape[-2:]
        return {"width": int(width), "height": int(height), "masks": masks,
                "best": int(np.argmax(p.scores)), "decoder_ms": round(p.seconds * 1000, 2)}

    @api.post("/images/{image_id}/everything", response_model=EverythingResponse,
              summary="Every mask in the image (a grid of point prompts), coloured")
    def everything(image_id: str) -> dict[str, Any]:
        records = engine.everything(image_id)
        image = store.get(image_id)
        overlay = render.overlay_png(render.decode_rles(records), (image.height, image.width))
        return {"count": len(records), "overlay_png": render.b64(overlay),
                "masks": [{k: a[k] for k in ("segmentation", "area", "bbox", "score",
                                             "stability_score")}
                          for a in map(render.automatic_annotation, records)]}

    def coco(image_id: str, request: CocoRequest) -> JSONResponse:
        image = store.get(image_id)
        annotations = []
        if any(obj.zoom and obj.candidate != 0 for obj in request.objects):
            raise ApiError(400, "a zoomed-in box has one mask: its candidate must be 0")
        for obj in request.objects:
            p = engine.predict(image_id, [tuple(pt) for pt in obj.points], list(obj.labels),
                               obj.box, multimask=not obj.zoom, text=obj.text, zoom=obj.zoom)
            prompt = obj.model_dump(exclude={"candidate"})  # with its phrase (or text: null)
            annotations.append(render.prompt_annotation(p.masks[obj.candidate],
                                                        float(p.scores[obj.candidate]), prompt))
        if request.everything and model.sam is not None:
            annotations += map(render.automatic_annotation,
                               engine.cached_everything(image_id) or [])
        document = render.coco_document(image.name, image.width, image.height, annotations)
        name = f"{_safe_stem(image.name)}_coco.json"
        return JSONResponse(document,
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @api.get("/images/{image_id}/coco", summary="COCO JSON of the segment-everything masks")
    def coco_everything(image_id: str) -> JSONResponse:
        return coco(image_id, CocoRequest())

    @api.post("/images/{image_id}/coco",
              summary="COCO JSON of prompted objects (one mask each) and everything's masks")
    def coco_objects(image_id: str, body: CocoRequest) -> JSONResponse:
        return coco(image_id, body)

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_docs(app)

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") == "/api/images":
            return config.max_upload_bytes + MULTIPART_OVERHEAD
        return config.max_json_bytes

    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(RequestGuard, allowed_hosts=config.allowed_hosts, limit_for=limit_for)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one), or a ``UserError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror}): choose another "
                        "--port or --host") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run(app: FastAPI, sock: socket.socket, log_level: str = "info") -> None:
    """Serve ``app`` on ``sock`` with uvicorn until Ctrl-C (or SIGTERM).

    uvicorn shuts down gracefully on Ctrl-C, then raises it again; here it is the normal end.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
