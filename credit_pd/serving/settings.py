"""Serving tunables: one default each, overridable as `CREDIT_PD_<FIELD>` environment variables.

The Helm chart passes values through by these names; it does not restate the defaults.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from credit_pd.categories import UnseenPolicy
from credit_pd.config import DEFAULT_MODEL_TAG
from credit_pd.explanation import DEFAULT_TOP_K


class ServingSettings(BaseSettings):
    """Service tunables, overridable as `CREDIT_PD_<FIELD>` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CREDIT_PD_", extra="ignore")

    # Model store tag to serve; pin a version (e.g. credit_pd_model:abc123) in production.
    model_tag: str = DEFAULT_MODEL_TAG
    # Bearer-token auth (serving.auth.BearerAuth), on exactly when a JWKS URL is set: off for a
    # local `make run`, on in the chart's production values, whatever the ingress does (anything
    # that reaches a pod past the ALB still needs a token). https://... (cached, refreshed on an
    # unknown key id) or file:///path (a mounted Secret); plain http only to loopback.
    auth_jwks_url: str | None = None
    # The `iss` every token must carry (required with auth_jwks_url), e.g. a Cognito user pool's
    # https://cognito-idp.<region>.amazonaws.com/<pool id>.
    auth_issuer: str | None = None
    # Accepted audiences, comma-separated (required with auth_jwks_url): the token's `aud`, or its
    # `client_id` when it has no `aud` (Cognito access tokens), names the calling client.
    auth_audience: str | None = None
    # Scopes every token must hold, space-separated (optional; a lacking token gets 403), e.g. the
    # Cognito resource server scope credit-pd/predict.
    auth_scope: str | None = None
    # One worker per core: LightGBM + TreeSHAP are CPU-bound and single-threaded per worker.
    workers: int = 2
    # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections across
    # workers (serving.patches.balance_worker_accepts). With BentoML's one shared socket, the load
    # benchmark found every keep-alive connection on one worker while the other idled.
    balanced_workers: bool = True
    # Listening sockets per worker (with balanced_workers). uvloop's libuv accepts one connection
    # per listener per event-loop turn, and under overload a turn took 100-300 ms: new connections
    # waited 2.5-5 s to be accepted (the load benchmark's 50 req/s client during the overload phase,
    # `ss` showed them queued). Each listener accepts one per turn; 16 is 16 per turn, at no cost
    # while idle (serving.patches.balance_worker_accepts).
    listeners_per_worker: int = 16
    # With balanced_workers: a worker that holds at least 2 and a fifth more keep-alive connections
    # than a serving sibling answers an API request with `Connection: close`, and the client's
    # reconnection is placed afresh (serving.worker.ConnectionCensus). The kernel's hash left all 4
    # connections of a client on one worker in about one load round in three: half the rate.
    balance_connections: bool = True
    # LightGBM threads per worker; workers x threads should not exceed the pod's cores.
    lightgbm_threads: int = 1
    # A merged batch of at least `large_batch_rows` rows runs LightGBM (TreeSHAP) on
    # `large_batch_threads` threads (0 rows: never). A lone large request then uses the pod's cores
    # instead of one: keep-alive clients with few connections often sit on one worker, and a
    # 1,000-application request is ~100 ms of TreeSHAP. When every worker runs a large batch the
    # threads oversubscribe the cores; `openmp_spin_count` keeps that from wasting CPU. Set
    # `large_batch_threads` to the pod's cores (the chart's CPU limit: 2).
    large_batch_rows: int = 64
    large_batch_threads: int = 2
    # GOMP_SPINCOUNT for LightGBM's OpenMP threads, handed to the workers as a service env
    # (service.py); a GOMP_SPINCOUNT already in the environment wins. libgomp's default (300,000 spins) made two workers' 2-thread
    # batches on 2 cores lose 22% of throughput to spinning; at 1,000 they lost none, and a lone
    # 2-thread batch stayed as fast (benchmarks: `python -m benchmarks.openmp_spin`).
    openmp_spin_count: int = 1_000
    # Largest merged batch the adaptive batcher may form (rows).
    max_batch_size: int = 256
    # Longest predicted wait in the batcher before a request is shed with 503 + Retry-After.
    # 500 ms: at concurrency 32 p99 stays ~250 ms with no 503s, while overload is shed instead of
    # queued for seconds; BentoML's batcher also learns its hold time from observed waits, so a
    # low cap keeps latency low after a burst (2,000 ms gave p99 123 ms at a steady 200 req/s).
    max_latency_ms: int = 500
    # Longest the batcher may hold a request on purpose to grow a batch (see
    # serving.patches.cap_batcher_hold_time). 0: a lone request is never held waiting for company;
    # under load, requests that arrive while a batch runs still form the next batch.
    max_batch_hold_ms: float = 0.0
    # Merged batches of at most this many rows are scored on the worker's event loop rather than in
    # a thread (PDScorer.answers_async). Measured with the load benchmark's loads: at concurrency 1
    # p50 and server CPU per request about halved (no thread hop, no GIL hand-over); with
    # 100-application requests throughput was the same or higher, and a worker busy scoring leaves
    # new connections to the idle one (2 workers took the load instead of 1). 1,000 covers every
    # request; lower it to keep the event loop answering (probes, /metrics) during huge batches.
    inline_max_rows: int = 1_000
    # OpenTelemetry spans for the API routes. BentoML's default trace sample rate is 0, so unless
    # tracing is configured every request paid for spans nobody records: ~30% of the server's CPU
    # per single-application request (load benchmark, A/B at concurrency 1 and 32). Set true
    # together with BentoML's tracing configuration (exporter, sample_rate) to trace /predict.
    request_tracing: bool = False
    # Largest list one client request may carry; bigger requests get a 400 naming the limit, not a slow 5xx.
    max_applications_per_request: int = 1_000
    # Largest request body (bytes); bigger bodies get a 413 before a byte of them is parsed. 8 MiB:
    # 1,000 applications are ~1.6 MB as clients send them and at most ~5 MB with every category at
    # its 200-character limit, so the cap only stops what no valid request needs.
    max_request_bytes: int = 8 * 1024 * 1024
    # Default for a category value never seen in training, overridable per application:
    # "reject" (400 naming the field and the allowed values) or "score_as_missing" (200, scored down
    # the model's missing-value branch, with a warning). Reject, because a PD computed with a
    # feature silently dropped is not the decision the client asked for (measured: PD factors
    # 0.43 to 1.46 on 200 real rows) and a warning inside a 200 is easy to ignore; spellings of one code
    # (1, 1.0, "1", "1.0") are one category and never count as unseen.
    unseen_categories: UnseenPolicy = "reject"
    # Features returned per explanation unless the request asks otherwise.
    default_top_k: int = DEFAULT_TOP_K
    # HTTP request timeout (seconds) inside BentoML.
    request_timeout_s: int = 30
    # Seconds an idle keep-alive connection stays open (uvicorn's `timeout_keep_alive`, 5 s by
    # default; serving.patches.bound_connections). Must exceed the load balancer's idle timeout
    # (ALB: 60 s): when the server closes first, a request the ALB sends at that moment gets a
    # 502 (AWS documents the mismatch). 65 s, as AWS recommends for targets behind an ALB.
    keepalive_timeout_s: int = 65
    # Seconds from a request's first byte until its head (request line + headers) is complete;
    # then 408 and the connection closed. A slowloris client held a connection forever before
    # (measured: 0 of 200 closed in 30 s). The ALB forwards a head in one piece, in milliseconds.
    header_timeout_s: float = 10.0
    # Seconds from the end of the head until the body is complete; then 408 and the connection
    # closed (a never-ending chunked body held its connection, and one slow-body client stretched
    # SIGTERM-to-exit to ~31 s). 1,000 applications are ~1.6 MB: under a second inside a VPC.
    # Also bounds a graceful shutdown: a connection still sending its body ends within this.
    body_timeout_s: float = 10.0
    # Largest request head (request line + all headers, bytes); larger gets a 431 before any of it
    # is parsed further. 32 KiB: the ALB itself allows 64 KiB of headers but the largest legitimate
    # head here (a bearer JWT of ~1-2 KB plus the ALB's X-Forwarded-*/X-Amzn-* headers) is a few KB;
    # without a limit a 64 MiB header held a worker for 2.7 s and 128 MB.
    max_header_bytes: int = 32 * 1024
    # Largest single header line (name + value, bytes), answered with 431: the ALB's own per-header limit.
    max_header_field_bytes: int = 16 * 1024
    # Requests to the API routes one worker works on at once for clients still connected (a request whose
    # client left no longer counts, and is dropped before scoring: 499); more get a 503 + Retry-After at once,
    # from the HTTP protocol before any task or middleware runs (serving.patches.bounded_http_protocol;
    # serving.middleware.InFlightLimit is the fallback), instead of queueing in front of the
    # batcher, where `max_latency_ms` cannot see them (measured: 0 shed at concurrency 2048, p50
    # 593 ms). 256, one full batch (max_batch_size) queued behind the running one: in the load
    # benchmark's overload phase (`--overload-only`, busy machine) 128 and 64 answered 0.47 x and
    # 0.29 x the 200s of 256 at about the same latency of the answered ones, which is set by how
    # long the worker's event loop takes to go round, not by how many requests it holds.
    max_in_flight: int = 256
    # Seconds a shed (503) client is told to wait before retrying.
    retry_after_s: int = 1
    # Per-request access logs cost ~10% throughput at hundreds of requests/s; metrics still count.
    access_log: bool = False
    # Live drift metrics on /metrics (credit_pd.monitoring.live, docs/monitoring.md): per-feature bin
    # counters, the PD histogram and the training reference, for PSI in Prometheus.
    monitoring_enabled: bool = True
    # One decision record (JSON line) per scored application (credit_pd.serving.records), for
    # `python -m credit_pd.replay`. The records are personal data: see records.py.
    decision_records: bool = True
    # Where the records go: empty = stdout (the Kubernetes log pipeline ships it), else a file path.
    decision_records_path: str = ""
    # false: a record keeps the input's SHA-256 but not the input (data minimisation; replay then
    # needs the lender's own copy of the application).
    decision_records_include_input: bool = True
