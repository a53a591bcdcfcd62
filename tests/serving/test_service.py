"""service.py over HTTP: in-process through the ASGI app, and against a real `bentoml serve`.

The in-process tests import service.py with the session's trained model. The real-server tests
start one `bentoml serve` subprocess for the module, serving a model trained on the small sample
plus the 10,000 real rows (appended unlabelled, so `train.py` writes their PDs): the real rows
are posted exactly as pandas reads them and must score as training scored them. Schemathesis
runs against the same server (the test that keeps /docs.json honest).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest

from credit_pd.client import requests_from_frame
from credit_pd.dataset import labelled_mask, load_dataset
from tests.conftest import REPO_ROOT, SHARED_REAL_ROWS
from tests.serving.conftest import isolated_metrics
from tests.serving_process import bentoml_serve

MAX_PER_REQUEST = 200
ASGI_MAX_BYTES = 1_000_000
BENTOML_EXCEPTION_LOGGER = "bentoml._internal.server.http_app"


@pytest.fixture(scope="module")
def example_requests(small_sample_path, schema) -> list[dict]:
    frame = load_dataset(small_sample_path, schema)
    return requests_from_frame(frame[~labelled_mask(frame, schema)].head(300), schema)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def import_service(env: dict[str, str | None], patch: pytest.MonkeyPatch):
    """A fresh import of service.py under `env` (None unsets a variable)."""
    for key, value in env.items():
        if value is None:
            patch.delenv(key, raising=False)
        else:
            patch.setenv(key, value)
    sys.modules.pop("service", None)
    return importlib.import_module("service")


# ---------------------------------------------------------------- in-process (ASGI) -----------


@pytest.fixture(scope="module")
def asgi_service(trained_run, monkeypatch_module):
    service = import_service(
        {
            "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
            "CREDIT_PD_MAX_APPLICATIONS_PER_REQUEST": str(MAX_PER_REQUEST),
            "CREDIT_PD_MAX_REQUEST_BYTES": str(ASGI_MAX_BYTES),
        },
        monkeypatch_module,
    )
    yield service
    sys.modules.pop("service", None)


@pytest.fixture(scope="module")
def asgi_client(asgi_service):
    from starlette.testclient import TestClient

    with isolated_metrics(), TestClient(asgi_service.CreditPDService.to_asgi()) as client:
        yield client


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def bentoml_exception_log():
    logger = logging.getLogger(BENTOML_EXCEPTION_LOGGER)
    handler = Records()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def test_asgi_single_application_object(asgi_client, example_requests, trained_run):
    response = asgi_client.post("/predict", json={"applications": example_requests[0]})
    assert response.status_code == 200, response.text
    [result] = response.json()
    assert result["uuid"] == example_requests[0]["uuid"]
    assert result["model_tag"] == trained_run.model_tag
    assert 0 < result["pd"] < 1 and len(result["explanation"]["contributions"]) == 10
    assert result["grade"] in trained_run.model.master_scale.names and len(result["reasons"]) <= 4
    assert re.fullmatch(r"[A-Za-z0-9._:\-]{1,128}", response.headers["x-request-id"])


def test_asgi_reasons_and_grade_come_also_without_explanation_and_max_reasons_cuts_them(asgi_client, example_requests):
    batch = [
        r | {"explain": False, "max_reasons": limit}
        for r, limit in zip(example_requests[:30], [0, 1, 2, 4, 13] * 6, strict=False)
    ]
    full = asgi_client.post(
        "/predict", json={"applications": [r | {"max_reasons": 13} for r in example_requests[:30]]}
    ).json()
    results = asgi_client.post("/predict", json={"applications": batch}).json()
    for sent, result, unlimited in zip(batch, results, full, strict=False):
        assert result["explanation"] is None and result["grade"] == unlimited["grade"]
        assert result["reasons"] == unlimited["reasons"][: sent["max_reasons"]]
    assert any(len(r["reasons"]) == 4 for r in results)
    negative = asgi_client.post("/predict", json={"applications": [example_requests[0] | {"max_reasons": -1}]})
    assert negative.status_code == 400 and negative.json()["detail"][0]["loc"][-1] == "max_reasons"


def test_asgi_pd_equals_predictions_csv(asgi_client, example_requests, trained_run):
    csv = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    batch = [r | {"explain": False} for r in example_requests[:100]]
    results = asgi_client.post("/predict", json={"applications": batch}).json()
    for result in results:
        assert result["explanation"] is None
        assert abs(result["pd"] - csv[result["uuid"]]) < 1e-9


def test_asgi_four_spellings_of_a_status_code_give_identical_pds(asgi_client, example_requests):
    base = example_requests[0] | {"explain": False}
    spellings = [1, 1.0, "1", "1.0"]
    answers = [
        asgi_client.post(
            "/predict", json={"applications": base | {"status_last_archived_0_24m": s, "account_status": s}}
        )
        for s in spellings
    ]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    pds = [a.json()[0]["pd"] for a in answers]
    assert len(set(pds)) == 1, pds
    assert all(a.json()[0]["warnings"] == [] for a in answers)


def test_asgi_unseen_category_policy(asgi_client, example_requests):
    unseen = example_requests[0] | {"merchant_category": "Moon rocks"}
    rejected = asgi_client.post("/predict", json={"applications": unseen})
    assert rejected.status_code == 400
    [error] = rejected.json()["detail"]
    assert error["loc"] == ["applications", 0, "merchant_category"] and error["type"] == "unseen_category"
    scored = asgi_client.post("/predict", json={"applications": unseen | {"unseen_categories": "score_as_missing"}})
    assert scored.status_code == 200
    assert "not seen in training; scored as missing" in scored.json()[0]["warnings"][0]


def test_asgi_openapi_is_the_contracts_document(asgi_client, asgi_service):
    spec = asgi_client.get("/docs.json").json()
    operation = spec["paths"]["/predict"]["post"]
    assert operation["requestBody"]["required"] is True
    assert "/livez" in spec["paths"] and "/readyz" in spec["paths"]
    text = json.dumps(spec)
    assert '"const"' not in text
    assert "Days the account spent in debt collection" in text
    assert (
        spec["components"]["schemas"]["PredictRequest"]["properties"]["applications"]["anyOf"][1]["maxItems"]
        == MAX_PER_REQUEST
    )
    assert spec["components"]["schemas"]["Application"]["example"] == asgi_service.Application.example_application


@pytest.mark.parametrize(
    "headers, body",
    [
        ({"content-type": "text/plain"}, b'{"applications": {}}'),
        ({"content-type": "application/x-www-form-urlencoded"}, b"applications=1"),
        ({"content-type": "multipart/form-data"}, b"--x\r\n"),  # no boundary: was a 500
        (
            {"content-type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n',
        ),
        ({}, b'{"applications": {}}'),
    ],
    ids=["text-plain", "form", "multipart-no-boundary", "multipart", "no-content-type"],
)
def test_asgi_non_json_content_type_is_415(asgi_client, headers, body):
    response = asgi_client.post("/predict", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["error"]


def test_asgi_body_over_the_limit_is_413_with_or_without_content_length(asgi_client, example_requests):
    big = json.dumps({"applications": example_requests[:1] * 800}).encode()
    assert len(big) > ASGI_MAX_BYTES
    declared = asgi_client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and declared.headers["connection"] == "close"

    def chunks():
        for start in range(0, len(big), 65_536):
            yield big[start : start + 65_536]

    chunked = asgi_client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    small = json.dumps({"applications": example_requests[:2]}).encode()
    assert (
        asgi_client.post(
            "/predict", content=iter([small[:100], small[100:]]), headers={"content-type": "application/json"}
        ).status_code
        == 200
    )


def test_asgi_duplicate_key_is_400_naming_its_path(asgi_client, example_requests):
    """The last key would win in BentoML's parser: age 20 then 90 scored age 90 (issue 19)."""
    application = json.dumps(example_requests[0] | {"age": 20})
    body = '{"applications": [' + application[:-1] + ', "age": 90}]}'
    response = asgi_client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    [detail] = response.json()["detail"]
    assert detail["type"] == "duplicate_key" and detail["loc"] == ["applications", 0, "age"]
    assert "$.applications[0].age" in detail["msg"]


