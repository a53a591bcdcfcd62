"""Every patch of library internals (BentoML, uvicorn), and the one start-up line each logs.

Patching internals is the last resort (../ARCHITECTURE.md): each patch here checks that the code
it adjusts is still the code it was written against and otherwise changes nothing, and
`log_patches` writes one line per patch at worker start-up saying whether it is in effect, off by
a setting, or not in effect because the library moved. tests/serving/test_patches.py fails when a
library moves under a patch.
"""

from __future__ import annotations

import contextvars
import fcntl
import json
import logging
import select
import socket
import termios
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bentoml.exceptions import BentoMLException

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


def _serving_setting(name: str) -> Any:
    """A ServingSettings value, for a patch that service.py calls without it (one source: settings.py)."""
    from credit_pd.serving.settings import ServingSettings

    return getattr(ServingSettings(), name)


def balance_worker_accepts(enabled: bool = True, listeners: int | None = None) -> bool:
    """Give each BentoML worker its own SO_REUSEPORT listening sockets (`listeners` of them), so
    the kernel spreads connections across workers instead of the first worker to wake taking them
    all, and a busy worker still accepts new connections promptly.

    BentoML 1.4 starts every worker on one listening socket inherited from its process manager
    (`uvicorn.Server(config).run(sockets=[socket])` in `_bentoml_impl.worker.service`). Whichever
    worker wakes first accepts every pending connection, and keep-alive clients stay where they
    landed: `ss` during wrk loads found all 32 (and all 4, and both 2) connections on one of the two
    workers, so one core served while the other idled (BentoML issue #5426; the unmerged fix,
    PR #5557, is this same idea). In the worker process only, this wraps `uvicorn.Server.run`: each
    inherited TCP listener gets SO_REUSEPORT, the worker binds its own listeners to the same address,
    then shuts the shared one (SHUT_RD takes it out of the kernel's reuse-port group, for every
    holder), and serves its own. The kernel then picks a listener (so a worker) per connection by a
    hash of the client's address and port.

    Why more than one listener per worker: uvloop's libuv (1.52) accepts ONE connection per
    listener per event-loop turn, however many wait in the accept queue. Under overload a turn of a
    worker's loop took 100-300 ms, so new connections were accepted at ~5-10 per second: ss showed
    32 waiting on one listener, and a client connected in 0.4 ms waited 2.5-5 s for its first byte
    (its request was read only after the flood ended). `listeners` sockets accept that many per turn.

    `listeners` defaults to `ServingSettings.listeners_per_worker`. A listener that cannot be
    replaced is served as before, with a warning. Returns False, changing nothing, outside a
    BentoML worker or if BentoML's worker module moved. tests/serving/test_patches.py fails when
    connections stop spreading, and when uvloop accepts more than one connection per turn (then
    one listener per worker is enough again).
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
    count = int(_serving_setting("listeners_per_worker")) if listeners is None else listeners

    def run_on_own_listeners(self: Any, sockets: list | None = None) -> None:
        if sockets:
            sockets = [own for sock in sockets for own in own_listeners(sock, self.config.backlog, count)]
        return run(self, sockets=sockets)

    run_on_own_listeners.balances_accepts = True  # type: ignore[attr-defined]
    uvicorn.Server.run = run_on_own_listeners  # type: ignore[method-assign]
    return True


def own_listeners(shared: socket.socket, backlog: int, count: int = 1) -> list[socket.socket]:
    """`count` new SO_REUSEPORT listeners on `shared`'s address (at least one; fewer, with a
    warning, if the kernel refuses more); `shared` is shut for accepting. `[shared]` itself where
    `own_listener` keeps it."""
    own = [own_listener(shared, backlog)]
    if own[0] is shared:
        return own
    try:
        while len(own) < count:
            own.append(_reuse_port_listener(own[0].getsockname(), own[0].family, backlog))
    except OSError as exc:
        log.warning("%d of %d listening sockets in this worker (%s): fewer accepts per loop turn", len(own), count, exc)
    return own


def _reuse_port_listener(address: Any, family: int, backlog: int) -> socket.socket:
    """A listener in `address`'s reuse-port group; OSError if the kernel refuses it."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def own_listener(shared: socket.socket, backlog: int) -> socket.socket:
    """A new SO_REUSEPORT listener on `shared`'s address; `shared` is shut for accepting.

    Not for UNIX sockets (no reuse-port group), nor where the platform or kernel lacks or refuses
    SO_REUSEPORT: then `shared` itself.
    """
    tcp = shared.family in (socket.AF_INET, socket.AF_INET6) and shared.type == socket.SOCK_STREAM
    if not tcp or not hasattr(socket, "SO_REUSEPORT"):
        return shared
    try:
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        own = _reuse_port_listener(shared.getsockname(), shared.family, backlog)
    except OSError as exc:
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


