"""Decision records: one JSON line per scored application, the hash of the canonical input, request ids."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest

from credit_pd.replay import RECORD_FIELDS, canonical_input, input_sha256
from credit_pd.serving.records import (
    DECISION_LOGGER,
    DecisionRecorder,
    NullRecorder,
    RequestIdMiddleware,
    current_request_id,
)
from credit_pd.serving.scorer import PDScorer


def recording_scorer(model, tag: str, include_input: bool = True) -> tuple[PDScorer, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return PDScorer(
        model, tag, recorder=DecisionRecorder(tag, model.schema, include_input=include_input, handler=handler)
    ), out


def test_one_record_per_application_with_the_answer_and_the_hashed_input(model, trained_run, applications):
    scorer, out = recording_scorer(model, trained_run.model_tag)
    apps = [
        a.model_copy(update={"max_reasons": limit}) for a, limit in zip(applications[:30], [0, 2, 4] * 10, strict=False)
    ]
    answers = scorer.answers(apps)
    lines = out.getvalue().splitlines()
    assert len(lines) == len(apps)
    for line, app, answer in zip(lines, apps, answers, strict=False):
        record = orjson.loads(line)
        assert list(record) == list(RECORD_FIELDS)
        assert record["uuid"] == app.uuid and record["model_tag"] == trained_run.model_tag
        assert record["pd"] == answer["pd"] and record["grade"] == answer["grade"]
        assert record["reasons"] == [r["code"] for r in answer["reasons"]] and len(record["reasons"]) <= app.max_reasons
        assert record["max_reasons"] == app.max_reasons
        assert record["input"] == canonical_input(vars(app), model.schema)
        assert list(record["input"]) == list(model.schema.feature_names)
        assert record["input_sha256"] == input_sha256(record["input"])
        assert record["time"].endswith("+00:00") and record["request_id"] is None  # not inside an HTTP request


def test_hash_only_records_keep_the_hash_and_drop_the_input(model, trained_run, applications):
    scorer, out = recording_scorer(model, trained_run.model_tag, include_input=False)
    scorer.answers(applications[:3])
    records = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["input"] for r in records] == [None] * 3
    assert [r["input_sha256"] for r in records] == [
        input_sha256(canonical_input(vars(a), model.schema)) for a in applications[:3]
    ]


def test_the_hash_is_of_the_features_only_and_changes_with_any_of_them(model, applications):
    app = vars(applications[0])
    canonical = canonical_input(app, model.schema)
    assert canonical_input({**app, "uuid": "someone-else", "explain": False}, model.schema) == canonical
    assert input_sha256(canonical) == input_sha256(canonical_input(dict(reversed(list(app.items()))), model.schema))
    changed = {**canonical, "age": canonical["age"] + 1.0}
    assert input_sha256(changed) != input_sha256(canonical)
    assert canonical_input({**app, "age": 40}, model.schema)["age"] == 40.0  # numbers always as floats


def test_records_are_switched_off_with_the_null_recorder(model, trained_run, applications, capsys):
    PDScorer(model, trained_run.model_tag, recorder=NullRecorder()).answers(applications[:3])
    assert capsys.readouterr().out == ""


def test_the_decision_logger_does_not_propagate(model, trained_run):
    DecisionRecorder(trained_run.model_tag, model.schema, handler=logging.NullHandler())
    assert logging.getLogger(DECISION_LOGGER).propagate is False


def test_applications_learn_their_request_id_when_validated(application_model, applications):
    token = current_request_id.set("req-42")
    try:
        app = application_model.model_validate(vars(applications[0]))
    finally:
        current_request_id.reset(token)
    assert app._request_id == "req-42"
    assert vars(app) == vars(applications[0])  # the id is private: never a feature, never in the record's input


@pytest.mark.parametrize(("sent", "kept"), [("abc-123", True), ("x" * 129, False), ("bad id\n", False), (None, False)])
def test_request_id_middleware_keeps_a_plausible_client_id_or_makes_one(sent, kept):
    seen: list[str | None] = []

    async def app(scope, receive, send):
        seen.append(current_request_id.get())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"stale")]})

    sent_messages: list[dict] = []

    async def send(message):
        sent_messages.append(message)

    headers = [] if sent is None else [(b"x-request-id", sent.encode())]
    asyncio.run(RequestIdMiddleware(app)({"type": "http", "headers": headers}, None, send))
    [request_id] = seen
    assert (request_id == sent) is kept and request_id and len(request_id) <= 128
    assert [v for k, v in sent_messages[0]["headers"] if k == b"x-request-id"] == [request_id.encode()]
    assert current_request_id.get() is None
