"""credit_pd.serving.middleware: duplicate JSON keys, the in-flight limit, the model-tag header.

Each middleware is driven directly through ASGI with a recording inner app, so a test sees
exactly what reaches BentoML and what the client gets.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from credit_pd.serving.middleware import (
    InFlightLimit,
    RequestLimits,
    ServedModelHeader,
    duplicate_key_location,
    json_path,
)


class Inner:
    """An ASGI app that records what it received and answers 200 (a POST after `delay_s`)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.delay_s = delay_s

    async def __call__(self, scope: dict, receive, send) -> None:
        message = await receive() if scope["method"] == "POST" else {"body": b""}
        self.bodies.append(message.get("body", b""))
        if self.delay_s and scope["method"] == "POST":
            await asyncio.sleep(self.delay_s)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


def http_scope(path: str = "/predict", method: str = "POST") -> dict:
    return {"type": "http", "method": method, "path": path, "headers": [(b"content-type", b"application/json")]}


async def call(app, scope: dict, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return (
        start["status"],
        dict(start.get("headers", [])),
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
    )


# ---------------------------------------------------------------- duplicate keys -------------

DUPLICATES = {
    "a feature": (b'{"applications": [{"uuid": "a", "age": 20, "age": 90}]}', ["applications", 0, "age"]),
    "the applications key": (b'{"applications": {"age": "x"}, "applications": [{"age": 30}]}', ["applications"]),
    "the unseen policy": (
        b'{"applications": {"unseen_categories": "reject", "unseen_categories": "score_as_missing"}}',
        ["applications", "unseen_categories"],
    ),
    "the third application": (
        b'{"applications": [{"a": 1}, {"a": 1}, {"a": 1, "b": 2, "a": 3}]}',
        ["applications", 2, "a"],
    ),
    "an escaped spelling": (b'{"applications": {"age": 20, "\\u0061ge": 90}}', ["applications", "age"]),
    "a nested object": (b'{"applications": {"x": {"y": [1, {"z": 1, "z": 2}]}}}', ["applications", "x", "y", 1, "z"]),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_a_duplicate_key_is_located(case):
    body, loc = DUPLICATES[case]
    assert duplicate_key_location(body).loc == loc


def test_the_first_duplicate_in_document_order_is_named():
    body = b'{"applications": [{"x": {"a": 1, "a": 2}}, {"b": 1, "b": 2}], "applications": []}'
    found = duplicate_key_location(body)
    assert found.loc == ["applications", 0, "x", "a"] and found.where == "$.applications[0].x.a"


def test_a_duplicate_the_standard_library_cannot_locate_is_named_by_line_and_column():
    body = b'{"applications": {"a": 1, "a": "\xff"}}'  # jiter stops at the key; json cannot decode the byte after it
    found = duplicate_key_location(body)
    assert found.loc == [] and found.where == '"a" at line 1 column 31'


@pytest.mark.parametrize(
    "body",
    [
        b'{"applications": [{"age": 20, "x": {"age": 1}}, {"age": 20}]}',  # same key in different objects
        b'{"applications": [{"a": 1, "A": 2}]}',  # keys are case-sensitive
        b'{"applications": [',  # not JSON: left to BentoML's json_invalid 400
        b"\xff\xfe{",  # not UTF-8
        b"[" * 100_000,  # nesting deeper than the parser's recursion limit
    ],
    ids=["same-key-in-siblings", "case", "malformed", "not-utf8", "deep"],
)
def test_bodies_without_a_duplicate_pass(body):
    assert duplicate_key_location(body) is None


def test_json_path_spelling():
    assert json_path(["applications", 0, "age"]) == "$.applications[0].age"
    assert json_path(["a b", 3]) == '$["a b"][3]'


def test_a_duplicate_key_is_a_400_naming_its_path_and_never_reaches_bentoml():
    inner = Inner()
    app = RequestLimits(inner, max_bytes=1_000_000)
    status, headers, body = asyncio.run(call(app, http_scope(), DUPLICATES["a feature"][0]))
    assert status == 400 and inner.bodies == []
    [detail] = json.loads(body)["detail"]
    assert detail["type"] == "duplicate_key" and detail["loc"] == ["applications", 0, "age"]
    assert "$.applications[0].age" in detail["msg"]
    ok = b'{"applications": [{"age": 20}]}'
    assert asyncio.run(call(app, http_scope(), ok))[0] == 200 and inner.bodies == [ok]


# ---------------------------------------------------------------- in-flight limit ------------


def test_requests_over_the_in_flight_limit_get_503_with_retry_after_at_once():
    inner = Inner(delay_s=0.3)
    app = InFlightLimit(inner, max_in_flight=3, retry_after_s=2)

    async def burst() -> tuple[list[int], list[float], list[dict]]:
        async def one() -> tuple[int, float, dict]:
            started = time.perf_counter()
            status, headers, _ = await call(app, http_scope())
            return status, time.perf_counter() - started, headers

        results = await asyncio.gather(*(one() for _ in range(10)))
        return [r[0] for r in results], [r[1] for r in results], [r[2] for r in results]

    statuses, seconds, headers = asyncio.run(burst())
    assert sorted(statuses) == [200] * 3 + [503] * 7
    shed = [(s, h) for status, s, h in zip(statuses, seconds, headers, strict=True) if status == 503]
    assert all(h[b"retry-after"] == b"2" for _, h in shed)
    assert max(s for s, _ in shed) < 0.1, "shed requests must not wait for the running ones"
    assert app.in_flight == 0
    # Once the running requests are done, new ones are taken again.
    assert asyncio.run(call(app, http_scope()))[0] == 200


def test_requests_whose_client_left_do_not_count_against_the_in_flight_limit():
    """Two running requests fill max_in_flight 2; once their connections close (clients that timed
    out in a flood) a third is admitted, while they still run; with the clients still there it is shed."""
    from credit_pd.serving.patches import REQUEST_CONNECTION

    class Connection:
        def __init__(self) -> None:
            self.closed = False

        def is_closing(self) -> bool:
            return self.closed

    inner = Inner(delay_s=0.3)
    app = InFlightLimit(inner, max_in_flight=2)

    async def scenario() -> list[int]:
        connections = [Connection(), Connection()]

        async def on(connection: Connection) -> tuple:
            REQUEST_CONNECTION.set(connection)
            return await call(app, http_scope())

        running = [asyncio.ensure_future(on(c)) for c in connections]
        await asyncio.sleep(0.05)
        shed = (await on(Connection()))[0]
        for connection in connections:
            connection.closed = True
        admitted = await on(Connection())
        await asyncio.gather(*running)
        return [shed, admitted[0]]

    assert asyncio.run(scenario()) == [503, 200]
    assert app.in_flight == 0


def test_health_and_metrics_are_never_shed():
    inner = Inner(delay_s=0.2)
    app = InFlightLimit(inner, max_in_flight=1)

    async def busy_then_probe() -> list[int]:
        running = asyncio.ensure_future(call(app, http_scope()))
        await asyncio.sleep(0.05)
        probes = [await call(app, http_scope(path, "GET")) for path in ("/readyz", "/livez", "/metrics")]
        shed = await call(app, http_scope())
        await running
        return [p[0] for p in probes] + [shed[0]]

    assert asyncio.run(busy_then_probe()) == [200, 200, 200, 503]


def test_an_answer_that_fails_still_frees_its_slot():
    async def broken(scope, receive, send):
        raise RuntimeError("scorer exploded")

    app = InFlightLimit(broken, max_in_flight=1)
    with pytest.raises(RuntimeError):
        asyncio.run(call(app, http_scope()))
    assert app.in_flight == 0


# ---------------------------------------------------------------- model tag header -----------


def test_health_answers_name_the_served_model_tag():
    app = ServedModelHeader(Inner(), model_tag="credit_pd_model:abc")
    _, headers, _ = asyncio.run(call(app, http_scope("/readyz", "GET")))
    assert headers[b"credit-pd-model-tag"] == b"credit_pd_model:abc"
    _, headers, _ = asyncio.run(call(app, http_scope()))
    assert b"credit-pd-model-tag" not in headers, "not on the scoring path"


def test_a_client_gone_before_its_body_ended_still_gets_an_answer_sent():
    """BentoML's request-timeout middleware waits for a response to start: without one, a request
    whose client went away held its task (and a graceful shutdown) for request_timeout_s."""
    inner = Inner()
    app = RequestLimits(inner, max_bytes=1_000_000)
    sent: list[dict] = []
    messages = iter([{"type": "http.request", "body": b'{"applic', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(http_scope(), receive, send))
    assert inner.bodies == [] and sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