# ---------------------------------------------------------------- requests of gone clients ---------

# The transport of the connection whose request this asyncio task serves: set by the bounded
# protocol when it starts a request's ASGI task (a task copies the context it was created in), so
# the middleware and the batcher, running inside that task, can tell whether its client is still there.
REQUEST_CONNECTION: contextvars.ContextVar[Any] = contextvars.ContextVar("credit_pd_request_connection")


def client_gone(connection: Any) -> bool:
    """True when `connection` (a REQUEST_CONNECTION transport) has been closed: the client left."""
    return connection is not None and connection.is_closing()


class _ClientClosedStatus(int):
    """Status 499, which `http.HTTPStatus` lacks, in the shape BentoML's handler reads (`error_code.value`)."""

    @property
    def value(self) -> int:
        return int(self)


class ClientClosedRequest(BentoMLException):
    """The client closed its connection before its request was scored (status 499, as nginx
    names it): the request is dropped, not scored, and so has no decision record. BentoML's
    handler answers it as it answers its own exceptions (into the closed connection: nobody
    reads it) and its request metrics count it under 499."""

    error_code = _ClientClosedStatus(499)  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__("client closed the connection before its request was scored")


# Of BentoML's CorkDispatcher: what `drop_jobs_of_gone_clients` wraps, and the lines it relies on.
BENTOML_DISPATCHER_LINES = (
    ("inbound_call", "input_info = Job(now, data, future)"),
    ("inbound_call", "return await future"),
    ("outbound_call", "self._sema.release()"),
    ("outbound_call", "input_info.data) for input_info in inputs_info"),
    ("controller", "self._sema.acquire()"),
    ("controller", "self._loop.create_task(self.outbound_call(inputs_info))"),
)


def _dispatcher_is_as_written(dispatcher: type) -> bool:
    import inspect

    try:
        sources = {name: inspect.getsource(getattr(dispatcher, name)) for name, _ in BENTOML_DISPATCHER_LINES}
    except (AttributeError, OSError, TypeError):
        return False
    return all(line in sources[name] for name, line in BENTOML_DISPATCHER_LINES)


