"""BentoML service: `POST /predict` scores applications with a PD and an exact SHAP explanation.

Serve with `bentoml serve` (see README). The request contract is built from the stored model
itself (its schema, vocabularies, training ranges and example travel in the model store entry),
so whatever model `CREDIT_PD_MODEL_TAG` names (by default: a built bento's own model, else the
latest in the store) is served with its own API. At import only the stored model's metadata and
contract are read; the booster is loaded once per worker in `__init__`. Tunables are
`CREDIT_PD_*` environment variables (credit_pd.serving.settings); the logic lives in
credit_pd.serving.
"""

from __future__ import annotations

import functools

import bentoml

from credit_pd.model_store import TagSource, get_stored_model, load_from_store, model_tag_to_serve, stored_contract
from credit_pd.monitoring.live import live_monitor
from credit_pd.serving.auth import BearerAuth, auth_config
from credit_pd.serving.contract import PredictionOut, application_list_type, build_application_model, build_input_spec
from credit_pd.serving.middleware import (
    InFlightLimit,
    OpenAPIDocument,
    RequestLimits,
    RetryAfterOn503,
    ServedModelHeader,
)
from credit_pd.serving.openapi import OpenAPIResult, openapi_document
from credit_pd.serving.patches import (
    ConnectionLimits,
    PatchState,
    balance_worker_accepts,
    bound_connections,
    cap_batcher_hold_time,
    drop_jobs_of_gone_clients,
    log_patches,
    prediction_output_spec,
    quiet_client_error_logs,
    state,
)
from credit_pd.serving.records import RequestIdMiddleware, decision_recorder
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings
from credit_pd.serving.worker import (
    ConnectionCensus,
    WorkerRoster,
    freeze_startup_objects,
    in_bentoml_worker,
    server_model_tag,
)

settings = ServingSettings()
PredictionsOut, orjson_responses = prediction_output_spec(PredictionOut)
served_tag, served_tag_source = model_tag_to_serve(
    settings.model_tag, "model_tag" in settings.model_fields_set, __file__
)
# One model per server: `bentoml serve` resolves the tag once, every worker (and a restarted one) serves that.
served_tag, tag_handed_over = server_model_tag(lambda: str(get_stored_model(served_tag).tag))
stored_model = get_stored_model(served_tag)
ROSTER = WorkerRoster.for_server(settings.workers)
WORKER_INDEX = bentoml.server_context.worker_index or 1  # 1 outside a worker (the serve process, tests)
if in_bentoml_worker():  # a restarted worker is alive from now on, ready once it serves
    ROSTER.starting(WORKER_INDEX)
