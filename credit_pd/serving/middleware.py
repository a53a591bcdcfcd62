"""ASGI middleware of the service: what is answered before BentoML reads a request.

Outermost first (service.py): the OpenAPI document, the model tag on health answers, the in-flight
limit, the request envelope (Content-Type, body size, duplicate keys), and Retry-After on shed requests.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from credit_pd.serving.patches import REQUEST_CONNECTION, client_gone

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


# The body of a 503 for a request shed because its worker is at `max_in_flight` (here and in the
# HTTP protocol, credit_pd.serving.patches.bounded_http_protocol).
OVERLOADED_BODY: Final = (
    b'{"error":"overloaded: too many requests in flight; retry after the Retry-After header\'s seconds"}'
)


class ShedTally:
    """Requests one layer of a worker shed: logged as one WARNING line per interval with their
    number (not one line per request: under a flood that is thousands a second)."""

    def __init__(self, interval_s: float, where: str) -> None:
        self.interval_s = interval_s
        self.where = where
        self.unlogged = 0
        self.logged_at = float("-inf")

    def add(self, in_flight: int, cap: int) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at >= self.interval_s:
            log.warning(
                "shed %d request(s) with 503 + Retry-After %s since the last such line: "
                "%d in flight in this worker (max_in_flight %d)",
                self.unlogged,
                self.where,
                in_flight,
                cap,
            )
            self.unlogged, self.logged_at = 0, now


class InFlightLimit:
    """ASGI middleware: at most `max_in_flight` API requests in one worker; the rest get a 503 +
    Retry-After at once.

    BentoML's batcher sheds a request whose predicted wait exceeds `max_latency_ms`, but only once
    the request reached it: requests queued in front of it (parsed and waiting for the event loop,
    which scores small batches inline) waited without bound, so at concurrency 2048 nothing was
    shed and p50 was 593 ms. Counting requests as they enter (before the body is read)
    bounds that queue: with two batches' worth in flight, the batcher always has its next batch
    and everything beyond is refused in microseconds, so clients and the load balancer retry
    elsewhere instead of timing out. Health, metrics and docs routes are never shed.

    Only requests whose client is still connected count against the cap (when the HTTP protocol
    says which connection a request came on: patches.REQUEST_CONNECTION): after a flood of clients
    that timed out and left, their requests may still be running, and must not get the next
    client shed. They are counted only when the cap is reached, so the common case costs nothing.

    In a BentoML worker the same cap is first enforced by the HTTP protocol
    (`patches.bounded_http_protocol`), which answers the 503 before a task or any middleware runs:
    shedding here still cost ~0.3 ms of the event loop per shed request, and under a flood that
    starved the admitted ones. What reaches this middleware over the cap is then a request
    pipelined behind a running one on its connection, or any request where the protocol patch is
    not in effect. Requests shed here are counted in BentoML's request metrics (code 503); both
    layers log one line per `log_interval_s` with their number.
    """

    def __init__(
        self,
        app: Any,
        max_in_flight: int,
        retry_after_s: int = 1,
        paths: tuple[str, ...] = ("/predict",),
        log_interval_s: float = 10.0,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.paths = frozenset(paths)
        self.running: dict[int, Any] = {}  # id(scope) -> the request's connection (None: unknown)
        self.retry_after = str(retry_after_s).encode()
        self.tally = ShedTally(log_interval_s, "in the middleware")

    @property
    def in_flight(self) -> int:
        """API requests running in this worker (including any whose client has left)."""
        return len(self.running)

    def present_in_flight(self) -> int:
        """API requests running whose client is still connected (or not known to have left)."""
        return sum(1 for connection in self.running.values() if not client_gone(connection))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        present = self.present_in_flight() if len(self.running) >= self.max_in_flight else 0
        if present >= self.max_in_flight:
            self.tally.add(present, self.max_in_flight)
            await self._shed(send)
            return
        key = id(scope)
        self.running[key] = REQUEST_CONNECTION.get(None)
        try:
            await self.app(scope, receive, send)
        finally:
            del self.running[key]

    async def _shed(self, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(OVERLOADED_BODY)).encode()),
                    (b"retry-after", self.retry_after),
                ],
            }
        )
        await send({"type": "http.response.body", "body": OVERLOADED_BODY, "more_body": False})


class ServedModelHeader:
    """ASGI middleware: the health answers name the model tag this worker serves
    (`credit-pd-model-tag`), so an operator (or a test) sees that every worker serves the same one."""

    HEADER = b"credit-pd-model-tag"

    def __init__(self, app: Any, model_tag: str, paths: tuple[str, ...] = ("/readyz", "/livez", "/healthz")) -> None:
        self.app = app
        self.header = (self.HEADER, model_tag.encode())
        self.paths = frozenset(paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def send_with_tag(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_tag)


JSON_MEDIA_TYPE = "application/json"


class _Disconnected(Enum):
    """A one-member enum rather than `object()`: a type checker can then tell it from a body."""

    DISCONNECTED = "disconnected"


# What `_read_bounded` returns when the client went away before the body was complete.
_DISCONNECTED: Final = _Disconnected.DISCONNECTED


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
    A body within the limit is checked for repeated keys (400 naming the first) and handed on
    unchanged, with its parsed document in the scope (`PARSED_BODY_KEY`) for `contract.StrictInput`.
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
            # Nobody reads this answer (uvicorn drops it), but it must be sent: BentoML's request-timeout
            # middleware waits for a response to start, so returning without one held the request (and a
            # graceful shutdown) for the whole `request_timeout_s` (measured: SIGTERM-to-exit ~31 s with
            # one slow-body client). 499, nginx's "client closed request", is what the metrics then count.
            await _send_json(send, 499, {"error": "the client went away before its request body was complete"})
            return
        document, duplicate = parse_unique_keys(body)
        if duplicate is not None:
            await _send_duplicate_key(send, scope, duplicate)
            return
        if document is not NOT_PARSED:
            scope[PARSED_BODY_KEY] = document  # validated as it is (contract.StrictInput): parsed once
        await self.app(scope, _replay(body), send)

    async def _read_bounded(self, receive: Any) -> bytes | _Disconnected | None:
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
            send,
            413,
            {
                "error": f"request body larger than {self.max_bytes} bytes; send at most the allowed number of applications per request"
            },
            close=True,
        )


class _Pairs(list):
    """An object's (key, value) pairs in document order, for locating a duplicate."""