def drop_jobs_of_gone_clients() -> bool:
    """BentoML's batcher drops a queued request whose client has disconnected, instead of scoring it.

    BentoML 1.4's batcher (`CorkDispatcher`) scores every job it queued, in order: a flood of
    clients that time out and leave (wrk at concurrency 2048 stopping; a caller's 1 s timeout)
    leaves up to `max_in_flight` jobs per worker to be scored for nobody, and the first requests
    of the clients that stay wait behind them or are shed (the load benchmark's "right after the
    overload" check). Here each job remembers the connection of the request that queued it
    (REQUEST_CONNECTION, set by the bounded protocol); just before a batch is scored, jobs whose
    connection is closed are taken out and answered with `ClientClosedRequest` (499: the answer
    goes nowhere, BentoML's request metrics count it as 499, the log filter counts them in one line
    per interval). A batch of only such jobs is not called. Jobs without a known connection (the
    protocol patch not in effect, or uvicorn's `reset_contextvars`) are scored as before. Returns
    False, changing nothing, when BentoML's dispatcher moved. tests/serving/test_patches.py fails
    when it moves.
    """
    try:
        from bentoml._internal.marshal.dispatcher import CorkDispatcher
    except ImportError:
        return False
    inbound, outbound = CorkDispatcher.inbound_call, CorkDispatcher.outbound_call
    if getattr(outbound, "drops_gone_clients", False):
        return True
    if not _dispatcher_is_as_written(CorkDispatcher):
        return False
    connections: dict[int, Any] = {}  # id(job data) -> connection, while the job is queued or scored

    async def inbound_call_of_a_client(self: Any, data: Any) -> Any:
        connection = REQUEST_CONNECTION.get(None)
        if connection is None:
            return await inbound(self, data)
        key = id(data)
        connections[key] = connection
        try:
            return await inbound(self, data)
        finally:
            connections.pop(key, None)

    async def outbound_call_of_present_clients(self: Any, inputs_info: tuple, training: bool = False) -> None:
        present = tuple(job for job in inputs_info if not client_gone(connections.get(id(job.data))))
        if len(present) < len(inputs_info):
            for job in inputs_info:
                if client_gone(connections.get(id(job.data))) and not job.future.done():
                    job.future.set_result(ClientClosedRequest())
            if not present:
                self._sema.release()  # taken by the controller for this batch
                return
        await outbound(self, present, training)

    outbound_call_of_present_clients.drops_gone_clients = True  # type: ignore[attr-defined]
    CorkDispatcher.inbound_call = inbound_call_of_a_client  # type: ignore[method-assign]  # the patch itself
    CorkDispatcher.outbound_call = outbound_call_of_present_clients  # type: ignore[method-assign]
    return True


# ---------------------------------------------------------------- connection limits ----------------


@dataclass(frozen=True)
class ConnectionLimits:
    """What one HTTP connection may take, and when a worker sheds (ServingSettings fields of the
    same names say why). The shedding fields default to the settings, so `service.py`'s
    `ConnectionLimits(...)` of the connection bounds alone sheds as `InFlightLimit` is told to."""

    keepalive_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_header_field_bytes: int
    # Requests to `shed_paths` the worker runs at once (0: no shedding in the protocol); the rest get
    # 503 + Retry-After from the protocol (bounded_http_protocol). Same cap as InFlightLimit's.
    max_in_flight: int = field(default_factory=lambda: int(_serving_setting("max_in_flight")))
    retry_after_s: int = field(default_factory=lambda: int(_serving_setting("retry_after_s")))
    shed_paths: tuple[str, ...] = ("/predict",)  # the service's API routes (InFlightLimit's `paths`)
    # The server's connection census (worker.ConnectionCensus; None: connections stay where they land).
    census: Any = None


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
    "on_body",
    "_start_asgi_task",
    "on_response_complete",
)
# What the protocol's shedding, its gone-client tracking and the connection census read of uvicorn's
# protocol: a request's ASGI task is created inside `_start_asgi_task` (so it copies the context set
# around that call), `on_response_complete` is called when its answer is complete, `connections` is
# the worker's set of open connections and `pipeline` holds requests parsed behind a running one.
UVICORN_TASK_ACCOUNTING = (
    ("connection_made", "self.connections.add(self)"),
    ("on_headers_complete", "self.pipeline.appendleft((self.cycle, app))"),
    ("_start_asgi_task", "task = self.loop.create_task(cycle.run_asgi(app))"),
    ("on_headers_complete", "on_response=self.on_response_complete"),
    ("on_response_complete", "self.server_state.total_requests += 1"),
    ("send_400_response", "self.server_state.default_headers"),
)

# How often the protocol's shedding says how many it shed (one WARNING line, not one per request).
PROTOCOL_SHED_LOG_INTERVAL_S = 10.0


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


