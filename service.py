"""BentoML service: `POST /predict` scores applications with a PD and an exact SHAP explanation.

Serve with `bentoml serve` (see README). Tunables come from `CREDIT_PD_*` environment
variables (credit_pd.config.ServingSettings); the logic lives in credit_pd.serving.
"""

from __future__ import annotations

import bentoml

from credit_pd.config import ServingSettings
from credit_pd.model_store import load_from_store
from credit_pd.schema import load_schema
from credit_pd.serving import (
    PDScorer,
    PredictionOut,
    RetryAfterOn503,
    application_list_type,
    build_application_model,
    cap_batcher_hold_time,
    freeze_startup_objects,
)

settings = ServingSettings()
cap_batcher_hold_time(settings.max_batch_hold_ms)
Application = build_application_model(load_schema(settings.schema_path), settings)
Applications = application_list_type(Application, settings)


@bentoml.service(
    name="credit_pd_service",
    workers=settings.workers,
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
)
class CreditPDService:
    """Probability of default for buy-now-pay-later applications, with explanations."""

    model = bentoml.models.BentoModel(settings.model_tag)

    def __init__(self) -> None:
        self.scorer = PDScorer(load_from_store(self.model, num_threads=settings.lightgbm_threads), str(self.model.tag))
        freeze_startup_objects()

    @bentoml.api(batchable=True, max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    def predict(self, applications: Applications) -> list[PredictionOut]:
        """Score one application or a list; concurrent requests are merged into one batch."""
        return self.scorer.score(applications)


CreditPDService.add_asgi_middleware(RetryAfterOn503, retry_after_s=settings.retry_after_s)