@dataclass(frozen=True)
class DuplicateKey:
    """A repeated key: its `loc` (keys and list indices, as validation errors name fields) and where."""

    loc: list[str | int]
    where: str  # `$.applications[0].age`, or the parser's line and column when it cannot be located


# Where RequestLimits leaves the parsed body of an API request for `contract.StrictInput`, in the ASGI scope.
PARSED_BODY_KEY = "credit_pd.parsed_body"
# `parse_unique_keys`'s document for a body jiter cannot read (not JSON, not UTF-8, too deep).
NOT_PARSED: Final = object()


def duplicate_key_location(body: bytes) -> DuplicateKey | None:
    """The first repeated key of the JSON `body`, or None when every object's keys are unique
    (`parse_unique_keys` without the document)."""
    return parse_unique_keys(body)[1]


def parse_unique_keys(body: bytes) -> tuple[Any, DuplicateKey | None]:
    """The JSON `body` as Python values, and its first repeated key (None when every object's keys are unique).

    The document is NOT_PARSED when there is a duplicate or the body is not JSON. Checking costs
    a parse, so the parse is kept: `contract.StrictInput` validates this document instead of
    parsing the body a second time (a 100-application request: ~1 ms less per request).

    JSON leaves duplicate keys to the parser, and BentoML's (pydantic's) keeps the last: `"age":
    20, "age": 90` scored age 90, and an invalid `applications` followed by a valid one got a 200.
    A gateway, a WAF or a log reader that keeps the first sees another request than
    the one scored, so a repeated key anywhere is refused. The check is jiter with
    `catch_duplicate_keys`: the parser pydantic-core itself embeds, so it reads exactly the bodies
    BentoML's parser reads (no second grammar to disagree with) and compares keys after JSON
    unescaping (`"age"` and `"\\u0061ge"` are one key). Its cost on a 100-application request:
    `python -m benchmarks.duplicate_keys_benchmark` (one run: 0.39 x BentoML's parse and
    validation, 2.3 x a plain jiter parse). The locating pass runs only for a refused body. A body
    that is not JSON is left to BentoML, which answers it with its own 400 (json_invalid).
    """
    import jiter

    try:
        return jiter.from_json(body, catch_duplicate_keys=True, cache_mode="keys"), None
    except ValueError as exc:
        if not str(exc).startswith(DUPLICATE_KEY_ERROR):
            return NOT_PARSED, None  # not JSON (or not UTF-8): BentoML's parser answers it
        loc = _first_duplicate(json.loads(body, object_pairs_hook=_Pairs), []) if _python_reads(body) else None
        return NOT_PARSED, (
            DuplicateKey(loc, json_path(loc))
            if loc
            else DuplicateKey([], str(exc).removeprefix(DUPLICATE_KEY_ERROR).strip())
        )


DUPLICATE_KEY_ERROR = "Detected duplicate key"


def _python_reads(body: bytes) -> bool:
    """Whether the standard library's parser (used to locate the key) reads `body` too."""
    try:
        json.loads(body)
        return True
    except (ValueError, RecursionError):
        return False


def _first_duplicate(node: Any, path: list[str | int]) -> list[str | int] | None:
    """The path of the first repeated key in document order under `node`."""
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            if key in seen:
                return [*path, key]
            seen.add(key)
            found = _first_duplicate(value, [*path, key])
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found = _first_duplicate(value, [*path, index])
            if found is not None:
                return found
    return None


def json_path(loc: list[str | int]) -> str:
    """`["applications", 0, "age"]` as `$.applications[0].age` (keys that are not identifiers quoted)."""
    parts = ["$"]
    for part in loc:
        parts.append(
            f"[{part}]" if isinstance(part, int) else f".{part}" if part.isidentifier() else f"[{json.dumps(part)}]"
        )
    return "".join(parts)


async def _send_duplicate_key(send: Any, scope: dict, duplicate: DuplicateKey) -> None:
    """A 400 in the shape of the service's validation errors (`detail[].loc`), naming the JSON path."""
    log.info("400 %s: duplicate key at %s", scope["path"], duplicate.where)
    key = f"{duplicate.loc[-1]!r} at {duplicate.where}" if duplicate.loc else duplicate.where
    message = f"duplicate key {key}: a key may appear only once per object"
    await _send_json(
        send,
        400,
        {
            "error": "duplicate key in the request body",
            "detail": [{"type": "duplicate_key", "loc": duplicate.loc, "msg": message}],
        },
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
        await send(
            {
                "type": "http.response.body",
                "body": self._payload if scope["method"] == "GET" else b"",
                "more_body": False,
            }
        )
