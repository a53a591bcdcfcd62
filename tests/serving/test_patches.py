"""credit_pd.serving.patches: every patch of library internals; each test fails when the library moves.

One listening socket per worker, so connections spread across workers:

The unit tests replace a listener in-process; the integration test serves with two real BentoML
workers and fails when BentoML's worker stops handing its listener to `uvicorn.Server.run` (then
every keep-alive connection can land on one worker again, BentoML issue #5426).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import socket
import sys
import time
from collections import Counter
from typing import Any

import httpx
import psutil
import pytest

from credit_pd.serving.patches import BENTOML_WORKER_MODULE, balance_worker_accepts, own_listener
from credit_pd.serving.settings import ServingSettings
from tests.conftest import REPO_ROOT
from tests.serving_process import bentoml_serve

CONNECTIONS = 32
# Each connection picks a worker by a hash of its source port: with 32 connections and 2 workers,
# fewer than 4 on either is a 1-in-380,000 event; with the shared socket one worker took all 32.
MIN_PER_WORKER = 4


def listening_socket() -> socket.socket:
    shared = socket.socket()
    shared.bind(("127.0.0.1", 0))
    shared.listen(64)
    return shared


def accepted(listener: socket.socket) -> int:
    listener.setblocking(False)
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except (BlockingIOError, OSError):
            return count
        count += 1


def test_own_listener_takes_over_the_shared_address():
    shared = listening_socket()
    address = shared.getsockname()
    own = own_listener(shared, backlog=64)
    assert own is not shared and own.getsockname() == address
    clients = [socket.create_connection(address) for _ in range(20)]
    time.sleep(0.1)
    assert accepted(own) == 20, "every new connection must reach the worker's own listener"
    assert accepted(shared) == 0, "the shared listener must be out of the reuse-port group"
    # A second worker replacing the (already shut) shared listener joins the same group.
    second = own_listener(shared, backlog=64)
    more = [socket.create_connection(address) for _ in range(40)]
    time.sleep(0.1)
    first_count, second_count = accepted(own), accepted(second)
    assert first_count + second_count == 40 and min(first_count, second_count) >= 5, (first_count, second_count)
    for sock in [*clients, *more, own, second, shared]:
        sock.close()


def test_a_unix_listener_is_served_as_it_is(tmp_path):
    shared = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    shared.bind(str(tmp_path / "api.sock"))
    shared.listen(8)
    assert own_listener(shared, backlog=8) is shared
    shared.close()


def test_uvicorn_is_left_alone_outside_a_bentoml_worker():
    import uvicorn

    run = uvicorn.Server.run
    assert balance_worker_accepts(True) is False
    assert uvicorn.Server.run is run


def test_bentoml_worker_still_hands_its_listener_to_uvicorn_server_run():
    """What the patch wraps: if this moves, balance_worker_accepts must follow it."""
    import importlib

    source = inspect.getsource(importlib.import_module(BENTOML_WORKER_MODULE))
    assert "uvicorn.Server(config).run(sockets=[socket])" in source


def worker_processes(base: str) -> list[psutil.Process]:
    port = base.rsplit(":", 1)[1]
    [server] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and "serve" in p.info["cmdline"] and port in p.info["cmdline"] and p.pid != os.getpid()
    ]
    return [c for c in server.children(recursive=True) if BENTOML_WORKER_MODULE in " ".join(c.cmdline())]


def connections_by_worker(workers: list[psutil.Process], port: int, status: str) -> Counter[int]:
    counts: Counter[int] = Counter()
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == status:
                counts[worker.pid] += 1
    return counts


@pytest.mark.integration
@pytest.mark.slow
def test_keep_alive_connections_spread_across_two_workers(trained_run, tmp_path):
    env = {**os.environ, "CREDIT_PD_MODEL_TAG": trained_run.model_tag, "CREDIT_PD_WORKERS": "2"}
    env.pop("GOMP_SPINCOUNT", None)
    with bentoml_serve("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as base:
        host, port = base.removeprefix("http://").split(":")
        workers = worker_processes(base)
        assert len(workers) == 2
        deadline = time.monotonic() + 60
        while len(connections_by_worker(workers, int(port), psutil.CONN_LISTEN)) < 2:
            assert time.monotonic() < deadline, "both workers should listen on their own socket"
            time.sleep(0.2)
        # A burst, as a load balancer or a client pool opens them: all connect before any request.
        clients = [socket.create_connection((host, int(port))) for _ in range(CONNECTIONS)]
        for sock in clients:
            sock.sendall(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        for sock in clients:
            sock.settimeout(10)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        spread = connections_by_worker(workers, int(port), psutil.CONN_ESTABLISHED)
        for sock in clients:
            sock.close()
        assert sum(spread.values()) == CONNECTIONS
        assert len(spread) == 2 and min(spread.values()) >= MIN_PER_WORKER, f"connections per worker: {dict(spread)}"
        # A client with few keep-alive connections ends up with them spread evenly (ConnectionCensus).
        body = json.dumps({"applications": trained_run.model.schema.example}).encode()
        moved, clients = keep_posting_until_settled(host, int(port), body, FEW_CONNECTIONS)
        spread = connections_by_worker(workers, int(port), psutil.CONN_ESTABLISHED)
        for sock in clients:
            sock.close()
        assert sorted(spread.values()) == [FEW_CONNECTIONS // 2] * 2, f"{dict(spread)} after {moved} moved"
        assert "moved off an over-full worker (balance_connections): in effect" in (tmp_path / "serve.log").read_text()
        metrics = httpx.get(f"{base}/metrics").text
        assert f"credit_pd_moved_connections_total {float(moved)}" in metrics, [
            line for line in metrics.splitlines() if "moved" in line
        ]
        # LightGBM's OpenMP spin count reaches the workers as the service env.
        assert {w.environ().get("GOMP_SPINCOUNT") for w in workers} == {str(ServingSettings().openmp_spin_count)}
        assert "balance_worker_accepts): in effect" in (tmp_path / "serve.log").read_text()


def bentoml_error_record(exc: BaseException) -> logging.LogRecord:
    """A record as BentoML's `log_exception` makes it for a failed request."""
    from credit_pd.serving.patches import BENTOML_EXCEPTION_LOGGER, BENTOML_EXCEPTION_MESSAGE

    try:
        raise exc
    except type(exc):
        exc_info = sys.exc_info()
    return logging.LogRecord(
        BENTOML_EXCEPTION_LOGGER, logging.ERROR, __file__, 1, BENTOML_EXCEPTION_MESSAGE, ("/predict", "POST"), exc_info
    )


