"""ASGI middleware of the service: what is answered before BentoML reads a request.

Outermost first (service.py): the OpenAPI document, the request envelope (Content-Type and body
size), and Retry-After on shed requests.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class RetryAfterOn503:
    """ASGI middleware: a 503 from load shedding tells clients when to retry.

    BentoML's batcher sheds requests whose predicted wait exceeds `max_latency_ms` with a bare
    503; well-behaved clients (and load balancers) back off properly only with Retry-After.
    """

    def __init__(self, app: Any, retry_after_s: int = 1) -> None:
        self.app = app
        self.header = (b"retry-after", str(retry_after_s).encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"retry-after"]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


JSON_MEDIA_TYPE = "application/json"
# What `_read_bounded` returns when the client went away before the body was complete.
_DISCONNECTED = object()


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


async def _send_json(send: Any, status: int, body: dict, close: bool = False) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:  # the unread rest of the body is not worth receiving: let the client see the answer now
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class RequestLimits:
    """ASGI middleware: bound and type-check a request body BEFORE anything parses it.

    BentoML reads the whole body into memory and parses it with whatever serde the Content-Type
    names (falling back to JSON for any unknown type, and failing with a 500 on multipart without
    a boundary). For the API routes this answers instead:
    - 415 unless the Content-Type is `application/json` (a `text/plain` post is what a cross-site
      form or `fetch` can send without a CORS preflight; multipart is not part of the contract);
    - 413 when Content-Length exceeds `max_bytes`, without reading the body, and with
      `Connection: close` so the client gets the answer at once instead of uploading the rest;
    - 413 when a chunked body grows past `max_bytes` while it is read (bytes are counted as they
      arrive, so at most `max_bytes` plus one chunk is ever held).
    A body within the limit is handed on unchanged.
    """

    def __init__(self, app: Any, max_bytes: int, paths: tuple[str, ...] = ("/predict",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = frozenset(paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != JSON_MEDIA_TYPE:
            log.info("415 %s: Content-Type %r is not %s", scope["path"], content_type[:80], JSON_MEDIA_TYPE)
            await _send_json(send, 415, {"error": f"Content-Type must be {JSON_MEDIA_TYPE}"})
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                log.info("400 %s: malformed Content-Length", scope["path"])
                await _send_json(send, 400, {"error": "Content-Length must be a non-negative integer"}, close=True)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(send, scope, f"Content-Length {int(declared)}")
                return
        body = await self._read_bounded(receive)
        if body is None:
            await self._too_large(send, scope, "chunked body")
            return
        if body is _DISCONNECTED:
            return
        await self.app(scope, _replay(body), send)

    async def _read_bounded(self, receive: Any) -> bytes | object | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _DISCONNECTED
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Any, scope: dict, what: str) -> None:
        log.info("413 %s: %s over the %d-byte limit", scope["path"], what, self.max_bytes)
        await _send_json(
            send, 413,
            {"error": f"request body larger than {self.max_bytes} bytes; send at most the allowed number of applications per request"},
            close=True,
        )



def _replay(body: bytes) -> Any:
    """A `receive` that hands the already-read body on once, then reports a disconnect."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


class OpenAPIDocument:
    """ASGI middleware: serve the contract's OpenAPI document at `/docs.json`.

    BentoML 1.4 generates the document from the input model, but collapses any `anyOf` to its
    first branch (so the single-object form and the unseen-category policy vanish), declares the
    400's `detail` a string although it is a list, omits `required` on the request body and the
    413/415 answers. `credit_pd.serving.openapi.openapi_document` builds the `/predict` part from
    the same rules that validate requests (the schemathesis test holds the two together) and
    keeps BentoML's infrastructure endpoints; `build` is called once, on first request.
    """

    def __init__(self, app: Any, build: Callable[[], dict], path: str = "/docs.json") -> None:
        self.app = app
        self.build = build
        self.path = path
        self._payload: bytes | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if self._payload is None:
            self._payload = json.dumps(self.build()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._payload if scope["method"] == "GET" else b"", "more_body": False})