def test_asgi_the_body_is_parsed_once(asgi_client, asgi_service, example_requests, monkeypatch):
    """BentoML calls the input spec's from_http_request, which validates RequestLimits' document:
    a valid request never reaches the JSON-mode parse (it fails here), and a rejected one does."""
    request_model = asgi_service.PredictRequest
    json_parses = []

    def counted(body, *args, **kwargs):
        json_parses.append(body)
        raise AssertionError("the body was parsed a second time")

    monkeypatch.setattr(request_model, "model_validate_json", counted)
    good = asgi_client.post("/predict", json={"applications": example_requests[:3]})
    assert good.status_code == 200 and len(good.json()) == 3 and json_parses == []
    monkeypatch.undo()
    bad = asgi_client.post("/predict", json={"applications": [example_requests[0], 7]})
    assert bad.status_code == 400 and bad.json()["detail"][0]["msg"] == "Input should be an object"


def test_asgi_unknown_top_level_key_is_400(asgi_client, example_requests):
    response = asgi_client.post("/predict", json={"applications": example_requests[0], "explain": False})
    assert response.status_code == 400
    assert (
        response.json()["detail"][0]["loc"] == ["explain"] and response.json()["detail"][0]["type"] == "extra_forbidden"
    )


def test_asgi_too_many_applications_rejected_before_validating_them(asgi_client):
    response = asgi_client.post("/predict", json={"applications": [{"junk": 1}] * (MAX_PER_REQUEST + 1)})
    assert response.status_code == 400
    assert [d["type"] for d in response.json()["detail"]] == ["too_long"]