def test_shed_requests_are_counted_not_logged_one_traceback_each(monkeypatch):
    from bentoml.exceptions import ServiceUnavailable

    from credit_pd.serving.patches import ClientErrorLogFilter

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    log_filter = ClientErrorLogFilter(shed_interval_s=10)
    passed = []
    for second in range(25):  # 100 sheds a second for 25 s
        clock[0] = 1000.0 + second
        for _ in range(100):
            record = bentoml_error_record(ServiceUnavailable("process is overloaded"))
            if log_filter.filter(record):
                passed.append(record)
    assert [r.getMessage().split(" request")[0] for r in passed] == ["shed 1", "shed 1000", "shed 1000"]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in passed)
    # Server errors other than shedding keep their ERROR and traceback.
    crash = bentoml_error_record(RuntimeError("scorer exploded"))
    assert log_filter.filter(crash) and crash.levelno == logging.ERROR and crash.exc_info is not None


def test_requests_dropped_because_their_client_left_are_counted_as_499_in_one_line(monkeypatch):
    from credit_pd.serving.patches import ClientClosedRequest, ClientErrorLogFilter

    exc = ClientClosedRequest()
    assert exc.error_code.value == 499 and int(exc.error_code) == 499, "BentoML answers error_code.value"
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    log_filter = ClientErrorLogFilter(shed_interval_s=10)
    passed = []
    for second in range(12):
        clock[0] = 1000.0 + second
        for _ in range(50):
            record = bentoml_error_record(ClientClosedRequest())
            if log_filter.filter(record):
                passed.append(record)
    assert [r.getMessage().split(" queued")[0] for r in passed] == ["dropped 1", "dropped 500"]
    assert all(r.levelno == logging.WARNING and r.exc_info is None and "499" in r.getMessage() for r in passed)


class FakeConnection:
    """A transport as the patches use it: open until `close()`, read until `pause_reading()`."""

    def __init__(self) -> None:
        self.closed = False
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_the_batcher_drops_queued_jobs_of_clients_that_left_and_scores_the_rest():
    """A real BentoML CorkDispatcher with the patch: of five requests queued behind a running batch,
    the two whose connections closed are never scored and are answered ClientClosedRequest (499);
    a request with no known connection is scored as before; a batch of only gone clients is not called."""
    import asyncio

    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    from credit_pd.serving.patches import REQUEST_CONNECTION, ClientClosedRequest, drop_jobs_of_gone_clients

    assert drop_jobs_of_gone_clients(), "BentoML's dispatcher moved: revisit drop_jobs_of_gone_clients"
    assert drop_jobs_of_gone_clients(), "applying it twice is a no-op"
    batches: list[list[str]] = []

    async def scenario() -> tuple[list, list]:
        release = asyncio.Event()

        async def score(items):
            batches.append([item[0] for item in items])
            await release.wait()
            return [f"pd of {item[0]}" for item in items]

        dispatcher = CorkDispatcher(
            max_latency_in_ms=10_000, max_batch_size=100, fallback=lambda: "shed", get_batch_size=lambda _: 1
        )
        call = dispatcher(score)

        async def request(name: str, connection: FakeConnection | None):
            if connection is not None:
                REQUEST_CONNECTION.set(connection)  # as the bounded protocol does for a request's task
            try:
                return await call([name])
            except ClientClosedRequest as exc:
                return exc

        first = asyncio.ensure_future(request("first", FakeConnection()))
        while not batches:  # the first batch runs (the optimizer's warm-up: one request a batch)
            await asyncio.sleep(0.001)
        connections = {name: FakeConnection() for name in ("a", "gone-1", "b", "gone-2")}
        queued = [asyncio.ensure_future(request(name, c)) for name, c in connections.items()]
        queued.append(asyncio.ensure_future(request("unknown", None)))
        await asyncio.sleep(0.01)
        connections["gone-1"].close()
        connections["gone-2"].close()
        release.set()
        answers = await asyncio.gather(first, *queued)
        # A batch whose every client has left: nothing is scored.
        gone = FakeConnection()
        lonely = asyncio.ensure_future(request("lonely", gone))
        gone.close()
        answers.append(await lonely)
        dispatcher.shutdown()
        return answers, batches

    answers, scored = asyncio.run(scenario())
    names = [name for batch in scored for name in batch]
    assert sorted(names) == ["a", "b", "first", "unknown"], f"scored: {scored}"
    by_name = dict(zip(["first", "a", "gone-1", "b", "gone-2", "unknown", "lonely"], answers, strict=True))
    assert all(isinstance(by_name[n], ClientClosedRequest) for n in ("gone-1", "gone-2", "lonely"))
    assert [by_name[n] for n in ("first", "a", "b", "unknown")] == [
        f"pd of {n}" for n in ("first", "a", "b", "unknown")
    ]


