"""Every patch of library internals (BentoML, uvicorn), and the one start-up line each logs.

Patching internals is the last resort (../ARCHITECTURE.md): each patch here checks that the code
it adjusts is still the code it was written against and otherwise changes nothing, and
`log_patches` writes one line per patch at worker start-up saying whether it is in effect, off by
a setting, or not in effect because the library moved. tests/serving/test_patches.py fails when a
library moves under a patch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import socket
import termios
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)


class PatchState(str, Enum):
    """What a patch did at start-up, as the start-up log says it."""

    IN_EFFECT = "in effect"
    OFF_BY_SETTING = "off by setting"
    NOT_NEEDED = "not needed here"
    LIBRARY_MOVED = "NOT in effect (library internals moved; stock behaviour)"


def state(applied: bool, enabled: bool = True) -> PatchState:
    """The state of a patch from whether it was asked for and whether it took."""
    if not enabled:
        return PatchState.OFF_BY_SETTING
    return PatchState.IN_EFFECT if applied else PatchState.LIBRARY_MOVED


def cap_batcher_hold_time(max_hold_ms: float) -> bool:
    """Stop BentoML's adaptive batcher from holding requests longer than `max_hold_ms` on purpose.

    The batcher (bentoml 1.4 `CorkDispatcher`) holds a lone request for about the mean wait it
    observed over its last 50 batches. Those waits include the holds themselves and, under load,
    queueing time, so once learned the hold sustains itself: a lone request waited up to the old
    10 ms cap after any busy spell, and ~300 ms after an overload without a cap. The default cap
    is 0 (`ServingSettings.max_batch_hold_ms`): no deliberate hold, so a lone request is scored at
    once, while requests arriving during a running batch still queue and form the next batch
    (one batch runs at a time per worker), which is where batches come from under load. Queueing
    and load shedding are unchanged. Calling it again changes the cap. Returns False (and changes
    nothing) if BentoML's internals moved, so an upgrade degrades to stock behaviour.
    """
    try:
        from bentoml._internal.marshal.dispatcher import Optimizer
    except ImportError:
        return False
    refresh = getattr(Optimizer, "trigger_refresh", None)
    if refresh is None:
        return False
    cap_s = max(0.0, max_hold_ms / 1000.0)
    if getattr(refresh, "capped_hold_s", None) is not None:
        refresh.capped_hold_s = cap_s
        return True

    def trigger_refresh_capped(self: Any) -> None:
        refresh(self)
        self.wait = min(self.wait, trigger_refresh_capped.capped_hold_s)  # type: ignore[attr-defined]

    trigger_refresh_capped.capped_hold_s = cap_s  # type: ignore[attr-defined]
    Optimizer.trigger_refresh = trigger_refresh_capped  # type: ignore[method-assign]  # the patch itself
    return True


def prediction_output_spec(item_model: type) -> tuple[type, bool]:
    """The `output_spec` of `POST /predict`: a list of `item_model`, written with orjson.

    BentoML 1.4 turns a returned list into a response by validating it into its root model, dumping
    it to Python, dumping it again in JSON mode and running `json.dumps` over the result (the stock
    `IORootModel.to_http_response`): for a 100-application answer that cost more than scoring it.
    The scorer already returns JSON-ready dicts in `item_model`'s shape (tests validate them against
    it), so this spec writes them with one `orjson.dumps`; the OpenAPI schema stays the list of
    `item_model`. Returns (spec, in effect). Not in effect when BentoML's handler no longer calls
    `output_spec.to_http_response(output, serde)`: then the stock spec is returned, which validates
    the dicts into `item_model` (slower, same answer). tests/serving/test_scorer.py fails when it moves.
    """
    try:
        from _bentoml_impl.server.app import ServiceAppFactory
        from _bentoml_sdk.io_models import IORootModel, ensure_io_descriptor
    except ImportError:
        return list[item_model], False  # type: ignore[valid-type]
    stock = ensure_io_descriptor(list[item_model])  # type: ignore[valid-type]
    if not (issubclass(stock, IORootModel) and _handler_renders_with_output_spec(ServiceAppFactory)):
        return stock, False

    import orjson
    from starlette.responses import Response

    class OrjsonPredictions(stock):  # type: ignore[misc, valid-type]
        @classmethod
        async def to_http_response(cls, obj: Any, serde: Any) -> Response:
            if isinstance(obj, list) and all(type(item) is dict for item in obj):
                return Response(orjson.dumps(obj), media_type="application/json")
            return await super().to_http_response(obj, serde)

    OrjsonPredictions.__name__ = OrjsonPredictions.__qualname__ = stock.__name__
    return OrjsonPredictions, True


def _handler_renders_with_output_spec(app_factory: Any) -> bool:
    """True while BentoML's API handler renders a non-Response result with `output_spec.to_http_response`."""
    import inspect

    try:
        source = inspect.getsource(app_factory.api_endpoint)
        parameters = list(inspect.signature(app_factory.api_endpoint).parameters)
    except (AttributeError, OSError, TypeError):
        return False
    return "method.output_spec.to_http_response(output, serde)" in source and parameters[:3] == [
        "self",
        "name",
        "request",
    ]