def test_client_errors_log_one_warning_with_locations_and_no_values(
    asgi_client, example_requests, bentoml_exception_log
):
    secret = "SECRET-VALUE-1234"
    bad = [example_requests[0] | {"uuid": secret, "age": -5, "merchant_group": secret}] * 3
    assert asgi_client.post("/predict", json={"applications": bad}).status_code == 400
    [record] = bentoml_exception_log
    assert record.levelno == logging.WARNING and record.exc_info is None
    message = record.getMessage()
    assert (
        "applications.0.age (greater_than_equal)" in message
        and "applications.2.merchant_group (unseen_category)" in message
    )
    assert secret not in message and "-5" not in message


def test_server_errors_keep_their_traceback(asgi_client, example_requests, bentoml_exception_log, monkeypatch):
    from credit_pd.serving.scorer import PDScorer

    def broken(self, applications):
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(PDScorer, "answers", broken)  # the method the service calls
    response = asgi_client.post("/predict", json={"applications": example_requests[0]})
    assert response.status_code == 500
    [record] = [r for r in bentoml_exception_log if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "scorer exploded" in str(record.exc_info[1])


def test_bentoml_still_logs_rejections_where_the_filter_listens():
    """Fails when BentoML moves its request-error logging: then 4xx would be logged unfiltered."""
    from credit_pd.serving.patches import quiet_client_error_logs

    assert quiet_client_error_logs(), "BentoML's api_endpoint_wrapper no longer logs through http_app.log_exception"
    import inspect

    from _bentoml_impl.server.app import ServiceAppFactory

    source = inspect.getsource(ServiceAppFactory.api_endpoint_wrapper)
    assert "except ValidationError" in source and "log_exception(request)" in source


@pytest.fixture(scope="module")
def german_run(tmp_path_factory, fast_training_config):
    from credit_pd.training.run import run_training
    from tests.conftest import FIXTURES
    from tests.training.test_run import write_german_credit

    out = tmp_path_factory.mktemp("german")
    write_german_credit(out / "german.csv")
    return run_training(
        out / "german.csv",
        FIXTURES / "german_credit_schema.yaml",
        out / "pred.csv",
        out / "reports",
        fast_training_config,
        progress=False,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_a_model_of_another_schema_is_served_with_its_own_request_model(german_run, tmp_path):
    """No schema setting and no model tag: the latest stored model (German credit) defines the API."""
    env = {key: value for key, value in os.environ.items() if key != "CREDIT_PD_MODEL_TAG"} | {"CREDIT_PD_WORKERS": "1"}
    with bentoml_serve("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as base:
        application = httpx.get(f"{base}/docs.json").json()["components"]["schemas"]["Application"]
        assert {"duration_months", "checking_status", "purpose", "foreign_worker"} <= set(application["properties"])
        assert "age" not in application["properties"]
        row = {
            "duration_months": 24,
            "credit_amount": 2500.0,
            "checking_status": "<0",
            "purpose": "car",
            "foreign_worker": True,
        }
        answer = httpx.post(f"{base}/predict", json={"applications": row}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()[0]["model_tag"] == german_run.model_tag
        klarna = httpx.post(f"{base}/predict", json={"applications": row | {"age": 30}}, timeout=30)
        assert klarna.status_code == 400 and klarna.json()["detail"][0]["loc"] == ["applications", 0, "age"]


# ---------------------------------------------------------------- real server ----------------


@pytest.fixture(scope="module")
def real_rows_run(small_sample_path, tmp_path_factory, fast_training_config):
    """Training on the small sample + the 10,000 real rows appended as unlabelled rows.

    The dataset is written to a temporary folder (the shared file is never copied into the
    project); `train.py` then writes a PD for every real row.
    """
    if not SHARED_REAL_ROWS.is_file():
        pytest.skip(f"shared real rows not found at {SHARED_REAL_ROWS}")
    from credit_pd.schema import DEFAULT_SCHEMA_PATH
    from credit_pd.training.run import run_training

    out = tmp_path_factory.mktemp("real-rows-run")
    sample = small_sample_path.read_text()
    real = SHARED_REAL_ROWS.read_text().splitlines(keepends=True)
    assert real[0] == sample.splitlines(keepends=True)[0], "real rows and sample differ in their header"
    (out / "dataset.csv").write_text(sample + ("" if sample.endswith("\n") else "\n") + "".join(real[1:]))
    return run_training(
        out / "dataset.csv",
        DEFAULT_SCHEMA_PATH,
        out / "pred.csv",
        out / "reports",
        fast_training_config,
        progress=False,
    )


@pytest.fixture(scope="module")
def served_records(tmp_path_factory) -> Path:
    """Where the real server writes its decision records (every answer of every test against it)."""
    return tmp_path_factory.mktemp("records") / "decisions.jsonl"


@pytest.fixture(scope="module")
def server(real_rows_run, tmp_path_factory, served_records):
    env = {
        **os.environ,
        "CREDIT_PD_MODEL_TAG": real_rows_run.model_tag,
        "CREDIT_PD_DECISION_RECORDS_PATH": str(served_records),
        "CREDIT_PD_MAX_APPLICATIONS_PER_REQUEST": str(MAX_PER_REQUEST),
        "CREDIT_PD_WORKERS": "1",
        # These tests check answers, not load shedding: on a CI machine shared with other jobs the
        # default 500 ms budget sheds some of 200 concurrent requests (503 + Retry-After).
        "CREDIT_PD_MAX_LATENCY_MS": "10000",
    }
    with bentoml_serve(
        "service:CreditPDService", env, REPO_ROOT, tmp_path_factory.mktemp("serve") / "serve.log"
    ) as base:
        yield base


def worker_of(base: str) -> psutil.Process:
    """The service worker behind `base` (the process that loaded the model)."""
    port = base.rsplit(":", 1)[1]
    [server] = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and "serve" in p.info["cmdline"] and port in p.info["cmdline"] and p.pid != os.getpid()
    ]
    [worker] = [c for c in server.children(recursive=True) if "worker" in " ".join(c.cmdline())]
    return worker


@pytest.mark.integration
@pytest.mark.slow
def test_health_and_metrics_endpoints(server):
    for path in ("/livez", "/healthz", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(server + path, timeout=10).status_code == 200, path


@pytest.mark.integration
@pytest.mark.slow
def test_single_and_batch(server, example_requests):
    single = httpx.post(server + "/predict", json={"applications": example_requests[0]}, timeout=30)
    assert single.status_code == 200 and len(single.json()) == 1
    batch = httpx.post(server + "/predict", json={"applications": example_requests[:150]}, timeout=30)
    assert batch.status_code == 200
    assert [r["uuid"] for r in batch.json()] == [r["uuid"] for r in example_requests[:150]]


BAD_REQUESTS = {
    "malformed json": (b'{"applications": [', "json_invalid"),
    "string for number": ({"age": "forty"}, "age"),
    "negative age": ({"age": -5}, "age"),
    "nan": (b"NaN", "age"),
    "infinity": (b"Infinity", "age"),
    "unknown field": ({"shoe_size": 44}, "shoe_size"),
    "null in required": ({"merchant_group": None}, "merchant_group"),
    "number for category": ({"merchant_group": 7}, "merchant_group"),
    "unseen category": ({"merchant_group": "Spaceships"}, "merchant_group"),
    "malformed code": ({"account_status": "01"}, "account_status"),
    "bad top_k": ({"top_k": "some"}, "top_k"),
}


def bad_body(example: dict, change) -> bytes:
    if isinstance(change, bytes) and change.startswith(b"{"):
        return change
    if isinstance(change, bytes):  # a JSON literal Python's json would write for a float
        apps = [example, example | {"age": "__LITERAL__"}]
        return json.dumps({"applications": apps}).replace('"__LITERAL__"', change.decode()).encode()
    return json.dumps({"applications": [example, example | change]}).encode()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_gets_4xx_naming_the_field(server, example_requests, case):
    change, field = BAD_REQUESTS[case]
    response = httpx.post(
        server + "/predict",
        content=bad_body(example_requests[0], change),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    text = response.text
    assert field in text
    if case != "malformed json":
        assert re.search(r'"loc":\s*\["applications",\s*1', text), text  # the list index of the bad one
    # and the service keeps answering correctly afterwards
    assert httpx.post(server + "/predict", json={"applications": example_requests[1]}, timeout=30).status_code == 200


@pytest.mark.integration
@pytest.mark.slow
def test_empty_and_oversized_lists_rejected(server, example_requests):
    assert httpx.post(server + "/predict", json={"applications": []}, timeout=30).status_code == 400
    too_many = [example_requests[0]] * (MAX_PER_REQUEST + 1)
    response = httpx.post(server + "/predict", json={"applications": too_many}, timeout=30)
    assert response.status_code == 400 and f"at most {MAX_PER_REQUEST}" in response.text


def batch_histogram_total(metrics_text: str) -> tuple[float, float]:
    """(sum of batch sizes, number of batches) from BentoML's adaptive_batch_size histogram."""
    total = count = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("bentoml_service_adaptive_batch_size_sum") and 'method_name="predict"' in line:
            total += float(line.rsplit(" ", 1)[1])
        if line.startswith("bentoml_service_adaptive_batch_size_count") and 'method_name="predict"' in line:
            count += float(line.rsplit(" ", 1)[1])
    return total, count


@pytest.mark.integration
@pytest.mark.slow
def test_concurrent_requests_are_merged_into_batches(server, example_requests):
    before_sum, before_count = batch_histogram_total(httpx.get(server + "/metrics").text)
    n_requests = 200

    async def fire() -> list[int]:
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            calls = [
                client.post("/predict", json={"applications": example_requests[i % 300]}) for i in range(n_requests)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(fire())
    assert statuses.count(200) == n_requests, {code: statuses.count(code) for code in set(statuses)}
    after_sum, after_count = batch_histogram_total(httpx.get(server + "/metrics").text)
    requests_seen, batches = after_sum - before_sum, after_count - before_count
    assert requests_seen == n_requests
    assert batches < n_requests / 2, f"{n_requests} concurrent requests ran in {batches} batches: not merged"


def read_status_line(sock: socket.socket, timeout_s: float) -> str:
    sock.settimeout(timeout_s)
    return sock.recv(256).split(b"\r\n", 1)[0].decode()


@pytest.mark.integration
@pytest.mark.slow
def test_60_mb_body_gets_413_before_it_is_read_and_the_worker_does_not_grow(server, example_requests):
    worker = worker_of(server)
    host, port = server.removeprefix("http://").split(":")
    before = worker.memory_info().rss
    # Only the headers are sent: the 413 can only arrive if the server answers without the body.
    with socket.create_connection((host, int(port))) as sock:
        started = time.perf_counter()
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {60 * 1024 * 1024}\r\n\r\n".encode()
        )
        status = read_status_line(sock, timeout_s=10)
        elapsed = time.perf_counter() - started
    assert status.startswith("HTTP/1.1 413"), status
    assert elapsed < 1.0, f"413 took {elapsed:.2f}s"
    time.sleep(0.2)
    grown = worker.memory_info().rss - before
    assert grown < 1_000_000, f"worker RSS grew by {grown / 1e6:.1f} MB on a refused 60 MB body"
    # Chunked: the server counts bytes as they arrive and stops at its limit (8 MiB), not at 60 MB.
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"[" * 1_048_576
        status = ""
        for _ in range(60):
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
        status = read_status_line(sock, timeout_s=10)
    assert status.startswith("HTTP/1.1 413"), status
    grown = worker.memory_info().rss - before
    limit = 8 * 1024 * 1024  # the default max_request_bytes: at most that much is ever held
    assert grown < limit + 2_000_000, f"worker RSS grew by {grown / 1e6:.1f} MB on a chunked 60 MB body"
    assert httpx.post(server + "/predict", json={"applications": example_requests[0]}, timeout=30).status_code == 200


def applications_as_pandas_reads_them(path: Path) -> list[dict]:
    """What any client does: read the CSV with pandas, post the rows as JSON (NaN -> null)."""
    frame = pd.read_csv(path, sep=";")  # "NA" is read as NaN; numbers (status codes too) as numbers
    features = frame.drop(columns=["default"])
    return [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in features.to_dict("records")
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_real_rows_as_pandas_reads_them_score_as_training_scored_them(server, real_rows_run):
    applications = applications_as_pandas_reads_them(SHARED_REAL_ROWS)
    assert any(isinstance(a["account_status"], float) for a in applications)  # numbers, as pandas gives them
    expected = pd.read_csv(real_rows_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    from credit_pd.model_store import load_from_store

    stored = load_from_store(real_rows_run.model_tag)  # the reason codes and grades travel in the store entry
    texts, grades = (
        dict(zip(stored.reason_codes.codes, stored.reason_codes.texts, strict=False)),
        set(stored.master_scale.names),
    )
    got: dict[str, float] = {}
    with httpx.Client(base_url=server, timeout=60) as client:
        for start in range(0, len(applications), MAX_PER_REQUEST):
            chunk = [a | {"top_k": 3} for a in applications[start : start + MAX_PER_REQUEST]]
            response = client.post(
                "/predict", content=json.dumps({"applications": chunk}), headers={"content-type": "application/json"}
            )
            assert response.status_code == 200, response.text[:500]
            for sent, result in zip(chunk, response.json(), strict=False):
                assert result["uuid"] == sent["uuid"]
                assert result["warnings"] == [], (sent["uuid"], result["warnings"])
                assert len(result["explanation"]["contributions"]) == 3
                assert result["grade"] in grades and 0 <= len(result["reasons"]) <= 4
                contributions = [reason["contribution"] for reason in result["reasons"]]
                assert all(c > 0 for c in contributions) and contributions == sorted(contributions, reverse=True)
                assert all(texts[reason["code"]] == reason["text"] for reason in result["reasons"])
                got[result["uuid"]] = result["pd"]
    assert len(got) == 10_000
    difference = (pd.Series(got) - expected.loc[list(got)]).abs()
    assert difference.max() < 1e-9, difference.sort_values().tail()


SCHEMATHESIS_EXAMPLES = 300


@pytest.mark.integration
@pytest.mark.slow
def test_schemathesis_finds_the_openapi_document_true_to_the_server(server, tmp_path):
    """schemathesis: every check, examples + coverage + fuzzing phases, zero failures."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{server}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        str(SCHEMATHESIS_EXAMPLES),
        "--seed",
        "20261125",
        "--generation-database",
        "none",
        "--workers",
        "2",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its .schemathesis/ cache
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) >= SCHEMATHESIS_EXAMPLES, output[
        -3000:
    ]
    print(output[output.find("SUMMARY") :])  # the counts, in the -s / -rA output


def test_predict_is_not_traced_unless_asked_for(trained_run):
    """Fails when BentoML stops reading the service's `tracing.excluded_urls` (then every request
    would pay for OpenTelemetry spans again)."""
    import importlib
    import sys

    from bentoml._internal.configuration.containers import BentoMLContainer

    from credit_pd.serving.settings import ServingSettings

    assert ServingSettings().request_tracing is False
    service = sys.modules.get("service") or importlib.import_module("service")
    assert service.CreditPDService.config["tracing"] == {"excluded_urls": ["/predict"]}
    service.CreditPDService.inject_config()  # what `bentoml serve` does before starting workers
    excluded = BentoMLContainer.tracing_excluded_urls.get()
    assert excluded.url_disabled("http://127.0.0.1:3000/predict")
    assert not excluded.url_disabled("http://127.0.0.1:3000/readyz")


@pytest.mark.integration
@pytest.mark.slow
def test_the_real_servers_decision_records_replay_identically(server, served_records, example_requests):
    """Every answer the real server gave in this module (real rows, schemathesis, bad requests) left a record; all replay."""
    from credit_pd.replay import replay

    response = httpx.post(
        server + "/predict",
        json={"applications": example_requests[:5]},
        headers={"x-request-id": "replay-test-1"},
        timeout=30,
    )
    assert response.status_code == 200 and response.headers["x-request-id"] == "replay-test-1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served_records.read_text().count('"replay-test-1"') < 5:
        time.sleep(0.2)
    lines = served_records.read_text(encoding="utf-8").split(
        "\n"
    )  # records end in \n only; U+2028 etc. may be inside values
    assert sum('"request_id":"replay-test-1"' in line for line in lines) == 5
    summary = replay(lines)
    assert summary.all_identical and summary.counts["identical"] == len([line for line in lines if line]), (
        summary.report()
    )
    print(f"{len(lines):,} records of the real server replayed identically")


@pytest.mark.integration
@pytest.mark.slow
def test_the_readme_request_gets_the_readme_answer(server):
    """README.md's curl request, run as written (but for the port) against a real server: the answer
    has the shape the README shows (its numbers belong to another model version)."""
    from tests.test_readme import readme_answer, readme_request

    command = readme_request().replace("localhost:3000", server.removeprefix("http://"))
    result = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer, shown = json.loads(result.stdout), readme_answer()
    assert [sorted(a) for a in answer] == [sorted(a) for a in shown]
    for got, documented in zip(answer, shown, strict=True):
        assert got["uuid"] == documented["uuid"]
        assert sorted(got["explanation"]) == sorted(documented["explanation"])
        assert len(got["explanation"]["contributions"]) == len(documented["explanation"]["contributions"])
        assert all(
            sorted(r) == ["code", "contribution", "features", "text"] and r["contribution"] > 0 for r in got["reasons"]
        )