def test_batcher_hold_time_is_capped_after_queueing_waits():
    from bentoml._internal.marshal.dispatcher import Optimizer

    from credit_pd.serving.patches import cap_batcher_hold_time

    assert ServingSettings().max_batch_hold_ms == 0, "a lone request must not wait for company"
    try:
        assert cap_batcher_hold_time(10.0), "BentoML's batcher internals moved: revisit cap_batcher_hold_time"
        optimizer = Optimizer(max_latency=0.5)
        for _ in range(20):  # batches that waited 300 ms in a queue, as under overload
            optimizer.o_stat.append((8, 0.004, 0.3))
        optimizer.trigger_refresh()
        assert optimizer.wait == pytest.approx(0.010)
        optimizer.o_stat.clear()
        for _ in range(20):
            optimizer.o_stat.append((1, 0.002, 0.001))
        optimizer.trigger_refresh()
        assert optimizer.wait == pytest.approx(0.001), "short learned waits stay as BentoML learned them"
        assert cap_batcher_hold_time(0.0)
        optimizer.trigger_refresh()
        assert optimizer.wait == 0, "the default cap: no deliberate hold at all"
    finally:
        cap_batcher_hold_time(ServingSettings().max_batch_hold_ms)


def test_orjson_output_spec_is_in_effect_and_writes_the_answers(scorer, applications):
    """Fails when BentoML moves the hook `prediction_output_spec` relies on (then answers would be
    re-validated and dumped by the stock path: same bytes' meaning, several times slower)."""
    import asyncio
    import json

    import orjson
    from _bentoml_impl.serde import JSONSerde

    from credit_pd.serving.contract import PredictionOut
    from credit_pd.serving.patches import prediction_output_spec

    spec, in_effect = prediction_output_spec(PredictionOut)
    assert in_effect, (
        "BentoML's api_endpoint no longer renders results with output_spec.to_http_response(output, serde)"
    )
    answers = scorer.answers(applications[:5])
    response = asyncio.run(spec.to_http_response(answers, JSONSerde()))
    assert response.body == orjson.dumps(answers) and response.media_type == "application/json"
    stock = asyncio.run(spec.to_http_response(scorer.score(applications[:5]), JSONSerde()))
    body = b"".join(stock.body_iterator) if hasattr(stock, "body_iterator") else stock.body
    assert json.loads(body) == json.loads(response.body), "models still take the stock path, same answer"
    assert spec.model_json_schema()["items"]["$ref"].endswith("PredictionOut")


# ---------------------------------------------------------------- bounded connections -------------
# uvicorn with the bounded protocol, in a thread of this process, in front of a small ASGI app:
# raw sockets then play the hostile clients of issue 19.

LIMITS = dict(
    keepalive_timeout_s=1.0,
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    max_header_bytes=8_192,
    max_header_field_bytes=4_096,
)


FEW_CONNECTIONS = 4


def read_answer(sock: socket.socket) -> tuple[int, bool]:
    """(status, whether the server asked to close) of one HTTP/1.1 answer with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        assert chunk, "closed before an answer"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.lower().split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(rest) < length:
        rest += sock.recv(65_536)
    return int(head.split()[1]), headers.get(b"connection") == b"close"


def keep_posting_until_settled(
    host: str, port: int, body: bytes, connections: int, rounds: int = 60
) -> tuple[int, list[socket.socket]]:
    """Post `body` on each of `connections` keep-alive connections in turn, reconnecting when asked
    to close, until a round (after the third) asks none to: the number of connections moved, and
    the open connections (the caller closes them)."""
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    clients = [socket.create_connection((host, port), timeout=10) for _ in range(connections)]
    moved = 0
    try:
        for turn in range(rounds):
            closes = 0
            for i, sock in enumerate(clients):
                sock.sendall(request)
                status, close = read_answer(sock)
                assert status == 200
                if close:
                    sock.close()
                    clients[i] = socket.create_connection((host, port), timeout=10)
                    closes += 1
            moved += closes
            if closes == 0 and turn >= 3:
                return moved, clients
        raise AssertionError(f"still moving connections after {rounds} rounds ({moved} moved)")
    except BaseException:
        for sock in clients:
            sock.close()
        raise


class BodyApp:
    """Reads the whole body and answers its length; records how each request ended."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.outcomes.append("disconnect")
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.outcomes.append(f"body {size}")
        payload = str(size).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(payload)).encode())]}
        )
        await send({"type": "http.response.body", "body": payload})


def counting_reads(protocol: type, reads: list[int]) -> type:
    """`protocol`, appending the size of every read the event loop hands it to `reads`: what the
    server took off the socket into its own memory, as against what the kernels buffered."""

    class CountingReads(protocol):  # type: ignore[misc, valid-type]
        def data_received(self, data: bytes) -> None:
            reads.append(len(data))
            super().data_received(data)

    return CountingReads


