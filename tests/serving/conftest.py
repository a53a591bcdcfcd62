"""Fixtures shared by the serving tests: the stored model of the session's small training run,
its request model, a scorer, and unlabelled rows as validated applications."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest

from credit_pd.client import requests_from_frame
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.model_store import load_from_store
from credit_pd.scoring_model import ScoringModel
from credit_pd.serving.contract import build_application_model
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def model(trained_run) -> ScoringModel:
    return load_from_store(trained_run.model_tag)


@pytest.fixture(scope="module")
def settings() -> ServingSettings:
    return ServingSettings(max_applications_per_request=50)


@pytest.fixture(scope="module")
def application_model(model, settings):
    return build_application_model(model.schema, model.encoder, settings)


@pytest.fixture(scope="module")
def scorer(model, trained_run) -> PDScorer:
    return PDScorer(model, trained_run.model_tag)


@pytest.fixture(scope="module")
def unlabelled(small_sample_path, schema) -> pd.DataFrame:
    frame = load_dataset(small_sample_path, schema)
    return frame[~labelled_mask(frame, schema)].head(200)


@pytest.fixture(scope="module")
def applications(unlabelled, schema, application_model):
    return [application_model.model_validate(r | {"top_k": "all"}) for r in requests_from_frame(unlabelled, schema)]


@contextmanager
def isolated_metrics() -> Iterator[None]:
    """Unregister the Prometheus collectors an in-process BentoML app registered, when it is done.

    Each `CreditPDService.to_asgi()` registers BentoML's HTTP metrics in prometheus_client's default
    registry; a second in-process app in the same test session would otherwise fail with
    DuplicateTimeseries.
    """
    from prometheus_client import REGISTRY

    before = set(REGISTRY._collector_to_names)
    try:
        yield
    finally:
        for collector in set(REGISTRY._collector_to_names) - before:
            REGISTRY.unregister(collector)
