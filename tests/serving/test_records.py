"""Decision records: one JSON line per scored application, the hash of the canonical input, request ids."""

from __future__ import annotations

import asyncio
import io
import logging
import os

import orjson
import pytest

from credit_pd.replay import RECORD_FIELDS, canonical_input, input_sha256
from credit_pd.serving.records import (
    DECISION_LOGGER,
    PIPE_BUF,
    DecisionRecorder,
    NullRecorder,
    RequestIdMiddleware,
    atomic_write_bytes,
    current_request_id,
    write_groups,
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


def test_canonical_bytes_of_validated_applications_are_the_canonical_input(model, trained_run, applications):
    """The recorder's one-step canonical form equals replay's, whatever spelling the client used."""
    recorder = DecisionRecorder(trained_run.model_tag, model.schema, handler=logging.NullHandler())
    raw = applications[0].model_dump(exclude={"uuid", "explain", "top_k", "max_reasons", "unseen_categories"})
    coded = next(name for name in model.encoder.categorical if model.encoder.numeric_coded(name))
    variants = [
        raw,
        {**raw, "age": 40, coded: 1},  # an integer for a number, a JSON number for a code
        {**raw, coded: "1.0", "has_paid": False},
        {spec.name: raw[spec.name] for spec in model.schema.features if not spec.nullable},  # the rest missing
    ]
    validated = [type(applications[0]).model_validate(v) for v in variants] + applications[:20]
    for app in validated:
        canonical = canonical_input(vars(app), model.schema)
        assert recorder.canonical_bytes(vars(app)) == orjson.dumps(canonical)
    assert orjson.loads(recorder.canonical_bytes(vars(validated[1])))["age"] == 40.0
    # The batch path cuts the same bytes out of each whole application's JSON.
    assert recorder.canonical_inputs([vars(app) for app in validated]) == [
        recorder.canonical_bytes(vars(app)) for app in validated
    ]


def test_the_batch_canonical_form_falls_back_when_the_features_are_not_one_run(model, trained_run, applications):
    """Dicts that are not a request model's fields (features reordered, keys missing) take the general path."""
    recorder = DecisionRecorder(trained_run.model_tag, model.schema, handler=logging.NullHandler())
    fields = vars(applications[0])
    reordered = dict(reversed(fields.items()))
    short = {name: fields[name] for name in model.schema.feature_names}
    tricky = {**fields, "uuid": ',"uuid": {"x": 1}'}  # a key's spelling inside a value is escaped, never a cut
    batch = [fields, short, tricky]
    assert recorder.canonical_inputs(batch) == [recorder.canonical_bytes(f) for f in batch]
    assert recorder.canonical_inputs([reordered]) == [recorder.canonical_bytes(fields)]
    assert recorder.canonical_inputs([]) == []


class _Messages(logging.Handler):
    """Keeps every message it is handed (a handler without a stream: pipe-sized writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_records_reach_the_handler_in_writes_no_larger_than_a_pipe_takes_atomically(model, trained_run, applications):
    handler = _Messages()
    scorer = PDScorer(
        model, trained_run.model_tag, recorder=DecisionRecorder(trained_run.model_tag, model.schema, handler=handler)
    )
    scorer.answers(applications[:30])
    assert 1 < len(handler.messages) < 30  # grouped, not one write per record
    assert all(len(message.encode()) + 1 <= PIPE_BUF for message in handler.messages)
    lines = "\n".join(handler.messages).split("\n")
    assert [orjson.loads(line)["uuid"] for line in lines] == [app.uuid for app in applications[:30]]


def test_write_groups_keep_the_order_and_the_limit():
    lines = [b"a" * 10, b"b" * 10, b"c" * 25, b"d" * 3, b"e" * 40]
    groups = write_groups(lines, 30)
    assert groups == ["a" * 10 + "\n" + "b" * 10, "c" * 25 + "\n" + "d" * 3, "e" * 40]  # a longer line alone
    assert write_groups(lines, None) == ["\n".join(line.decode() for line in lines)]
    assert write_groups([], None) == [] and write_groups([], 30) == []


def test_only_a_regular_file_takes_a_whole_batch_in_one_write(tmp_path):
    with (tmp_path / "records.jsonl").open("w") as file:
        assert atomic_write_bytes([logging.StreamHandler(file)]) is None
    read, write = os.pipe()
    with os.fdopen(read), os.fdopen(write, "w") as pipe:
        assert atomic_write_bytes([logging.StreamHandler(pipe)]) == PIPE_BUF
    assert atomic_write_bytes([logging.StreamHandler(io.StringIO())]) == PIPE_BUF
    assert atomic_write_bytes([logging.NullHandler()]) == PIPE_BUF