@contextlib.contextmanager
def served_in_a_thread(app, listeners: int = 1, reads: list[int] | None = None, **limits_overrides):
    """uvicorn with the bounded protocol and LIMITS (and `limits_overrides`), serving `app` from a
    thread on `listeners` reuse-port listening sockets (patches.own_listeners): (address, server).
    With `reads`, the protocol also records the size of every read it is handed (counting_reads)."""
    import threading

    import uvicorn

    from credit_pd.serving.patches import ConnectionLimits, bounded_http_protocol, configure_uvicorn, own_listeners

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    limits = ConnectionLimits(**{**LIMITS, **limits_overrides})
    protocol = bounded_http_protocol(limits)
    assert protocol is not None, "uvicorn's httptools protocol moved: revisit bounded_http_protocol"
    if reads is not None:
        protocol = counting_reads(protocol, reads)
    assert configure_uvicorn(config, limits, protocol) and config.http is protocol
    assert config.timeout_keep_alive == LIMITS["keepalive_timeout_s"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sockets = own_listeners(sock, 2048, listeners) if listeners > 1 else [sock]
    assert len(sockets) == listeners
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield sockets[0].getsockname(), server
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(scope="module")
def bounded_server():
    app = BodyApp()
    with served_in_a_thread(app) as (address, _):
        yield address, app


def answer(sock: socket.socket, timeout_s: float = 5.0) -> tuple[str, bytes, bool]:
    """(status line, the rest, whether the server then closed the connection)."""
    sock.settimeout(timeout_s)
    data = b""
    closed = False
    while b"\r\n\r\n" not in data or not closed:
        try:
            chunk = sock.recv(65_536)
        except TimeoutError:
            break
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
        if b"\r\n\r\n" in data and b"connection: close" not in data.lower():
            break
    line, _, rest = data.partition(b"\r\n")
    return line.decode(), rest, closed


def post_head(host: str, content_length: int | None = None, extra: str = "") -> bytes:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else "Transfer-Encoding: chunked\r\n"
    return f"POST /predict HTTP/1.1\r\nHost: {host}\r\n{extra}{length}\r\n".encode()


def test_a_request_within_the_limits_is_served_and_kept_alive(bounded_server):
    (host, port), _ = bounded_server
    with socket.create_connection((host, port)) as sock:
        for _ in range(2):
            sock.sendall(post_head(host, 5, "X-Token: " + "t" * 2_000 + "\r\n") + b"hello")
            status, rest, closed = answer(sock)
            assert status == "HTTP/1.1 200 OK" and rest.endswith(b"5") and not closed


@pytest.mark.parametrize(
    "extra, why",
    [
        ("X-Big: " + "x" * 5_000 + "\r\n", "header 'X-Big' over 4096 bytes"),
        ("".join(f"X-{i}: {'y' * 50}\r\n" for i in range(200)), "request head over 8192 bytes"),
    ],
    ids=["one-field", "many-fields"],
)
def test_an_oversized_head_gets_431_and_a_closed_connection(bounded_server, extra, why):
    (host, port), app = bounded_server
    before = len(app.outcomes)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(post_head(host, 2, extra) + b"{}")
        status, rest, closed = answer(sock)
    assert status.startswith("HTTP/1.1 431") and why in rest.decode() and closed
    assert len(app.outcomes) == before, "a refused head never reaches the application"


def test_a_64_mib_header_is_refused_after_the_limit_not_buffered():
    """The server stops reading at the head limit. What it read is counted in the server, not as
    the bytes the client got to send: those also fill both kernels' socket buffers, which Linux
    grows on its own (tcp_rmem's maximum is 32 MiB on some machines), so a client-side count
    measured the kernels and failed on a busy CI machine (4.2 MiB sent)."""
    reads: list[int] = []
    with served_in_a_thread(BodyApp(), reads=reads) as ((host, port), _):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Huge: ".encode())
            sent, chunk = 0, b"z" * 16_384
            try:
                while sent < 64 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            status, _, closed = answer(sock)
    assert status.startswith("HTTP/1.1 431") and closed
    assert sent < 64 * 1024 * 1024, "the server must close the connection, not take all 64 MiB"
    # The read that crosses the limit is the last one: asyncio reads at most 256 KiB at a time.
    assert reads and sum(reads[:-1]) <= LIMITS["max_header_bytes"], reads[:5]
    assert sum(reads) < LIMITS["max_header_bytes"] + 256 * 1024 + 1, f"the server read {sum(reads)} bytes"


def test_a_slowloris_head_gets_408_and_a_closed_connection(bounded_server):
    (host, port), _ = bounded_server
    with socket.create_connection((host, port)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
        for _ in range(3):  # one byte at a time, slower than the head timeout allows
            time.sleep(0.2)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        status, rest, closed = answer(sock)
    assert status.startswith("HTTP/1.1 408") and b"head not complete within 0.5 s" in rest and closed
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "endless-chunked"])
def test_a_slow_body_gets_408_and_the_application_sees_a_disconnect(bounded_server, chunked):
    (host, port), app = bounded_server
    with socket.create_connection((host, port)) as sock:
        sock.sendall(post_head(host, None if chunked else 1_000) + (b"5\r\nhello\r\n" if chunked else b"x" * 10))
        for _ in range(4):
            time.sleep(0.2)
            try:
                sock.sendall(b"5\r\nhello\r\n" if chunked else b"x")
            except OSError:
                break
        status, rest, closed = answer(sock)
    assert status.startswith("HTTP/1.1 408") and b"body not complete within 0.5 s" in rest and closed
    time.sleep(0.1)
    assert app.outcomes[-1] == "disconnect", "the application must not answer (nor log a 500) after the 408"


@pytest.mark.parametrize("first_request", [False, True], ids=["never-sent-a-byte", "after-a-response"])
def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(bounded_server, first_request):
    (host, port), _ = bounded_server
    with socket.create_connection((host, port)) as sock:
        if first_request:
            sock.sendall(post_head(host, 2) + b"{}")
            assert answer(sock)[0] == "HTTP/1.1 200 OK"
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the server closes an idle connection"
        idle = time.monotonic() - started
    assert LIMITS["keepalive_timeout_s"] - 0.1 < idle < LIMITS["keepalive_timeout_s"] + 1.0, idle