def uvicorn_runs_requests_as_written(protocol: type) -> bool:
    """True while uvicorn's protocol starts and completes requests as `UVICORN_TASK_ACCOUNTING`
    says, as the protocol's shedding and REQUEST_CONNECTION rely on."""
    import inspect

    try:
        sources = {name: inspect.getsource(getattr(protocol, name)) for name, _ in UVICORN_TASK_ACCOUNTING}
    except (AttributeError, OSError, TypeError):
        return False
    return all(line in sources[name] for name, line in UVICORN_TASK_ACCOUNTING)


class _ReadTurnSkipper:
    """Connections one worker's protocol shed are not read in the event loop's next turn.

    A closed-loop client (wrk at concurrency 2048; a retry loop that ignores Retry-After) sends its
    next request the moment it reads a 503, so without this every one of a worker's ~1,000 flooding
    connections cost a read, a parse and a 503 in every turn of the loop, and a turn took long enough
    that an admitted request, which needs several turns, waited most of a second. Skipping one
    turn halves that work per turn, which lets the admitted requests through faster (load
    benchmark, overload phase, 3 alternating runs: 25% more 200s, and a 50 req/s client had 15-22% of its
    requests answered instead of 2-3%, at the same p99), while a 503 still takes one or two turns.
    A connection that is not flooding is never paused longer than one turn.
    """

    def __init__(self) -> None:
        self.paused: list[Any] = []  # paused in this turn
        self.skipping: list[Any] = []  # paused in the previous turn: not read in this one
        self.scheduled = False

    def skip_next_read(self, protocol: Any) -> None:
        protocol.transport.pause_reading()
        self.paused.append(protocol)
        if not self.scheduled:
            self.scheduled = True
            protocol.loop.call_soon(self._turn, protocol.loop)

    def _turn(self, loop: Any) -> None:
        """Once per loop turn while any connection is paused: resume those that skipped a read turn."""
        for protocol in self.skipping:
            if not protocol.transport.is_closing():
                protocol.transport.resume_reading()
        self.skipping, self.paused = self.paused, []
        if self.skipping:
            loop.call_soon(self._turn, loop)
        else:
            self.scheduled = False


SHED_METRIC = "credit_pd_shed_requests"
_SHED_COUNTER: Any = None


def shed_counter() -> Any:
    """`credit_pd_shed_requests_total`: requests the protocol shed, which BentoML's request metrics
    never see (no ASGI task ran). Created once per process, on the first call: in a BentoML worker
    that is when uvicorn starts (`bound_connections`), after BentoML set PROMETHEUS_MULTIPROC_DIR,
    so prometheus_client keeps it in the multiprocess files /metrics sums (as live.py's counters)."""
    global _SHED_COUNTER
    if _SHED_COUNTER is None:
        from prometheus_client import Counter

        _SHED_COUNTER = Counter(SHED_METRIC, "Requests shed with 503 + Retry-After in the HTTP protocol")
    return _SHED_COUNTER


MOVED_METRIC = "credit_pd_moved_connections"
_MOVED_COUNTER: Any = None


def moved_counter() -> Any:
    """`credit_pd_moved_connections_total`: keep-alive connections a worker closed after an answer
    because it held clearly more than a sibling (worker.ConnectionCensus); created as `shed_counter`."""
    global _MOVED_COUNTER
    if _MOVED_COUNTER is None:
        from prometheus_client import Counter

        _MOVED_COUNTER = Counter(
            MOVED_METRIC, "Keep-alive connections closed to be placed afresh, off an over-full worker"
        )
    return _MOVED_COUNTER


# How often, at most, a worker at its cap looks which running requests' clients have left.
DEPARTURES_LOOK_INTERVAL_S = 0.005


