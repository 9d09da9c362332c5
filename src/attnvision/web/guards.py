"""Checks on every HTTP request before it reaches a route: the Host header and the body size.

A pure ASGI middleware, so a body over the limit is refused while it streams in (by its
Content-Length at once, or when the bytes received pass the limit), before a multipart
parser has spooled it to disk. The error raised from inside the body stream is an
``HTTPException``: FastAPI passes those through its body parsing, so the client gets the 413
and its message, not a generic 400.

The Host check defends the loopback-only app against DNS rebinding: a page on another site
whose name is made to resolve to 127.0.0.1 sends its own name as Host, and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit:,} bytes: "
                              "send a smaller image (or raise --max-upload-mb)")


def host_of(header: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:8000' -> '::1', 'Example.org' -> 'example.org'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: refuse unknown Host headers (400) and bodies over their limit (413).

    ``limit_for(method, path)`` gives the byte limit of a request's body.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], allowed_hosts: tuple[str, ...] | None,
                 limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.allowed_hosts is not None:
            host = host_of(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                await _send_json(send, 400, f"host {host!r} is not served here: open the app "
                                            "at http://127.0.0.1:PORT (or start it with "
                                            "--host and --token)")
                return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, BodyTooLarge(limit).detail)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if not started:
                await _send_json(send, 413, e.detail)