class LoopBlockingApp(BodyApp):
    """POST /block holds the event loop (as inline scoring does) until `release` is set, then starts
    the server's graceful shutdown from inside the loop, before the loop reads anything else."""

    def __init__(self) -> None:
        import threading

        super().__init__()
        self.release, self.blocking = threading.Event(), threading.Event()
        self.server: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == "/block":
            self.blocking.set()
            self.release.wait(timeout=5)
            self.server.should_exit = True
            for connection in list(self.server.server_state.connections):
                connection.shutdown()  # what uvicorn's Server.shutdown does first
        await super().__call__(scope, receive, send)


def test_a_request_sent_before_shutdown_is_served_not_cut(tmp_path):
    """A kept-alive connection whose next request sits unread in the kernel when the server starts
    its graceful shutdown (the loop was busy) gets that request answered, with Connection: close;
    uvicorn closed it unanswered (the SIGTERM drain test saw a RemoteProtocolError)."""
    app = LoopBlockingApp()
    with served_in_a_thread(app) as ((host, port), server):
        app.server = server
        with socket.create_connection((host, port)) as idle, socket.create_connection((host, port)) as blocker:
            idle.sendall(post_head(host, 2) + b"{}")
            assert answer(idle)[0] == "HTTP/1.1 200 OK"  # now kept alive, between requests
            blocker.sendall(post_head(host, 2).replace(b"/predict", b"/block") + b"{}")
            assert app.blocking.wait(timeout=5)
            idle.sendall(post_head(host, 5) + b"hello")  # arrives while the loop cannot read it
            time.sleep(0.2)
            app.release.set()
            status, rest, closed = answer(idle)
            assert status == "HTTP/1.1 200 OK" and rest.endswith(b"5"), (status, rest)
            assert b"connection: close" in rest.lower() and closed
            assert answer(blocker)[0] == "HTTP/1.1 200 OK"
    assert app.outcomes.count("body 5") == 1


def test_bounded_connections_leave_uvicorn_alone_outside_a_bentoml_worker():
    import uvicorn

    from credit_pd.serving.patches import ConnectionLimits, bound_connections

    run = uvicorn.Server.run
    assert bound_connections(ConnectionLimits(**LIMITS)) is False
    assert uvicorn.Server.run is run


def test_bentoml_worker_still_builds_uvicorn_config_without_a_keep_alive_setting():
    """What bound_connections adjusts: BentoML's worker makes uvicorn's Config itself, from its CLI
    flag `--timeout-keep-alive` (default 5 s), and then calls Server.run; if that moves, so must the patch."""
    import importlib

    source = inspect.getsource(importlib.import_module(BENTOML_WORKER_MODULE))
    assert "config = uvicorn.Config(" in source and "timeout_keep_alive=timeout_keep_alive" in source
    assert "uvicorn.Server(config).run(sockets=[socket])" in source


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_server_bounds_heads_bodies_and_idle_connections_by_its_settings(trained_run, tmp_path):
    """The settings reach uvicorn under `bentoml serve` (BentoML's own keep-alive default is 5 s)."""
    env = {
        **os.environ,
        "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
        "CREDIT_PD_WORKERS": "1",
        "CREDIT_PD_KEEPALIVE_TIMEOUT_S": "2",
        "CREDIT_PD_HEADER_TIMEOUT_S": "1",
        "CREDIT_PD_BODY_TIMEOUT_S": "1",
    }
    with bentoml_serve("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as base:
        host, port = base.removeprefix("http://").split(":")
        address = (host, int(port))
        with socket.create_connection(address) as sock:
            sock.sendall(f"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: {'b' * 20_000}\r\n\r\n".encode())
            status, rest, closed = answer(sock)
        assert status.startswith("HTTP/1.1 431") and b"over 16384 bytes" in rest and closed
        with socket.create_connection(address) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
            status, _, closed = answer(sock)
        assert status.startswith("HTTP/1.1 408") and closed and time.monotonic() - started < 3
        with socket.create_connection(address) as sock:
            sock.sendall(post_head(host, 1_000, "Content-Type: application/json\r\n") + b"{")
            status, _, closed = answer(sock)
        assert status.startswith("HTTP/1.1 408") and closed, status
        with socket.create_connection(address) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, rest, _ = answer(sock)
            assert status == "HTTP/1.1 200 OK"
            head, _, body = rest.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, flags=re.I).group(1))
            while len(body) < length:  # the body may arrive after the head: read it all before timing
                body += sock.recv(length - len(body))
            started = time.monotonic()
            sock.settimeout(10)
            assert sock.recv(1) == b""
            idle = time.monotonic() - started
        assert 1.5 < idle < 4, f"idle keep-alive connection closed after {idle:.1f} s, not the configured 2 s"
        log = (tmp_path / "serve.log").read_text()
        assert "bound_connections): in effect" in log


# ---------------------------------------------------------------- shedding in the protocol --------
# Under overload the worker's protocol answers 503 + Retry-After itself (ConnectionLimits.max_in_flight):
# a shed request never becomes an ASGI task, so it cannot be queued with, or in front of, admitted ones.