class Departures:
    """Which of a worker's running requests' clients have left, though uvicorn has not seen it yet
    (`connection_lost` runs a loop turn or more after the client's FIN or RST arrived).

    A connection counts as departed when its transport is closing or the kernel says the peer hung
    up (POLLRDHUP, whether or not the event loop has read the FIN yet). At most once per
    `interval_s` (at the cap under a flood, every shed decision asks) the running connections are
    looked at, with one `poll` system call (~0.1 ms for 256 sockets); in between, the departed of
    the last look that are still running are the answer, which costs next to nothing while none
    departed. Without POLLRDHUP (not Linux) only closing transports count."""

    MASK = getattr(select, "POLLRDHUP", 0) | select.POLLHUP | select.POLLERR

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.looked_at = float("-inf")
        self.departed: set[Any] = set()

    def among(self, running: set[Any]) -> set[Any]:
        """The protocols of `running` (each with a socket file number `_fd`, -1 if none) whose client left."""
        now = time.monotonic()
        if now - self.looked_at >= self.interval_s:
            self.departed = {protocol for protocol in running if protocol.transport.is_closing()}
            if hasattr(select, "POLLRDHUP"):
                self.departed |= self._hung_up(running - self.departed)
            self.looked_at = now
        return self.departed & running

    def _hung_up(self, protocols: set[Any]) -> set[Any]:
        poller = select.poll()
        by_fd = {protocol._fd: protocol for protocol in protocols if protocol._fd >= 0}
        for fd in by_fd:
            poller.register(fd, self.MASK)
        return {by_fd[fd] for fd, events in poller.poll(0) if events & self.MASK}


