"""A real `bentoml serve` of the session's trained model with 2 workers, and fresh applications.

Two workers, because the drift counters must add up across BentoML's worker processes
(Prometheus multiprocess mode); the applications come from a new sample (another seed), i.e.
the training population but rows the model never saw.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.serving_process import bentoml_serve

FRESH_ROWS = 3_000
FRESH_SEED = 20261125


@pytest.fixture(scope="session")
def fresh_applications(schema, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    from credit_pd.client import requests_from_frame
    from credit_pd.config import SampleConfig
    from credit_pd.dataset import load_dataset
    from credit_pd.training.sample import write_sample

    path = tmp_path_factory.mktemp("fresh") / "dataset.csv"
    write_sample(path, SampleConfig(n_rows=FRESH_ROWS, seed=FRESH_SEED))
    return requests_from_frame(load_dataset(path, schema), schema)


@pytest.fixture(scope="module")
def drift_server(trained_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        **os.environ,
        "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
        "CREDIT_PD_WORKERS": "2",
        "CREDIT_PD_MONITORING_ENABLED": "true",
    }
    log = Path(tmp_path_factory.mktemp("drift-serve")) / "bentoml-serve.log"
    with bentoml_serve("service:CreditPDService", env, REPO_ROOT, log) as base:
        yield base