def response(sock: socket.socket, timeout_s: float = 5.0) -> tuple[str, dict[str, str], bytes]:
    """One whole HTTP/1.1 response with a Content-Length: (status line, lower-case headers, body)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        assert chunk, f"connection closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65_536)
        assert chunk, "connection closed before the whole body"
        body += chunk
    assert len(body) == int(headers["content-length"]), "a response must end where its Content-Length says"
    return line, headers, body


class HoldingApp(BodyApp):
    """Records the path of every request that reaches it; POST /predict waits for `release`, as a
    request waiting for its batch does."""

    def __init__(self) -> None:
        import threading

        super().__init__()
        self.release = threading.Event()
        self.reached: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        if scope["type"] == "http":
            self.reached.append(scope["path"])
            while scope["path"] == "/predict" and not self.release.is_set():
                await asyncio.sleep(0.005)
        await super().__call__(scope, receive, send)


def shed_total() -> float:
    from prometheus_client import REGISTRY

    from credit_pd.serving.patches import SHED_METRIC

    return REGISTRY.get_sample_value(f"{SHED_METRIC}_total") or 0.0


def hold_requests(app: HoldingApp, host: str, port: int, count: int) -> list[socket.socket]:
    """`count` connections, each with a POST /predict that `app` holds; returned once all reached it."""
    held = [socket.create_connection((host, port)) for _ in range(count)]
    for sock in held:
        sock.sendall(post_head(host, 2) + b"{}")
    deadline = time.monotonic() + 5
    while len(app.reached) < count:
        assert time.monotonic() < deadline, f"{len(app.reached)} of {count} requests reached the app"
        time.sleep(0.01)
    return held


def test_a_request_over_the_in_flight_cap_gets_503_with_retry_after_without_reaching_the_app(caplog):
    app = HoldingApp()
    shed_before = shed_total()
    with served_in_a_thread(app, max_in_flight=2, retry_after_s=3) as ((host, port), server):
        held = hold_requests(app, host, port, 2)
        with socket.create_connection((host, port)) as extra:
            started = time.monotonic()
            extra.sendall(post_head(host, 3_000, "Content-Type: application/json\r\n"))  # the head alone
            status, headers, body = response(extra)
            assert status == "HTTP/1.1 503 Service Unavailable" and time.monotonic() - started < 1.0
            assert headers["retry-after"] == "3" and "connection" not in headers, "kept alive"
            assert json.loads(body)["error"].startswith("overloaded")
            assert shed_total() == shed_before + 1, "counted for /metrics: BentoML's request metrics never see it"
            # Its body, sent after the answer, is read and dropped: the connection serves what follows.
            extra.sendall(b"x" * 3_000 + b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert response(extra)[0] == "HTTP/1.1 200 OK", "health routes are never shed"
            assert app.reached == ["/predict", "/predict", "/readyz"], "the shed request never reached the app"
            app.release.set()
            for sock in held:
                assert response(sock)[0] == "HTTP/1.1 200 OK"
                sock.close()
            while server.server_state.tasks:  # the two held requests' tasks end just after their answers
                time.sleep(0.01)
            extra.sendall(post_head(host, 2) + b"{}")
            assert response(extra)[:1] == ("HTTP/1.1 200 OK",), "below the cap again, the same connection is served"
    assert "shed 1 request(s) with 503 + Retry-After in the HTTP protocol" in caplog.text, "one line per interval"


def test_requests_of_clients_that_left_do_not_hold_the_cap_against_new_ones():
    """Two requests hold a worker with max_in_flight 2; their clients give up and close. A new
    client is admitted at once, though the two tasks still run (as requests queued for a batch do
    after a flood ends), and each task saw its connection in REQUEST_CONNECTION."""
    from credit_pd.serving.patches import REQUEST_CONNECTION, client_gone

    seen: list = []

    class RecordingApp(HoldingApp):
        async def __call__(self, scope, receive, send) -> None:
            if scope["type"] == "http":
                seen.append(REQUEST_CONNECTION.get(None))
            await super().__call__(scope, receive, send)

    app = RecordingApp()
    with served_in_a_thread(app, max_in_flight=2) as ((host, port), server):
        held = hold_requests(app, host, port, 2)
        deadline = time.monotonic() + 5
        with socket.create_connection((host, port)) as extra:  # at the cap: shed
            extra.sendall(post_head(host, 2) + b"{}")
            assert response(extra)[0] == "HTTP/1.1 503 Service Unavailable"
        for sock in held:
            sock.close()
        while not all(client_gone(connection) for connection in seen[:2]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert len(server.server_state.tasks) == 2, "the held tasks still run"
        with socket.create_connection((host, port)) as late:
            late.sendall(post_head(host, 2) + b"{}")
            while len(app.reached) < 3:
                assert time.monotonic() < deadline, "the new client was shed behind clients that had left"
                time.sleep(0.01)
            app.release.set()
            assert response(late)[0] == "HTTP/1.1 200 OK"
    assert len(seen) == 3 and all(connection is not None for connection in seen)


def test_departures_are_seen_by_the_kernel_before_the_event_loop_reads_them():
    """A client's FIN is a departure as soon as it arrives (POLLRDHUP), before anything read the
    socket; a closing transport is one too; a connected client is not; the look is reused for
    `interval_s` and then taken again."""
    from credit_pd.serving.patches import Departures

    class Protocol:
        def __init__(self, fd: int, closing: bool = False) -> None:
            self._fd = fd
            self.transport = FakeConnection()
            self.transport.closed = closing

    listener = socket.create_server(("127.0.0.1", 0))
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    served = [listener.accept()[0] for _ in clients]
    try:
        stays, leaves, closing = (Protocol(sock.fileno()) for sock in served)
        closing.transport.closed = True
        clients[1].close()  # its FIN arrives; nothing reads served[1]
        running = {stays, leaves, closing}
        departures = Departures(interval_s=3600)
        deadline = time.monotonic() + 5
        while departures.among(running) != {leaves, closing}:
            assert time.monotonic() < deadline, "the hang-up was never seen"
            departures.looked_at = float("-inf")  # look again: the FIN may take a moment on a busy machine
            time.sleep(0.01)
        clients[0].close()
        assert departures.among(running) == {leaves, closing}, "within the interval the last look is reused"
        assert departures.among({stays, leaves}) == {leaves}, "only what is still running"
        departures.looked_at = float("-inf")
        time.sleep(0.05)
        assert departures.among(running) == running, "the next look sees the second hang-up"
    finally:
        for sock in clients + served:
            sock.close()
        listener.close()


FLOOD_CLIENT = r"""
import selectors, socket, sys, time
host, port, connections, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
request = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}".encode()
selector, statuses, end = selectors.DefaultSelector(), {}, time.monotonic() + seconds
for _ in range(connections):
    sock = socket.create_connection((host, port))
    sock.setblocking(False)
    sock.send(request)
    selector.register(sock, selectors.EVENT_READ, [b""])