def bounded_http_protocol(limits: ConnectionLimits) -> type | None:
    """uvicorn's httptools protocol with a bounded request head, head and body timeouts, an idle
    timeout from the first connected moment, and load shedding before the application; None when
    uvicorn's protocol moved.

    uvicorn (0.54, httptools, as BentoML runs it) bounds none of these: httptools hands a header to
    uvicorn only when it is complete, so a 64 MiB header was buffered whole (measured: 2.7 s and
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
      running request, so a request sent just before SIGTERM was cut with no answer;
    - a POST to `shed_paths` whose head completes while the worker already runs `max_in_flight`
      requests (of any route, for connections still open: a client that left no longer counts)
      is answered 503 + Retry-After from the
      protocol, as soon as its head is parsed: no ASGI task, no middleware, and so not in BentoML's
      request metrics (the WARNING line counts them); its body is read and dropped, the connection is kept
      alive and is read again one loop turn later (`_ReadTurnSkipper`). Shedding in the ASGI
      middleware (`InFlightLimit`) answered at once too, but cost a task and a dozen middleware
      layers (~0.3 ms) per shed request: at concurrency 2048 the event loop spent its turns
      answering 503s, and an admitted request, which needs several turns, waited ~1 s more (load
      benchmark, overload phase). A request pipelined behind a running one is left to the
      middleware, which sheds it in order.
    - with `limits.census` (worker.ConnectionCensus), a worker that holds clearly more connections
      than a serving sibling answers an API request with `Connection: close` (never one with a
      request pipelined behind it), so the client's next connection is placed afresh by the kernel.
    Answers are JSON `{"error": ...}`; refusals of a malformed or slow request close the connection.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:
        return None
    if not all(hasattr(HttpToolsProtocol, member) for member in UVICORN_PROTOCOL_MEMBERS):
        return None
    if not uvicorn_runs_requests_as_written(HttpToolsProtocol):
        return None
    from credit_pd.serving.middleware import OVERLOADED_BODY, ShedTally

    shed_paths = frozenset(path.encode() for path in limits.shed_paths)
    shed_head = b"".join(
        [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(OVERLOADED_BODY)).encode(),
            b"\r\nretry-after: ",
            str(limits.retry_after_s).encode(),
            b"\r\n",
        ]
    )
    shed_count = ShedTally(PROTOCOL_SHED_LOG_INTERVAL_S, "in the HTTP protocol")
    census = limits.census
    departures = Departures(DEPARTURES_LOOK_INTERVAL_S)
    skipper = _ReadTurnSkipper()

    class _Refused(Exception):
        """Raised in a parser callback to stop parsing a refused request (the answer is sent)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        bounds = limits
        shed = shed_count
        # Connections of this worker with a request running whose answer is not complete: what the
        # shedding counts. A request whose client has gone is not in it, though its task may still
        # run (until the batcher drops it: drop_jobs_of_gone_clients), so clients that timed out in
        # a flood do not hold the cap against those who came after.
        running: set[Any] = set()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._leaving = False  # answered with Connection: close to move it to a less busy worker
            if census is not None:
                census.publish(len(self.connections))
            sock = transport.get_extra_info("socket")
            self._fd = sock.fileno() if sock is not None else -1
            self._in_head, self._head_bytes, self._head_exact = True, 0, 0
            self._refused = False
            self._draining = False
            self._shedding = False  # this request was answered 503 at its head; its body is dropped
            self._shed_keep_alive = False
            self._timer: Any = None
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            self.running.discard(self)
            super().connection_lost(exc)
            if census is not None:
                if self._leaving:
                    census.leaving -= 1
                    moved_counter().inc()
                census.publish(len(self.connections))

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            self.running.add(self)
            token = REQUEST_CONNECTION.set(self.transport)  # the task copies it: its client, for the batcher
            try:
                super()._start_asgi_task(cycle, app)
            finally:
                REQUEST_CONNECTION.reset(token)

        def on_response_complete(self) -> None:
            self.running.discard(self)  # before uvicorn starts a pipelined next request (which adds it again)
            super().on_response_complete()

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
            if self._over_capacity():
                self._shed_request()
            else:
                previous = self.cycle
                super().on_headers_complete()
                if self._draining and self.cycle is not None:
                    self.cycle.keep_alive = False  # the last request of a shutting-down server: close after it
                elif census is not None:
                    self._stay_for_a_pipelined_request(previous)
                    self._move_if_over_full()
            self._timer = self.loop.call_later(
                self.bounds.body_timeout_s, self._timed_out, "body", self.bounds.body_timeout_s
            )

        def on_body(self, body: bytes) -> None:
            if not self._shedding:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._cancel_timer()
            self._in_head, self._head_bytes = True, 0  # what follows is the next request's head
            if self._shedding:
                self._end_shed_request()
                return
            super().on_message_complete()

        def shutdown(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self._refused and (self._head_bytes or unread_bytes(self.transport)):
                self._draining = True  # a request is arriving: serve it (timers still bound it), then close
                return
            super().shutdown()

        def _over_capacity(self) -> bool:
            """A POST to a shed path, on a connection with no running request, in a worker at its cap
            (requests running for connections still open: `running`)."""
            cap = self.bounds.max_in_flight
            return (
                0 < cap <= len(self.running)
                and self.url.partition(b"?")[0] in shed_paths
                and (self.cycle is None or self.cycle.response_complete)
                and self.parser.get_method() == b"POST"
                and cap <= self._running_for_present_clients()
            )

        def _move_if_over_full(self) -> None:
            """Answer this API request with `Connection: close` when the census says this worker
            holds clearly more connections than a sibling (worker.ConnectionCensus): the client
            reconnects, and the kernel places the new connection afresh. Never with a pipelined
            request behind this one, whose answer the close would lose."""
            cycle = self.cycle
            if (
                cycle is None
                or not cycle.keep_alive
                or self.pipeline
                or self.url.partition(b"?")[0] not in shed_paths
                or not census.hands_over(len(self.connections))
            ):
                return
            cycle.keep_alive = False
            self._leaving = True
            census.leaving += 1

        def _stay_for_a_pipelined_request(self, previous: Any) -> None:
            """A request pipelined behind one whose answer would close the connection: keep it open
            instead, unless that answer has started (httptools parses a whole read at once, so a
            request sent in the same packet is always seen in time)."""
            if self._leaving and self.pipeline and previous is not None and not previous.response_started:
                previous.keep_alive = True
                self._leaving = False
                census.leaving -= 1

        def _running_for_present_clients(self) -> int:
            """`running`, less connections whose client has left but whose `connection_lost` has
            not run yet (`Departures`): when a flood's clients all leave at once, a worker has more
            closed sockets to read than one loop turn reads (libuv takes 1,024 events a turn), and
            the next client's request may be read first. Counted only at the cap."""
            return len(self.running) - len(departures.among(self.running))

        def _shed_request(self) -> None:
            """Answer 503 + Retry-After now; the body that follows is dropped (`on_body`)."""
            self._shedding = True
            self._shed_keep_alive = (
                self.parser.get_http_version() != "1.0"
                and self.parser.should_keep_alive()
                and not self.expect_100_continue  # the client waits to send its body: close instead
                and not self._draining
            )
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[503],
                        *(b"%s: %s\r\n" % header for header in self.server_state.default_headers),
                        shed_head,
                        b"\r\n" if self._shed_keep_alive else b"connection: close\r\n\r\n",
                        OVERLOADED_BODY,
                    ]
                )
            )
            shed_counter().inc()
            self.shed.add(len(self.running), self.bounds.max_in_flight)

        def _end_shed_request(self) -> None:
            """The shed request's body is in: idle again (as after a response), or closed."""
            self._shedding = False
            self.server_state.total_requests += 1
            self._unset_keepalive_if_required()
            if not self._shed_keep_alive or self._draining or self.transport.is_closing():
                self.transport.close()
                return
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            skipper.skip_next_read(self)  # a client that retries at once is read again a turn later

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _timed_out(self, part: str, seconds: float) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._shedding:  # answered 503 already; a body that does not arrive closes the connection
                self.transport.close()
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
        if protocol is not None and limits.max_in_flight > 0:
            shed_counter()  # exported at 0 from the start, so rate() sees the first shed request
        if protocol is not None and limits.census is not None:
            moved_counter()
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