BENTOML_WORKER_MODULE = "_bentoml_impl.worker.service"


def balance_worker_accepts(enabled: bool = True) -> bool:
    """Give each BentoML worker its own SO_REUSEPORT listening socket, so the kernel spreads
    connections across workers instead of the first worker to wake taking them all.

    BentoML 1.4 starts every worker on one listening socket inherited from its process manager
    (`uvicorn.Server(config).run(sockets=[socket])` in `_bentoml_impl.worker.service`). Whichever
    worker wakes first accepts every pending connection, and keep-alive clients stay where they
    landed: `ss` during wrk loads found all 32 (and all 4, and both 2) connections on one of the two
    workers, so one core served while the other idled (BentoML issue #5426; the unmerged fix,
    PR #5557, is this same idea). In the worker process only, this wraps `uvicorn.Server.run`: each
    inherited TCP listener gets SO_REUSEPORT, the worker binds its own listener to the same address,
    then shuts the shared one (SHUT_RD takes it out of the kernel's reuse-port group, for every
    holder), and serves its own. The kernel then picks a worker per connection by a hash of the
    client's address and port. A listener that cannot be replaced is served as before, with a
    warning. Returns False, changing nothing, outside a BentoML worker or if BentoML's worker
    module moved; tests/serving/test_runtime.py fails when connections stop spreading.
    """
    import sys

    main = sys.modules.get("__main__")
    if not enabled or getattr(getattr(main, "__spec__", None), "name", None) != BENTOML_WORKER_MODULE:
        return False
    try:
        import uvicorn
    except ImportError:
        return False
    run = uvicorn.Server.run
    if getattr(run, "balances_accepts", False):
        return True

    def run_on_own_listeners(self: Any, sockets: list | None = None) -> None:
        if sockets:
            sockets = [own_listener(sock, self.config.backlog) for sock in sockets]
        return run(self, sockets=sockets)

    run_on_own_listeners.balances_accepts = True  # type: ignore[attr-defined]
    uvicorn.Server.run = run_on_own_listeners  # type: ignore[method-assign]
    return True


def own_listener(shared: socket.socket, backlog: int) -> socket.socket:
    """A new SO_REUSEPORT listener on `shared`'s address; `shared` is shut for accepting.

    Not for UNIX sockets (no reuse-port group), nor where the platform or kernel lacks or refuses
    SO_REUSEPORT: then `shared` itself.
    """
    tcp = shared.family in (socket.AF_INET, socket.AF_INET6) and shared.type == socket.SOCK_STREAM
    if not tcp or not hasattr(socket, "SO_REUSEPORT"):
        return shared
    own = socket.socket(shared.family, socket.SOCK_STREAM)
    try:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own.bind(shared.getsockname())
        own.listen(backlog)
    except OSError as exc:
        own.close()
        log.warning(
            "workers share one listening socket (own SO_REUSEPORT listener refused: %s); connections may not spread",
            exc,
        )
        return shared
    try:
        shared.shutdown(socket.SHUT_RD)  # already shut by an earlier worker: ENOTCONN, nothing to do
    except OSError:
        pass
    return own