outstanding = connections
while outstanding and time.monotonic() < end + 5:  # then every request sent is answered before the end
    for key, _ in selector.select(0.1):
        buffer = key.data[0] + key.fileobj.recv(65536)
        while b"\r\n\r\n" in buffer:  # every answer here has a Content-Length
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            if len(rest) < length:
                break
            buffer = rest[length:]
            status = head.split(b" ")[1].decode() + ("+retry-after" if b"retry-after" in head.lower() else "")
            statuses[status] = statuses.get(status, 0) + 1
            if time.monotonic() < end:
                key.fileobj.send(request)  # closed loop, as wrk: the next request the moment an answer is in
            else:
                outstanding -= 1
        key.data[0] = buffer
print(statuses)
"""


class QuickApp(BodyApp):
    """POST /predict takes 20 ms of waiting (not of the loop); counts the requests that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = 0

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        if scope["type"] == "http" and scope["path"] == "/predict":
            self.reached += 1
            await asyncio.sleep(0.02)
        await super().__call__(scope, receive, send)


def test_under_a_flood_of_shed_requests_an_admitted_one_is_answered_at_once():
    """50 connections resend the moment they are answered (a separate process, as wrk); a client of
    its own meanwhile: the flood gets 503 + Retry-After from the protocol, the app sees only what it
    answers, and every admitted request of the client is answered in about its own 20 ms."""
    import ast
    import subprocess

    app = QuickApp()
    with served_in_a_thread(app, max_in_flight=8) as ((host, port), _):
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD_CLIENT, host, str(port), "50", "4"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(0.5)
        answered, shed, until = [], 0, time.monotonic() + 2.5
        with socket.create_connection((host, port)) as client:
            while len(answered) < 5 and time.monotonic() < until:
                started = time.monotonic()
                client.sendall(post_head(host, 2) + b"{}")
                status, headers, _ = response(client)
                if status == "HTTP/1.1 200 OK":
                    answered.append(time.monotonic() - started)
                else:
                    assert status.startswith("HTTP/1.1 503") and headers["retry-after"]
                    shed += 1
                time.sleep(0.005)
        out, _ = flood.communicate(timeout=30)
    statuses = ast.literal_eval(out.strip())
    assert statuses.get("503+retry-after", 0) > 100 and set(statuses) <= {"200", "503+retry-after"}, statuses
    assert app.reached == statuses.get("200", 0) + len(answered), "shed requests never reach the app"
    assert answered, f"the client was shed {shed} times and never admitted"
    assert max(answered) < 0.5, f"admitted requests waited {max(answered):.2f} s behind the flood"


def test_a_shed_connection_skips_one_read_turn_then_is_read_again():
    from credit_pd.serving.patches import _ReadTurnSkipper

    class Loop:
        def __init__(self) -> None:
            self.soon: list = []

        def call_soon(self, callback, *args) -> None:
            self.soon.append((callback, args))

        def turn(self) -> None:
            due, self.soon = self.soon, []
            for callback, args in due:
                callback(*args)

    class Protocol:
        def __init__(self, loop: Loop) -> None:
            self.loop, self.transport = loop, FakeConnection()

    loop, skipper = Loop(), _ReadTurnSkipper()
    first, gone = Protocol(loop), Protocol(loop)
    skipper.skip_next_read(first)
    skipper.skip_next_read(gone)
    gone.transport.close()
    loop.turn()  # the turn after the shed: not read
    assert not first.transport.reading
    later = Protocol(loop)
    skipper.skip_next_read(later)  # shed in that turn
    loop.turn()
    assert first.transport.reading and not later.transport.reading and not gone.transport.reading
    loop.turn()
    assert later.transport.reading
    loop.turn()
    assert not loop.soon and not skipper.scheduled, "nothing runs once no connection is paused"


class LoopHoggingApp(BodyApp):
    """While `busy` is set, every turn of the server's event loop takes 50 ms (as a worker's turn
    under overload, or scoring a large batch inline)."""

    def __init__(self) -> None:
        import threading

        super().__init__()
        self.busy = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        if scope["type"] == "lifespan":
            loop = asyncio.get_running_loop()

            def hog() -> None:
                if self.busy.is_set():
                    time.sleep(0.05)
                    loop.call_soon(hog)
                else:
                    loop.call_later(0.01, hog)

            loop.call_soon(hog)
        await super().__call__(scope, receive, send)


def seconds_to_answer_new_connections(address: tuple[str, int], count: int) -> float:
    started = time.monotonic()
    clients = [socket.create_connection(address) for _ in range(count)]
    for sock in clients:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    for sock in clients:
        assert response(sock, timeout_s=10)[0] == "HTTP/1.1 200 OK"
        sock.close()
    return time.monotonic() - started