# Keep-alive connections moved off an over-full worker (settings.balance_connections), in a worker of a multi-worker server.
BALANCE_CONNECTIONS = settings.balance_connections and settings.balanced_workers
CENSUS = (
    ConnectionCensus(ROSTER, WORKER_INDEX)
    if BALANCE_CONNECTIONS and in_bentoml_worker() and ROSTER.expected > 1
    else None
)
schema, encoder = stored_contract(stored_model)
Application = build_application_model(schema, encoder, settings)
Applications = application_list_type(Application, settings)
PredictRequest = build_input_spec(Applications)
PATCHES: dict[str, PatchState] = {
    "batcher hold cap (cap_batcher_hold_time)": state(cap_batcher_hold_time(settings.max_batch_hold_ms)),
    "value-free 4xx logs (quiet_client_error_logs)": state(quiet_client_error_logs()),
    "queued requests of clients that left are dropped, not scored (drop_jobs_of_gone_clients)": state(
        drop_jobs_of_gone_clients()
    ),
    "orjson responses (prediction_output_spec)": state(orjson_responses),
    f"{settings.listeners_per_worker} listening sockets per worker (balance_worker_accepts)": state(
        balance_worker_accepts(settings.balanced_workers, settings.listeners_per_worker), settings.balanced_workers
    ),
    f"model tag from the bento's bento.yaml (model_tag_to_serve: {served_tag_source.value})": {
        TagSource.BENTO: PatchState.IN_EFFECT,
        TagSource.PINNED: PatchState.OFF_BY_SETTING,
        TagSource.SOURCE_TREE: PatchState.NOT_NEEDED,
        TagSource.BENTO_LAYOUT_MOVED: PatchState.LIBRARY_MOVED,
    }[served_tag_source],
    f"one model per server: {served_tag} handed to the workers (server_model_tag)": (
        PatchState.IN_EFFECT
        if tag_handed_over
        else PatchState.LIBRARY_MOVED
        if in_bentoml_worker()
        else PatchState.NOT_NEEDED
    ),
    "bounded heads, bodies and idle connections, shedding over max_in_flight (bound_connections)": state(
        bound_connections(
            ConnectionLimits(
                settings.keepalive_timeout_s,
                settings.header_timeout_s,
                settings.body_timeout_s,
                settings.max_header_bytes,
                settings.max_header_field_bytes,
                max_in_flight=settings.max_in_flight,
                retry_after_s=settings.retry_after_s,
                census=CENSUS,
            )
        )
    ),
    "keep-alive connections moved off an over-full worker (balance_connections)": (
        PatchState.IN_EFFECT
        if CENSUS is not None
        else PatchState.OFF_BY_SETTING
        if not BALANCE_CONNECTIONS
        else PatchState.NOT_NEEDED
    ),
}


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
        stored = self.model  # the resolved store entry of the class attribute above
        scoring_model = load_from_store(stored, num_threads=settings.lightgbm_threads)
        recorder = decision_recorder(
            settings.decision_records,
            str(stored.tag),
            scoring_model.schema,
            settings.decision_records_path,
            settings.decision_records_include_input,
        )
        self.scorer = PDScorer(
            scoring_model,
            str(stored.tag),
            live_monitor(stored, scoring_model.encoder, settings.monitoring_enabled),
            large_batch_rows=settings.large_batch_rows,
            large_batch_threads=settings.large_batch_threads,
            recorder=recorder,
        )
        log_patches(
            {
                **PATCHES,
                "OpenAPI document replaces BentoML's /predict part (openapi_document)": state(openapi().replaced),
            }
        )
        self.worker_index = WORKER_INDEX
        ROSTER.register(self.worker_index)
        freeze_startup_objects()

    async def __is_ready__(self) -> bool:
        """/readyz: 200 only while EVERY worker of this server serves (not just the one asked)."""
        return ROSTER.status().ready

    async def __is_alive__(self) -> bool:
        """/livez: 503 once a worker died without a clean exit. Inside a container BentoML does not
        restart it, so the kubelet restarts the pod (serving.worker.WorkerRoster: why not in place)."""
        return ROSTER.status().alive

    @bentoml.on_shutdown
    def mark_stopped(self) -> None:
        """A graceful shutdown (SIGTERM drain): unready, but not dead."""
        ROSTER.stopped(self.worker_index)

    @bentoml.api(
        batchable=True,
        input_spec=PredictRequest,
        output_spec=PredictionsOut,
        max_batch_size=settings.max_batch_size,
        max_latency_ms=settings.max_latency_ms,
    )
    async def predict(self, applications: Applications) -> list[PredictionOut]:
        """Score one application or a list; concurrent requests are merged into one batch."""
        # JSON-ready dicts (written by PredictionsOut); small batches on the event loop, large in a thread.
        return await self.scorer.answers_async(applications, settings.inline_max_rows)


@functools.cache
def openapi() -> OpenAPIResult:
    """The served /docs.json, built once per worker (at start-up, for the patch log)."""
    return openapi_document(CreditPDService.openapi_spec.asdict(), Application, schema, encoder, settings)


# Outermost first: the document and the envelope limits answer before BentoML reads a body.
# Every request gets an id first (X-Request-ID; its decision records carry it), whoever answers it.
CreditPDService.add_asgi_middleware(RequestIdMiddleware)
CreditPDService.add_asgi_middleware(ServedModelHeader, model_tag=served_tag)
# Excess load gets 503 + Retry-After at once, before any token is verified or body read (settings.max_in_flight).
CreditPDService.add_asgi_middleware(
    InFlightLimit,
    max_in_flight=settings.max_in_flight,
    retry_after_s=settings.retry_after_s,
    paths=tuple(api.route for api in CreditPDService.apis.values()),
)
# Bearer tokens (settings.auth_*; a pass-through when auth_jwks_url is unset), before any body is read;
# /livez, /readyz and /metrics stay open.
CreditPDService.add_asgi_middleware(
    BearerAuth,
    config=auth_config(settings.auth_jwks_url, settings.auth_issuer, settings.auth_audience, settings.auth_scope),
)
CreditPDService.add_asgi_middleware(OpenAPIDocument, build=lambda: openapi().document)
CreditPDService.add_asgi_middleware(
    RequestLimits, max_bytes=settings.max_request_bytes, paths=tuple(api.route for api in CreditPDService.apis.values())
)
CreditPDService.add_asgi_middleware(RetryAfterOn503, retry_after_s=settings.retry_after_s)
