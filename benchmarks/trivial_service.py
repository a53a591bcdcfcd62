"""The framework's ceiling: a BentoML endpoint with the service's workers and runtime set-up, no model.

    bentoml serve benchmarks.trivial_service:TrivialService

It takes the same request body as `/predict` and answers a constant, so the load benchmark can
say how close the real service comes to what BentoML itself costs per request on this machine.
It gets the service's framework set-up (no OpenTelemetry spans on /predict, access log off, one
listening socket per worker), so the ratio measures the model and the contract, not a tuning
the ceiling lacks.
"""

from __future__ import annotations

from typing import Any

import bentoml

from credit_pd.serving.patches import balance_worker_accepts
from credit_pd.serving.settings import ServingSettings

settings = ServingSettings()
ANSWER = [{"uuid": None, "pd": 0.5}]
balance_worker_accepts(settings.balanced_workers)


@bentoml.service(
    name="trivial_service",
    workers=settings.workers,
    logging={"access": {"enabled": settings.access_log}},
    **({} if settings.request_tracing else {"tracing": {"excluded_urls": ["/predict"]}}),
)
class TrivialService:
    """No model, no validation: BentoML's own cost per request."""

    @bentoml.api
    async def predict(self, applications: Any) -> list[dict]:
        return ANSWER
