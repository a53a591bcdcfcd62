"""service.py over HTTP: in-process through the ASGI app, and against a real `bentoml serve`.

The real-server tests start one `bentoml serve` subprocess on a free port for the module, using
the model the session's training fixture put in the test's BentoML store.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import re
import sys

import httpx
import pandas as pd
import pytest

from credit_pd.training.dataset import labelled_mask, load_dataset
from credit_pd.client import requests_from_frame

from tests.conftest import REPO_ROOT
from tests.serving_process import bentoml_serve

MAX_PER_REQUEST = 200


@pytest.fixture(scope="module")
def example_requests(small_sample_path, schema) -> list[dict]:
    frame = load_dataset(small_sample_path, schema)
    return requests_from_frame(frame[~labelled_mask(frame, schema)].head(300), schema)


@pytest.fixture(scope="module")
def service_env(trained_run) -> dict[str, str]:
    return {
        **os.environ,
        "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
        "CREDIT_PD_MAX_APPLICATIONS_PER_REQUEST": str(MAX_PER_REQUEST),
        "CREDIT_PD_WORKERS": "1",
    }


# ---------------------------------------------------------------- in-process (ASGI) -----------

@pytest.fixture(scope="module")
def asgi_client(service_env, monkeypatch_module):
    from starlette.testclient import TestClient

    for key in ("CREDIT_PD_MODEL_TAG", "CREDIT_PD_MAX_APPLICATIONS_PER_REQUEST"):
        monkeypatch_module.setenv(key, service_env[key])
    sys.modules.pop("service", None)
    service = importlib.import_module("service")
    with TestClient(service.CreditPDService.to_asgi()) as client:
        yield client
    sys.modules.pop("service", None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_asgi_single_application_object(asgi_client, example_requests, trained_run):
    response = asgi_client.post("/predict", json={"applications": example_requests[0]})
    assert response.status_code == 200, response.text
    [result] = response.json()
    assert result["uuid"] == example_requests[0]["uuid"]
    assert result["model_tag"] == trained_run.model_tag
    assert 0 < result["pd"] < 1 and len(result["explanation"]["contributions"]) == 10


def test_asgi_pd_equals_predictions_csv(asgi_client, example_requests, trained_run):
    csv = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    batch = [r | {"explain": False} for r in example_requests[:100]]
    results = asgi_client.post("/predict", json={"applications": batch}).json()
    for result in results:
        assert result["explanation"] is None
        assert abs(result["pd"] - csv[result["uuid"]]) < 1e-9


def test_asgi_openapi_documents_the_fields(asgi_client):
    spec = asgi_client.get("/docs.json").json()
    text = json.dumps(spec)
    assert "/predict" in spec["paths"]
    assert "Days the account spent in debt collection" in text


# ---------------------------------------------------------------- real server ----------------

@pytest.fixture(scope="module")
def server(service_env, tmp_path_factory):
    with bentoml_serve("service:CreditPDService", service_env, REPO_ROOT, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


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
    response = httpx.post(server + "/predict", content=bad_body(example_requests[0], change),
                          headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= response.status_code < 500, response.text
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


@pytest.mark.integration
@pytest.mark.slow
def test_unseen_category_gets_200_with_warning(server, example_requests):
    response = httpx.post(server + "/predict", json={"applications": example_requests[0] | {"merchant_category": "Moon rocks"}}, timeout=30)
    assert response.status_code == 200
    assert "not seen in training" in response.json()[0]["warnings"][0]


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
            calls = [client.post("/predict", json={"applications": example_requests[i % 300]}) for i in range(n_requests)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(fire())
    assert statuses.count(200) == n_requests
    after_sum, after_count = batch_histogram_total(httpx.get(server + "/metrics").text)
    requests_seen, batches = after_sum - before_sum, after_count - before_count
    assert requests_seen == n_requests
    assert batches < n_requests / 2, f"{n_requests} concurrent requests ran in {batches} batches: not merged"


@pytest.mark.integration
@pytest.mark.slow
def test_every_real_row_is_accepted_and_scored(server, real_rows_path, schema):
    frame = load_dataset(real_rows_path, schema)
    applications = requests_from_frame(frame, schema)
    scored = 0
    with httpx.Client(base_url=server, timeout=60) as client:
        for start in range(0, len(applications), MAX_PER_REQUEST):
            chunk = [a | {"top_k": 3} for a in applications[start:start + MAX_PER_REQUEST]]
            response = client.post("/predict", json={"applications": chunk})
            assert response.status_code == 200, response.text[:500]
            for sent, result in zip(chunk, response.json()):
                assert result["uuid"] == sent["uuid"]
                assert math.isfinite(result["pd"]) and 0 <= result["pd"] <= 1
                assert len(result["explanation"]["contributions"]) == 3
                scored += 1
    assert scored == len(frame) == 10_000