# ---------------------------------------------------------------- connection limits ----------------


@dataclass(frozen=True)
class ConnectionLimits:
    """What one HTTP connection may take (ServingSettings fields of the same names say why)."""

    keepalive_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_header_field_bytes: int


# HttpToolsProtocol members the bounded protocol relies on; a uvicorn without them is "moved".
UVICORN_PROTOCOL_MEMBERS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_message_complete",
    "send_400_response",
    "timeout_keep_alive_handler",
    "_unset_keepalive_if_required",
    "shutdown",
)


def unread_bytes(transport: Any) -> int:
    """Bytes the kernel holds for this connection that the event loop has not read yet (FIONREAD);
    0 when the transport has no socket."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"), "little")
    except OSError:
        return 0


def bounded_http_protocol(limits: ConnectionLimits) -> type | None:
    """uvicorn's httptools protocol with a bounded request head, head and body timeouts, and an
    idle timeout from the first connected moment; None when uvicorn's protocol moved.

    uvicorn (0.54, httptools, as BentoML runs it) bounds none of these: httptools hands a header to
    uvicorn only when it is complete, so a 64 MiB header was buffered whole (issue 19: 2.7 s and
    128 MB of one worker, 555 MB for four), a slowloris head or a never-ending chunked body held a
    connection forever, and a connection that never sent a byte had no timer at all. Here:
    - bytes of a request head are counted as they arrive; past `max_header_bytes` (or one header
      line past `max_header_field_bytes`) the answer is 431 and the connection is closed, so at
      most the limit plus one socket read is ever buffered;
    - a head not complete `header_timeout_s` after its first byte, or a body not complete
      `body_timeout_s` after its head, gets 408 and a closed connection (the application, still
      waiting for the body, sees a disconnect);
    - a new connection is idle until its first byte: closed after `keepalive_timeout_s`, like a
      kept-alive one (uvicorn arms that timer only after a response);
    - at graceful shutdown, a kept-alive connection whose next request has begun to arrive (bytes
      parsed, or still unread in the kernel because the loop was busy scoring) is not closed under
      it: that request is served with `Connection: close`. uvicorn closed every connection without a
      running request, so a request sent just before SIGTERM was cut with no answer.
    Answers are JSON `{"error": ...}` with `Connection: close`, like the service's other refusals.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:
        return None
    if not all(hasattr(HttpToolsProtocol, member) for member in UVICORN_PROTOCOL_MEMBERS):
        return None

    class _Refused(Exception):
        """Raised in a parser callback to stop parsing a refused request (the answer is sent)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        bounds = limits

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._in_head, self._head_bytes, self._head_exact = True, 0, 0
            self._refused = False
            self._draining = False
            self._timer: Any = None
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                if self._timer is None:
                    self._timer = self.loop.call_later(
                        self.bounds.header_timeout_s, self._timed_out, "head", self.bounds.header_timeout_s
                    )
                self._head_bytes += len(data)  # an upper bound: this read may also hold the start of the body
            super().data_received(data)
            if self._in_head and not self._refused and self._head_bytes > self.bounds.max_header_bytes:
                self._refuse(431, f"request head over {self.bounds.max_header_bytes} bytes")

        def send_400_response(self, msg: str) -> None:
            if not self._refused:  # else a parser callback refused the request and answered already
                super().send_400_response(msg)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_exact = 0

        def on_url(self, url: bytes) -> None:
            self._head_exact += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            size = len(name) + len(value)
            self._head_exact += size + 4  # ": " and CRLF
            if size > self.bounds.max_header_field_bytes:
                self._refuse(
                    431, f"header {name[:64].decode('latin-1')!r} over {self.bounds.max_header_field_bytes} bytes"
                )
                raise _Refused
            if self._head_exact > self.bounds.max_header_bytes:
                self._refuse(431, f"request head over {self.bounds.max_header_bytes} bytes")
                raise _Refused
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._cancel_timer()
            self._in_head = False
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False  # the last request of a shutting-down server: close after it
            self._timer = self.loop.call_later(
                self.bounds.body_timeout_s, self._timed_out, "body", self.bounds.body_timeout_s
            )

        def on_message_complete(self) -> None:
            self._cancel_timer()
            self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
            super().on_message_complete()

        def shutdown(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self._refused and (self._head_bytes or unread_bytes(self.transport)):
                self._draining = True  # a request is arriving: serve it (timers still bound it), then close
                return
            super().shutdown()

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, part: str, seconds: float) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if part == "body" and cycle is not None and cycle.response_started:
                cycle.keep_alive = False  # answered before its body arrived (e.g. a 413): close after the answer
                if cycle.response_complete:
                    self.transport.close()
                return
            if part == "head" and cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False  # a pipelined head behind a running request: close after its answer
                return
            self._refuse(408, f"request {part} not complete within {seconds:g} s")

        def _refuse(self, status: int, message: str) -> None:
            """Answer `status` with `{"error": message}`, close the connection, stop the request."""
            self._refused = True
            self._cancel_timer()
            self._unset_keepalive_if_required()
            log.info("%d: %s (client %s)", status, message, self.client[0] if self.client else "?")
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                if cycle.response_started:  # never write into an answer already on its way
                    self.transport.close()
                    return
                cycle.disconnected = True  # the application waiting for the body sees a disconnect
                cycle.message_event.set()
            body = json.dumps({"error": message}).encode()
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: ",
                        str(len(body)).encode(),
                        b"\r\nconnection: close\r\n\r\n",
                        body,
                    ]
                )
            )
            self.transport.close()

    BoundedHttpToolsProtocol.__qualname__ = BoundedHttpToolsProtocol.__name__
    return BoundedHttpToolsProtocol


def bound_connections(limits: ConnectionLimits) -> bool:
    """In a BentoML worker, serve uvicorn with `limits`: the keep-alive timeout and the bounded
    protocol (`bounded_http_protocol`). BentoML builds uvicorn's `Config` inside its worker's
    `main()` with the keep-alive timeout of its CLI flag (5 s by default) and no way for a service
    to set it, nor the protocol; so this wraps `uvicorn.Server.run` (as `balance_worker_accepts`
    does) and sets `config.timeout_keep_alive` and `config.http` just before the server loads its
    config. Returns False outside a BentoML worker (changing nothing) and when uvicorn's httptools
    protocol moved (then only the keep-alive timeout and h11's own head limit,
    `h11_max_incomplete_event_size`, are set). tests/serving/test_patches.py fails when uvicorn moves.
    """
    import sys

    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) != BENTOML_WORKER_MODULE:
        return False
    try:
        import uvicorn
    except ImportError:
        return False
    protocol = bounded_http_protocol(limits)
    run = uvicorn.Server.run

    def run_with_bounded_connections(self: Any, sockets: list | None = None) -> None:
        configure_uvicorn(self.config, limits, protocol)
        return run(self, sockets=sockets)

    uvicorn.Server.run = run_with_bounded_connections  # type: ignore[method-assign]
    return protocol is not None


def configure_uvicorn(config: Any, limits: ConnectionLimits, protocol: type | None) -> bool:
    """Set the keep-alive timeout and, where uvicorn would run httptools, the bounded protocol on
    an unloaded uvicorn `Config`; True when the protocol was set."""
    config.timeout_keep_alive = limits.keepalive_timeout_s
    config.h11_max_incomplete_event_size = limits.max_header_bytes
    if protocol is None or config.http not in ("auto", "httptools"):
        return False
    try:
        import httptools  # noqa: F401  (uvicorn's "auto" is httptools only when it is installed)
    except ImportError:
        return False
    config.http = protocol
    return True


# ---------------------------------------------------------------- 4xx logging (CONTRACT) ----------

# BentoML 1.4 (`_bentoml_impl.server.app.ServiceAppFactory.api_endpoint_wrapper`) answers a
# pydantic ValidationError with a 400 but first calls `bentoml._internal.server.http_app.log_exception`,
# which logs "Exception on %s [%s]" at ERROR with the traceback; the traceback's message holds
# every rejected value (4.7 MB of log for one 4 KB request). The filter below is attached to that
# logger (a standard logging hook, no code of BentoML's is replaced) and rewrites exactly those
# records: client errors become one WARNING line with the status, the error count and each field
# location and error type, without values or traceback. Requests shed under overload (503) are
# counted, not logged one by one: BentoML logged a full traceback for each (2,000 of them in 6 s of
# the load benchmark's overload), now one WARNING line says how many were shed, at most every
# `SHED_LOG_INTERVAL_S`. Other server errors (5xx) keep their traceback.
BENTOML_EXCEPTION_LOGGER = "bentoml._internal.server.http_app"
BENTOML_EXCEPTION_MESSAGE = "Exception on %s [%s]"
SHED_LOG_INTERVAL_S = 10.0


class ClientErrorLogFilter(logging.Filter):
    """Turn BentoML's ERROR + traceback for a rejected request into one value-free WARNING,
    and its traceback per shed request into a periodic count."""

    def __init__(self, shed_interval_s: float = SHED_LOG_INTERVAL_S) -> None:
        super().__init__()
        self.shed_interval_s = shed_interval_s
        self._shed_unlogged = 0
        self._shed_logged_at = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != BENTOML_EXCEPTION_MESSAGE or not record.exc_info:
            return True
        if is_overload_shed(record.exc_info[1]):
            return self._count_shed(record)
        summary = client_error_summary(record.exc_info[1])
        if summary is None:
            return True
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "%s %s: %s", (summary[0], path, summary[1])
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    def _count_shed(self, record: logging.LogRecord) -> bool:
        """Let one record through per interval, rewritten to the number shed since the last one."""
        self._shed_unlogged += 1
        now = time.monotonic()
        if now - self._shed_logged_at < self.shed_interval_s:
            return False
        record.msg = (
            "shed %d request(s) with 503 + Retry-After since the last such line: predicted wait over "
            "max_latency_ms (overload). Sheds in the next %g s go into the next such line; every one is "
            'counted in bentoml_service_request_total{http_response_code="503"}'
        )
        record.args = (self._shed_unlogged, self.shed_interval_s)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self._shed_unlogged, self._shed_logged_at = 0, now
        return True


def is_overload_shed(exc: BaseException | None) -> bool:
    """True for BentoML's batcher refusing a request it predicts cannot be served within max_latency_ms."""
    from bentoml.exceptions import ServiceUnavailable

    return isinstance(exc, ServiceUnavailable)