@pytest.mark.parametrize("listeners", [1, 8])
def test_a_busy_worker_accepts_one_new_connection_per_listener_per_loop_turn(listeners):
    """Why a worker has ServingSettings.listeners_per_worker listeners: uvloop accepts one
    connection per listener per loop turn. 20 new connections at 50 ms a turn take ~1 s on one
    listener and a few turns on 8. If one listener gets fast, uvloop accepts more per turn: the
    extra listeners are no longer needed (balance_worker_accepts)."""
    app = LoopHoggingApp()
    with served_in_a_thread(app, listeners=listeners) as (address, _):
        app.busy.set()
        time.sleep(0.2)
        seconds = seconds_to_answer_new_connections(address, 20)
        app.busy.clear()
    if listeners == 1:
        assert seconds > 0.8, f"20 connections on one listener in {seconds:.2f} s: uvloop accepts more per turn now"
    else:
        assert seconds < 0.6, f"20 connections on {listeners} listeners took {seconds:.2f} s"


def test_own_listeners_share_the_address_and_all_take_connections():
    from credit_pd.serving.patches import own_listeners

    shared = listening_socket()
    address = shared.getsockname()
    listeners = own_listeners(shared, backlog=256, count=4)
    assert len(listeners) == 4 and {sock.getsockname() for sock in listeners} == {address}
    clients = [socket.create_connection(address) for _ in range(200)]
    time.sleep(0.1)
    counts = [accepted(sock) for sock in listeners]
    assert sum(counts) == 200 and min(counts) >= 20, counts
    assert accepted(shared) == 0
    for sock in [*clients, *listeners, shared]:
        sock.close()


def test_uvicorn_still_starts_and_completes_requests_as_the_shedding_reads_it():
    """What the protocol's shedding and REQUEST_CONNECTION rely on; if this moves, the protocol is off."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from credit_pd.serving.patches import uvicorn_runs_requests_as_written

    assert uvicorn_runs_requests_as_written(HttpToolsProtocol)

    class Moved(HttpToolsProtocol):
        def _start_asgi_task(self, cycle, app) -> None:  # a uvicorn that starts its tasks elsewhere
            self.loop.call_soon(self.loop.create_task, cycle.run_asgi(app))

    assert not uvicorn_runs_requests_as_written(Moved)


# ------------------------------------------------------- keep-alive connections moved on ----------


class StubCensus:
    """A census that says what the test wants (worker.ConnectionCensus is tested in test_worker.py)."""

    def __init__(self, hand_over: bool) -> None:
        self.hand_over = hand_over
        self.leaving = 0
        self.published: list[int] = []

    def publish(self, connections: int) -> None:
        self.published.append(connections - self.leaving)

    def hands_over(self, connections: int) -> bool:
        return self.hand_over


def moved_total() -> float:
    from prometheus_client import REGISTRY

    from credit_pd.serving.patches import MOVED_METRIC

    return REGISTRY.get_sample_value(f"{MOVED_METRIC}_total") or 0.0


def test_an_over_full_worker_answers_an_api_request_with_connection_close_and_publishes_its_count():
    from credit_pd.serving.patches import moved_counter

    moved_counter()
    before = moved_total()
    census = StubCensus(hand_over=True)
    with served_in_a_thread(BodyApp(), census=census) as ((host, port), _):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(f"GET /readyz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status, _, closed = answer(sock)
            assert status == "HTTP/1.1 200 OK" and not closed, "only API routes are moved"
            sock.sendall(post_head(host, 5) + b"hello")
            status, rest, closed = answer(sock)
            assert status == "HTTP/1.1 200 OK" and b"connection: close" in rest.lower() and closed
        deadline = time.monotonic() + 5
        while census.published[-1:] != [0] and time.monotonic() < deadline:
            time.sleep(0.02)
    assert census.published == [1, 0] and census.leaving == 0 and moved_total() == before + 1


def test_a_worker_that_is_not_over_full_keeps_its_connections():
    census = StubCensus(hand_over=False)
    with served_in_a_thread(BodyApp(), census=census) as ((host, port), _):
        with socket.create_connection((host, port)) as sock:
            for _ in range(3):
                sock.sendall(post_head(host, 5) + b"hello")
                status, rest, closed = answer(sock)
                assert status == "HTTP/1.1 200 OK" and b"connection: close" not in rest.lower() and not closed
    assert census.leaving == 0 and census.published[:1] == [1]


def test_a_request_pipelined_behind_a_moved_one_keeps_the_connection_open():
    """Closing after the first answer would lose the second request, sent in the same packet."""
    census = StubCensus(hand_over=True)
    with served_in_a_thread(BodyApp(), census=census) as ((host, port), _):
        with socket.create_connection((host, port)) as sock:
            sock.sendall((post_head(host, 5) + b"hello") * 2)
            sock.settimeout(5)
            data = b""
            while data.count(b"HTTP/1.1 200 OK") < 2 or not data.endswith(b"5"):
                chunk = sock.recv(65_536)
                assert chunk, f"closed after {data.count(b'HTTP/1.1 200')} answer(s): {data!r}"
                data += chunk
            assert b"connection: close" not in data.lower(), "both answers keep the connection"
            assert census.leaving == 0
            sock.sendall(post_head(host, 5) + b"hello")  # alone: moved
            status, rest, closed = answer(sock)
            assert status == "HTTP/1.1 200 OK" and b"connection: close" in rest.lower() and closed