class _PeriodicCount:
    """Records of one kind let through once per interval, rewritten to how many there were since."""

    def __init__(self, interval_s: float, message: str) -> None:
        self.interval_s = interval_s
        self.message = message  # formatted with (count, interval_s)
        self.unlogged = 0
        self.logged_at = float("-inf")

    def let_through(self, record: logging.LogRecord) -> bool:
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at < self.interval_s:
            return False
        record.msg, record.args = self.message, (self.unlogged, self.interval_s)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        self.unlogged, self.logged_at = 0, now
        return True


class ClientErrorLogFilter(logging.Filter):
    """Turn BentoML's ERROR + traceback for a rejected request into one value-free WARNING, and
    its traceback per shed request, or per request dropped because its client left, into a
    periodic count."""

    def __init__(self, shed_interval_s: float = SHED_LOG_INTERVAL_S) -> None:
        super().__init__()
        self.shed = _PeriodicCount(
            shed_interval_s,
            "shed %d request(s) with 503 + Retry-After since the last such line: predicted wait over "
            "max_latency_ms (overload). Sheds in the next %g s go into the next such line; every one is "
            'counted in bentoml_service_request_total{http_response_code="503"}',
        )
        self.gone = _PeriodicCount(
            shed_interval_s,
            "dropped %d queued request(s) whose client had closed its connection, not scored, since the last "
            "such line (the next %g s go into the next one); every one is counted in "
            'bentoml_service_request_total{http_response_code="499"}',
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != BENTOML_EXCEPTION_MESSAGE or not record.exc_info:
            return True
        if is_overload_shed(record.exc_info[1]):
            return self.shed.let_through(record)
        if isinstance(record.exc_info[1], ClientClosedRequest):
            return self.gone.let_through(record)
        summary = client_error_summary(record.exc_info[1])
        if summary is None:
            return True
        path = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "%s %s: %s", (summary[0], path, summary[1])
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text, record.stack_info = None, None, None
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
