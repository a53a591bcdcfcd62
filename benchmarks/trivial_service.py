"""The framework's ceiling: a BentoML endpoint with the service's workers and no model.

    bentoml serve benchmarks.trivial_service:TrivialService

It takes the same request body as `/predict` and answers a constant, so the load benchmark can
say how close the real service comes to what BentoML itself costs per request on this machine.
"""

from __future__ import annotations

from typing import Any

import bentoml

from credit_pd.serving.settings import ServingSettings

settings = ServingSettings()
ANSWER = [{"uuid": None, "pd": 0.5}]


@bentoml.service(name="trivial_service", workers=settings.workers, logging={"access": {"enabled": settings.access_log}})
class TrivialService:
    """No model, no validation: BentoML's own cost per request."""

    @bentoml.api
    async def predict(self, applications: Any) -> list[dict]:
        return ANSWER
