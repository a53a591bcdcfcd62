"""BentoML service: `POST /predict` scores applications with a PD and an exact SHAP explanation.

Serve with `bentoml serve` (see README). The request contract is built from the stored model
itself (its schema, vocabularies, training ranges and example travel in the model store entry),
so whatever model `CREDIT_PD_MODEL_TAG` names (by default: a built bento's own model, else the
latest in the store) is served with its own API. Tunables are
`CREDIT_PD_*` environment variables (credit_pd.serving.settings); the logic lives in
credit_pd.serving.
"""

from __future__ import annotations

import bentoml

from credit_pd.model_store import get_stored_model, load_from_store
from credit_pd.monitoring.live import live_monitor
from credit_pd.serving.contract import (
    PredictionOut,
    application_list_type,
    build_application_model,
    build_input_spec,
    openapi_document,
)
from credit_pd.serving.runtime import (
    OpenAPIDocument,
    RequestLimits,
    RetryAfterOn503,
    balance_worker_accepts,
    cap_batcher_hold_time,
    freeze_startup_objects,
    log_runtime_patches,
    model_tag_to_serve,
    prediction_output_spec,
    quiet_client_error_logs,
)
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings

settings = ServingSettings()
PredictionsOut, orjson_responses = prediction_output_spec(PredictionOut)
RUNTIME_PATCHES = {
    "batcher hold cap (cap_batcher_hold_time)": cap_batcher_hold_time(settings.max_batch_hold_ms),
    "value-free 4xx logs (quiet_client_error_logs)": quiet_client_error_logs(),
    "orjson responses (prediction_output_spec)": orjson_responses,
    "one listening socket per worker (balance_worker_accepts)": balance_worker_accepts(settings.balanced_workers),
}
stored_model = get_stored_model(model_tag_to_serve(settings.model_tag, "model_tag" in settings.model_fields_set, __file__))
scoring_model = load_from_store(stored_model, num_threads=settings.lightgbm_threads)
Application = build_application_model(scoring_model, settings)
Applications = application_list_type(Application, settings)
PredictRequest = build_input_spec(Applications)


@bentoml.service(
    name="credit_pd_service",
    workers=settings.workers,
    traffic={"timeout": settings.request_timeout_s},
    logging={"access": {"enabled": settings.access_log}},
    # Read by LightGBM's OpenMP runtime when a worker loads it (settings.openmp_spin_count: why);
    # BentoML passes service envs to its workers and bakes them into the image.
    envs=[{"name": "GOMP_SPINCOUNT", "value": str(settings.openmp_spin_count)}],
    # No OpenTelemetry spans for /predict unless asked for (settings.request_tracing: why).
    **({} if settings.request_tracing else {"tracing": {"excluded_urls": ["/predict"]}}),
)
class CreditPDService:
    """Probability of default for buy-now-pay-later applications, with explanations."""

    model = bentoml.models.BentoModel(str(stored_model.tag))

    def __init__(self) -> None:
        self.scorer = PDScorer(scoring_model, str(stored_model.tag),
                               live_monitor(stored_model, scoring_model.encoder, settings.monitoring_enabled),
                               large_batch_rows=settings.large_batch_rows, large_batch_threads=settings.large_batch_threads)
        log_runtime_patches(RUNTIME_PATCHES)
        freeze_startup_objects()

    @bentoml.api(batchable=True, input_spec=PredictRequest, output_spec=PredictionsOut,
                 max_batch_size=settings.max_batch_size, max_latency_ms=settings.max_latency_ms)
    async def predict(self, applications: Applications) -> list[PredictionOut]:
        """Score one application or a list; concurrent requests are merged into one batch."""
        # JSON-ready dicts (written by PredictionsOut); small batches on the event loop, large in a thread.
        return await self.scorer.answers_async(applications, settings.inline_max_rows)


def _openapi() -> dict:
    return openapi_document(CreditPDService.openapi_spec.asdict(), Application, scoring_model, settings)


# Outermost first: the document and the envelope limits answer before BentoML reads a body.
CreditPDService.add_asgi_middleware(OpenAPIDocument, build=_openapi)
CreditPDService.add_asgi_middleware(RequestLimits, max_bytes=settings.max_request_bytes,
                                  paths=tuple(api.route for api in CreditPDService.apis.values()))
CreditPDService.add_asgi_middleware(RetryAfterOn503, retry_after_s=settings.retry_after_s)