def client_error_summary(exc: BaseException | None) -> tuple[int, str] | None:
    """(status, value-free description) for an exception BentoML answers with a 4xx; else None."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        shown = "; ".join(f"{'.'.join(str(part) for part in e['loc'])} ({e['type']})" for e in errors[:10])
        more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
        return 400, f"{len(errors)} validation error(s) at {shown}{more}"
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return int(exc.error_code), type(exc).__name__
    return None


def quiet_client_error_logs() -> bool:
    """Attach `ClientErrorLogFilter` to BentoML's exception logger; False if BentoML moved.

    "Moved" means the API handler no longer logs through `http_app.log_exception` on that logger
    (then the filter would silently do nothing); tests/serving/test_service.py also checks the
    effect end to end through the ASGI app.
    """
    try:
        from _bentoml_impl.server import app as bentoml_app
        from bentoml._internal.server import http_app
    except ImportError:
        return False
    if getattr(bentoml_app, "log_exception", None) is not http_app.log_exception:
        return False
    if getattr(http_app, "logger", None) is not logging.getLogger(BENTOML_EXCEPTION_LOGGER):
        return False
    logger = logging.getLogger(BENTOML_EXCEPTION_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())
    return True


def log_patches(results: dict[str, PatchState]) -> None:
    """One start-up line per patch of library internals: in effect, off by setting, or not in effect.

    Called in the worker after BentoML configured logging (root at WARNING), so the project's
    logger is opened to INFO here; the 413/415 lines of the middleware use it too.
    """
    project_logger = logging.getLogger("credit_pd")
    if project_logger.level == logging.NOTSET:
        project_logger.setLevel(logging.INFO)
    for name, result in results.items():
        level = logging.WARNING if result is PatchState.LIBRARY_MOVED else logging.INFO
        log.log(level, "patch %s: %s", name, result.value)
