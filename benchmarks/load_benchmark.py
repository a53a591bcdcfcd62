"""Load benchmark: the built service against the server a user would write and a trivial BentoML
endpoint, all started in the same run and driven with the same request bodies.

    python -m benchmarks.load_benchmark [--target credit_pd_service:latest] [--duration 6] [--rounds 2] [--profile]

Servers (all started at once on free loopback ports; only one is under load at any time, and on
each shared load the compared servers take turns, `--rounds` times, so a change in the machine's
load from other processes does not fall on one of them only):
- the project: `bentoml serve` of the built bento with its default settings;
- the project with live monitoring off (`CREDIT_PD_MONITORING_ENABLED=false`): concurrency 32 only;
- the project with decision records off (`CREDIT_PD_DECISION_RECORDS=false`): concurrency 32 only,
  the cost of one JSON line per application; the project's own records (stdout, its log file)
  are then replayed with `credit_pd.replay` and must all be identical (`--records-only` runs just
  this comparison and the replay);
- a trivial BentoML endpoint (benchmarks/trivial_service.py): the same workers, no model, a
  constant answer; BentoML's own cost per request, the framework's ceiling here;
- the naive peer (benchmarks/naive_peer.py) twice, Flask under gunicorn and FastAPI under uvicorn,
  2 workers each: the service is held to whichever is faster on each load.

Loads: wrk (closed loop, fixed duration) with single-application requests that ask for an
explanation at concurrency 1, 8, 32 and 128, with 100-application requests at concurrency 2 and 4,
a small asyncio client at a steady 200 requests/s (open loop), and wrk beyond saturation followed by a
recovery check. Prints requests/s, p50/p95/p99 latency and non-200 counts for every server and
load, the ratios the serving issue asks for, and PASS/MISS against its bars. Figures, not a timed
test: wrk shares the machine's cores with the servers. `--profile` adds py-spy's busiest functions
in a service worker at concurrency 32. Needs wrk (Debian package) and the `load-benchmark` extra;
`make load-benchmark` installs both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.results import command_line, recorded  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY_LEVELS = (1, 8, 32, 128)
BATCH_ROWS = 100
BATCH_CONCURRENCY_LEVELS = (2, 4)
STEADY_RATE = 200
# Beyond what the service answers within max_latency_ms (at 512 it kept up: 0 sheds), within the
# open-file limit (`overload_concurrency`).
OVERLOAD_CONCURRENCY = 2048
READY_TIMEOUT_S = 180
# Bars from the serving-speed issue.
MIN_SINGLE_VS_PEER = 2.0
MIN_SINGLE_VS_TRIVIAL = 0.85
MAX_P50_ABOVE_PEER_MS = 1.0
MIN_BATCH_ROWS_VS_PEER = 2.0
MAX_STEADY_P99_MS = 50.0
MAX_OVERLOAD_ANSWERED_P99_MS = 1000.0  # overload must be shed early, not queued

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {{}}; no_retry_after = 0 end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status == 503 and headers["retry-after"] == nil and headers["Retry-After"] == nil then no_retry_after = no_retry_after + 1 end
end
function done(summary, latency, requests)
  local merged = {{}}
  local missing = 0
  for _, t in ipairs(threads) do
    missing = missing + t:get("no_retry_after")
    for status, n in pairs(t:get("counts")) do merged[tostring(status)] = (merged[tostring(status)] or 0) + n end
  end
  local parts = {{}}
  for status, n in pairs(merged) do table.insert(parts, string.format('"%s": %d', status, n)) end
  io.write(string.format('RESULT {{"requests": %d, "duration_us": %d, "socket_errors": %d, "p50_us": %d, '
    .. '"p95_us": %d, "p99_us": %d, "no_retry_after": %d, "statuses": {{%s}}}}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), missing, table.concat(parts, ", ")))
end
"""


@dataclass(frozen=True)
class LoadResult:
    server: str
    load: str
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non_200: int
    statuses: dict[str, int]
    no_retry_after: int = 0  # 503 answers without a Retry-After header
    rps_range: tuple[float, float] | None = None  # lowest and highest req/s of the rounds
    p99_answered_ms: float | None = None  # p99 of the 200 answers only (open-loop loads)
    cpu_s: float | None = None  # the server's CPU seconds (all its processes) over the load (100-app loads)


def combine(rounds: list[LoadResult]) -> LoadResult:
    """Rounds of one server and load: mean req/s and p50/p95, worst p99, all non-200s, the req/s range."""
    statuses: Counter[str] = Counter()
    for r in rounds:
        statuses.update(r.statuses)
    rps = [r.requests_per_s for r in rounds]
    return LoadResult(
        rounds[0].server,
        rounds[0].load,
        float(np.mean(rps)),
        float(np.mean([r.p50_ms for r in rounds])),
        float(np.mean([r.p95_ms for r in rounds])),
        max(r.p99_ms for r in rounds),
        sum(r.non_200 for r in rounds),
        dict(statuses),
        sum(r.no_retry_after for r in rounds),
        (min(rps), max(rps)),
        cpu_s=None if any(r.cpu_s is None for r in rounds) else sum(r.cpu_s or 0.0 for r in rounds),
    )


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(
    name: str, command: list[str], env: dict[str, str], workdir: Path, ready_path: str = "/readyz"
) -> Iterator[Server]:
    """Start a server in its own process group, wait until it answers, stop the whole group after."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    log = workdir / f"{name.replace(' ', '_').replace('/', '_')}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{log.read_text()[-2000:]}")
            try:
                if httpx.get(url + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield Server(name, url, process, log)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def bentoml_command(target: str) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", "{port}"]


def peer_commands(workers: int) -> dict[str, list[str]]:
    return {
        "naive Flask peer": [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--bind",
            "127.0.0.1:{port}",
            "--log-level",
            "warning",
            "benchmarks.naive_peer:flask_app()",
        ],
        "naive FastAPI peer": [
            sys.executable,
            "-m",
            "uvicorn",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--no-access-log",
            "--log-level",
            "warning",
            "--factory",
            "benchmarks.naive_peer:fastapi_app",
        ],
    }


def run_wrk(server: Server, body_path: Path, concurrency: int, seconds: int, load: str) -> LoadResult:
    script = body_path.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(body=body_path))
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{server.url}/predict",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(text for text in output.splitlines() if text.startswith("RESULT "))
    data = json.loads(line[len("RESULT ") :])
    statuses = data["statuses"]
    ok = statuses.get("200", 0)
    return LoadResult(
        server.name,
        load,
        ok / (data["duration_us"] / 1e6),
        data["p50_us"] / 1e3,
        data["p95_us"] / 1e3,
        data["p99_us"] / 1e3,
        data["requests"] - ok + data["socket_errors"],
        statuses,
        data["no_retry_after"],
    )


def server_cpu_s(server: Server) -> float:
    """User + system CPU seconds of the server's processes (the manager and its workers) so far.

    A worker that exited and was reaped counts too, through its parent's `children_*` times: a
    supervisor that restarts a worker under load (uvicorn's did, once, in a run) would otherwise
    take that worker's CPU out of the load's total, and its CPU per request came out at a fifth.
    """
    import psutil  # a BentoML dependency

    total = 0.0
    for process in [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def run_wrk_with_cpu(server: Server, body_path: Path, concurrency: int, seconds: int, load: str) -> LoadResult:
    """`run_wrk`, with the CPU the server spent meanwhile: CPU per answered request does not depend on
    how many cores the shared machine left the server, so it compares servers on a noisy machine."""
    before = server_cpu_s(server)
    result = run_wrk(server, body_path, concurrency, seconds, load)
    return dataclasses.replace(result, cpu_s=server_cpu_s(server) - before)


async def steady_rate(server: Server, body: bytes, rate: int, seconds: int) -> LoadResult:
    """Open loop: one request every 1/rate s regardless of answers, so queueing shows in latency.

    A minimal HTTP/1.1 client on asyncio streams (keep-alive connections, a new one whenever all
    are busy; one answered with `Connection: close` is closed, not reused): a general-purpose
    client such as httpx costs ~1 ms of CPU per request and, on 2 shared cores, became the
    bottleneck itself at 200 requests/s.
    """
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    answered: list[float] = []
    statuses: Counter[str] = Counter()

    async def one() -> None:
        started = time.perf_counter()
        try:
            if idle:
                reader, writer = idle.pop()
            else:
                reader, writer = await asyncio.open_connection(host, int(port))
                opened.append(writer)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            headers = [line.lower() for line in head.split(b"\r\n")[1:]]
            length = next(int(line.split(b":", 1)[1]) for line in headers if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            statuses[status] += 1
            if b"connection: close" in headers:  # the server closes it (as any HTTP/1.1 client honours)
                writer.close()
            else:
                idle.append((reader, writer))
            if status == "200":
                answered.append(time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, StopIteration) as exc:
            statuses[type(exc).__name__] += 1
        latencies.append(time.perf_counter() - started)

    tasks = []
    start = time.perf_counter()
    for i in range(rate * seconds):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    for writer in opened:
        writer.close()
    ms = np.array(latencies) * 1e3
    ok = statuses.get("200", 0)
    return LoadResult(
        server.name,
        f"steady {rate} req/s (open loop)",
        ok / seconds,
        *np.percentile(ms, [50, 95, 99]),
        sum(statuses.values()) - ok,
        dict(statuses),
        p99_answered_ms=float(np.percentile(np.array(answered) * 1e3, 99)) if answered else None,
    )


# A client of ordinary rate measuring its own answers while wrk overloads the service: what a
# caller that is not part of the flood sees (wrk reports one latency distribution for all statuses,
# and the quick 503s would hide how long the answered requests waited).
OVERLOAD_SAMPLE_RATE = 50


def overload_phase(project: Server, single_body: Path, seconds: int) -> list[LoadResult]:
    """wrk at `overload_concurrency()` with an open-loop sampler alongside, then conc. 1 right after."""
    import concurrent.futures

    concurrency = overload_concurrency()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        flood = pool.submit(run_wrk, project, single_body, concurrency, seconds, f"overload, concurrency {concurrency}")
        time.sleep(1.0)  # sample once the flood is on
        sampled = asyncio.run(steady_rate(project, single_body.read_bytes(), OVERLOAD_SAMPLE_RATE, max(1, seconds - 2)))
        overload = flood.result()
    sampled = dataclasses.replace(sampled, load=f"sampled during overload ({OVERLOAD_SAMPLE_RATE} req/s open loop)")
    return [overload, sampled, run_wrk(project, single_body, 1, 3, "1 app, conc. 1, right after overload")]


def overload_concurrency() -> int:
    """OVERLOAD_CONCURRENCY, or as many connections as the open-file limit leaves room for."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(256, min(OVERLOAD_CONCURRENCY, soft - 128))


def sample_applications(n: int) -> list[dict]:
    from credit_pd.client import requests_from_frame
    from credit_pd.config import DEFAULT_DATASET_PATH, SampleConfig
    from credit_pd.dataset import load_dataset
    from credit_pd.schema import load_schema

    schema = load_schema()
    path = DEFAULT_DATASET_PATH
    if not path.exists():
        from credit_pd.training.sample import write_sample

        path = Path(tempfile.mkdtemp()) / "dataset.csv"
        write_sample(path, SampleConfig(n_rows=5_000))
    return requests_from_frame(load_dataset(path, schema).head(n), schema)


def served_parts(model_tag: str) -> tuple[Any, Any, Any]:
    """What a service worker builds at start-up: its settings, the stored model and the request model."""
    from credit_pd.model_store import load_from_store
    from credit_pd.serving.contract import build_request_model
    from credit_pd.serving.settings import ServingSettings

    settings = ServingSettings()
    model = load_from_store(model_tag, num_threads=settings.lightgbm_threads)
    return settings, model, build_request_model(model.schema, model.encoder, settings)


@contextmanager
def records_to_a_file(model_tag: str, schema: Any) -> Iterator[Any]:
    """A decision recorder writing to a temporary file (as `decision_records_path` does), closed after."""
    from credit_pd.serving.records import DecisionRecorder

    with tempfile.TemporaryDirectory() as records_dir:
        recorder = DecisionRecorder(model_tag, schema, Path(records_dir) / "records.jsonl")
        try:
            yield recorder
        finally:
            for handler in recorder.logger.handlers:
                handler.close()


def in_process_rows_per_s(model_tag: str, body: bytes, rows: int, repeats: int, as_served: bool = False) -> float:
    """The service's validation + model + TreeSHAP + answer + JSON, minus HTTP (best of `repeats`).

    `as_served` adds what the service also does per request besides live monitoring: the
    duplicate-key check of the body and one decision record per application, to a file.
    """
    import orjson

    from credit_pd.serving.middleware import duplicate_key_location
    from credit_pd.serving.records import NullRecorder
    from credit_pd.serving.scorer import PDScorer

    _, model, request_model = served_parts(model_tag)
    with records_to_a_file(model_tag, model.schema) as file_recorder:
        scorer = PDScorer(model, model_tag, recorder=file_recorder if as_served else NullRecorder())

        def one_request() -> None:
            if as_served:
                duplicate_key_location(body)
            orjson.dumps(scorer.answers(request_model.model_validate_json(body).applications))

        return rows / (best_ms(one_request, repeats) / 1000)


def best_ms(run: Callable[[], object], repeats: int) -> float:
    """Fastest of `repeats` calls, in ms: the cost of the work itself, not of the machine's other load."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def stage_costs(model_tag: str, body: bytes, repeats: int = 30) -> list[tuple[str, float]]:
    """Where a request's in-process time goes: each stage the service runs for it, timed alone (ms, one thread).

    The stages are the service's own calls in its order, on the same body: the duplicate-key
    parse (middleware.RequestLimits), validation (contract.StrictInput), then PDScorer.answers
    split into encoding, the model's decision (LightGBM tables, GLM part, PD, grade, reasons
    ranked) and the answer's dicts (reasons, explanation, warnings: answers' time minus the two),
    live monitoring, the decision records (to a file) and the JSON answer. What HTTP and BentoML
    add is the server's CPU per request minus their sum (`report`).
    """
    import orjson

    from credit_pd.model_store import get_stored_model
    from credit_pd.monitoring.live import live_monitor
    from credit_pd.serving.middleware import parse_unique_keys
    from credit_pd.serving.scorer import PDScorer

    settings, model, request_model = served_parts(model_tag)
    document, _ = parse_unique_keys(body)
    applications = request_model.model_validate(document).applications
    records = [vars(app) for app in applications]
    limits = [app.max_reasons for app in applications]
    matrix = model.encoder.encode_records(records)
    decision = model.decide(matrix, limits)
    scorer = PDScorer(model, model_tag)  # no monitor, no recorder: those are timed on their own
    answers = scorer.answers(applications)
    monitor = live_monitor(get_stored_model(model_tag), model.encoder, settings.monitoring_enabled)
    decide = "decision (trees, GLM, PD, grade, reasons ranked)"
    with records_to_a_file(model_tag, model.schema) as recorder:
        times = {
            "parse + duplicate keys": best_ms(lambda: parse_unique_keys(body), repeats),
            "validation": best_ms(lambda: request_model.model_validate(document), repeats),
            "encoding": best_ms(lambda: model.encoder.encode_records(records), repeats),
            decide: best_ms(lambda: model.decide(matrix, limits), repeats),
            "answers": best_ms(lambda: scorer.answers(applications), repeats),
            "live monitoring": best_ms(
                lambda: monitor.observe(records, matrix, decision.pd, decision.grade_index), repeats
            ),
            "decision records": best_ms(
                lambda: recorder.record(records, answers, [None] * len(records), limits), repeats
            ),
            "JSON answer": best_ms(lambda: orjson.dumps(answers), repeats),
        }
    dicts = times.pop("answers") - times["encoding"] - times[decide]
    stages = list(times.items())
    stages.insert(4, ("answer dicts (reasons, explanation, warnings)", max(dicts, 0.0)))
    return stages


def peer_score_ms(model_tag: str, body: bytes, repeats: int = 30) -> float:
    """The naive peer's `score` of the same body, in-process (its encoding, shap, top 10 and dicts; no HTTP or JSON)."""
    import warnings

    document = json.loads(body)
    previous = os.environ.get("CREDIT_PD_MODEL_TAG")
    os.environ["CREDIT_PD_MODEL_TAG"] = model_tag  # the peer module loads the model it names at import
    try:
        with warnings.catch_warnings():  # shap's notice that LightGBM's output format changed, once per explainer
            warnings.simplefilter("ignore", UserWarning)
            from benchmarks import naive_peer

            return best_ms(lambda: naive_peer.score(document), repeats)
    finally:
        if previous is None:
            os.environ.pop("CREDIT_PD_MODEL_TAG", None)
        else:
            os.environ["CREDIT_PD_MODEL_TAG"] = previous


def print_budget(model_tag: str, body: bytes, cpu: dict[str, tuple[float, float]], peer: str) -> None:
    """The 100-app bar as a CPU budget per request, against what the service's own stages cost in-process.

    rows/s = cores busy / CPU per request, so 2 x the peer's rows/s needs CPU per request <= the
    peer's x (the service's cores busy / the peer's) / 2.
    """
    stages = stage_costs(model_tag, body)
    total = sum(ms for _, ms in stages)
    print(
        f"  where a {BATCH_ROWS}-app request's time goes in-process (ms, one thread, best of 30; the service's calls "
        "timed one by one): " + ", ".join(f"{name} {ms:.2f}" for name, ms in stages) + f"; sum {total:.2f}"
    )
    if "project" not in cpu or peer not in cpu:
        return
    (project_ms, project_cores), (peer_ms, peer_cores) = cpu["project"], cpu[peer]
    budget = peer_ms * project_cores / peer_cores / MIN_BATCH_ROWS_VS_PEER
    print(
        f"  the {MIN_BATCH_ROWS_VS_PEER:g} x bar as CPU per request: {peer}'s {peer_ms:.1f} ms x cores busy "
        f"{project_cores:.2f} / {peer_cores:.2f} / {MIN_BATCH_ROWS_VS_PEER:g} = {budget:.1f} ms; the service's "
        f"in-process stages alone sum to {total:.2f} ms and its whole request took {project_ms:.1f} ms (HTTP, "
        f"BentoML and the cost of sharing the cores: the other {project_ms - total:.1f} ms); the peer's in-process "
        f"score() of the same body (encoding, shap, top 10, dicts): {peer_score_ms(model_tag, body):.2f} ms"
    )


def print_cpu_per_request(batch_results: list[LoadResult]) -> dict[str, tuple[float, float]]:
    """CPU per answered 100-app request and the cores it kept busy, per server over its 100-app loads.

    Returns them: server name -> (ms of CPU per request, cores busy)."""
    by_server: dict[str, list[LoadResult]] = {}
    for r in batch_results:
        if r.cpu_s is not None:
            by_server.setdefault(r.server, []).append(r)
    parts = []
    per_request: dict[str, tuple[float, float]] = {}
    for name, loads in by_server.items():
        cpu = sum(r.cpu_s or 0.0 for r in loads)
        answered = sum(r.statuses.get("200", 0) for r in loads)
        wall = sum(r.statuses.get("200", 0) / r.requests_per_s for r in loads if r.requests_per_s)
        if answered and wall:
            per_request[name] = (1000 * cpu / answered, cpu / wall)
            parts.append(f"{name} {1000 * cpu / answered:.1f} ms ({cpu / wall:.2f} cores busy)")
    if parts:
        print(
            f"  server CPU per {BATCH_ROWS}-app request (all its processes, over its {BATCH_ROWS}-app loads; independent "
            "of how many cores the shared machine left it): " + "; ".join(parts)
        )
    return per_request


def connections_per_worker(server: Server, body_path: Path, concurrency: int, seconds: int = 3) -> list[int]:
    """Keep-alive connections each worker process holds while wrk runs at `concurrency` (most first).

    How the server's workers share the connections decides how many cores serve them: with one
    shared listening socket the first worker to wake can take them all.
    """
    import psutil  # a BentoML dependency

    port = int(server.url.rsplit(":", 1)[1])
    script = body_path.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(body=body_path))
    load = subprocess.Popen(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), f"{server.url}/predict"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(seconds / 2)
    counts = []
    for process in psutil.Process(server.process.pid).children(recursive=True):
        try:
            held = sum(
                1
                for c in process.net_connections(kind="tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            )
        except psutil.Error:
            continue
        if held:
            counts.append(held)
    load.wait()
    return sorted(counts, reverse=True)


def treeshap_rows_per_s(model_tag: str, body: bytes, repeats: int = 30) -> float:
    """LightGBM's TreeSHAP alone on the body's rows, one thread (best of `repeats`): the compute floor."""
    from credit_pd.model_store import load_from_store

    model = load_from_store(model_tag, num_threads=1)
    applications = json.loads(body)["applications"]
    matrix = model.encoder.encode_records(applications if isinstance(applications, list) else [applications])
    return len(matrix) / (best_ms(lambda: model.explain(matrix), repeats) / 1000)


def profile_workers(server: Server, body_path: Path, seconds: int, top: int = 12) -> list[str]:
    """py-spy's busiest leaf functions (own samples, idle waits excluded) in the service workers under load."""
    if shutil.which("py-spy") is None and not (Path(sys.executable).parent / "py-spy").exists():
        return ["py-spy not installed (pip install -e '.[load-benchmark]')"]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    import psutil  # a BentoML dependency

    children = [
        str(child.pid)
        for child in psutil.Process(server.process.pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline())
    ]
    raw = [body_path.parent / f"profile_{pid}.txt" for pid in children]
    load = subprocess.Popen(
        ["wrk", "-t1", "-c32", f"-d{seconds + 2}s", "-s", str(body_path.with_suffix(".lua")), f"{server.url}/predict"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(1)
    spies = [
        subprocess.Popen(
            [py_spy, "record", "-d", str(seconds), "-r", "100", "-p", pid, "-f", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(children, raw, strict=False)
    ]
    for spy in spies:
        spy.wait()
    load.wait()
    own: Counter[str] = Counter()
    for path in raw:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            leaf = stack.split(";")[-1]
            if any(idle in leaf for idle in ("epoll", "Condition.wait", "Queue.get", "Event.wait", "select (")):
                continue
            own[re.sub(r" \(/.*/", " (", leaf)] += int(count)
    total = sum(own.values()) or 1
    return [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]


def print_results(results: list[LoadResult]) -> None:
    header = f"{'server':<24}{'load':<34}{'req/s':>9}{'rounds req/s':>16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-200':>9}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        spread = f"{r.rps_range[0]:.0f}-{r.rps_range[1]:.0f}" if r.rps_range else ""
        print(
            f"{r.server:<24}{r.load:<34}{r.requests_per_s:>9.1f}{spread:>16}{r.p50_ms:>9.2f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.non_200:>9}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="credit_pd_service:latest", help="bento tag or service import path")
    parser.add_argument(
        "--duration", type=int, default=6, help="seconds per load level and round (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="turns the compared servers take on each shared load (default: %(default)s)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the service workers at concurrency 32")
    parser.add_argument(
        "--records-only",
        action="store_true",
        help="only decision records on vs off at concurrency 32, then replay the records written",
    )
    parser.add_argument(
        "--overload-only",
        action="store_true",
        help="only the service's overload phase (conc. 1, overload with a sampling client, conc. 1 after)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk (or run `make load-benchmark`)")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

    from credit_pd.serving.settings import ServingSettings

    settings = ServingSettings()
    applications = sample_applications(BATCH_ROWS)
    workdir = Path(tempfile.mkdtemp(prefix="credit-pd-load-"))
    single_body = workdir / "single.json"
    single_body.write_text(json.dumps({"applications": applications[0]}))
    batch_body = workdir / "batch.json"
    batch_body.write_text(json.dumps({"applications": applications[:BATCH_ROWS]}))
    env = {**os.environ}
    d = args.duration
    load_avg = os.getloadavg()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, {os.cpu_count()} cores, load average before: "
        f"{load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; {d} s per load and round, {args.rounds} rounds; wrk shares the cores"
    )
    print(
        f"service {args.target}: workers={settings.workers}, lightgbm_threads={settings.lightgbm_threads}, "
        f"max_batch_size={settings.max_batch_size}, max_latency_ms={settings.max_latency_ms}, "
        f"max_batch_hold_ms={settings.max_batch_hold_ms}"
    )

    results: list[LoadResult] = []
    profile: list[str] = []
    with ExitStack() as stack:
        project = stack.enter_context(serving("project", bentoml_command(args.target), env, workdir))
        model_tag = httpx.post(
            f"{project.url}/predict", content=single_body.read_bytes(), headers={"content-type": "application/json"}
        ).json()[0]["model_tag"]
        monitoring_active = "carries no drift reference" not in project.log.read_text()
        if args.overload_only:
            run_wrk(project, single_body, 8, 3, "warm-up")
            results = [
                run_wrk(project, single_body, 1, 3, "1 app, concurrency 1"),
                *overload_phase(project, single_body, d),
            ]
            print_results(results)
            print_overload(results, project.process.poll() is None)
            return
        servers = {"project": project}
        if "decision_records" in ServingSettings.model_fields:
            servers["project, records off"] = stack.enter_context(
                serving(
                    "project, records off",
                    bentoml_command(args.target),
                    {**env, "CREDIT_PD_DECISION_RECORDS": "false"},
                    workdir,
                )
            )
        if args.records_only:
            records_comparison(servers, single_body, d, args.rounds)
            return
        if "monitoring_enabled" in ServingSettings.model_fields:
            servers["project, monitoring off"] = stack.enter_context(
                serving(
                    "project, monitoring off",
                    bentoml_command(args.target),
                    {**env, "CREDIT_PD_MONITORING_ENABLED": "false"},
                    workdir,
                )
            )
        servers["trivial BentoML"] = stack.enter_context(
            serving("trivial BentoML", bentoml_command("benchmarks.trivial_service:TrivialService"), env, workdir)
        )
        for name, command in peer_commands(settings.workers).items():
            servers[name] = stack.enter_context(
                serving(name, command, {**env, "CREDIT_PD_MODEL_TAG": model_tag}, workdir)
            )
        peers = [name for name in servers if "peer" in name]
        for server in servers.values():  # all are up but idle; each is loaded alone below
            run_wrk(server, single_body, 8, 3, "warm-up")
            if server.name == "project" or server.name in peers:
                run_wrk(server, batch_body, 2, 2, "warm-up")
        # The compared servers take turns, `rounds` times, so a change in the machine's load
        # (other processes) hits all of them rather than whichever happened to run then.
        comparisons = [
            (single_body, 1, "1 app, concurrency 1", ["project", "trivial BentoML", *peers]),
            (
                single_body,
                32,
                "1 app, concurrency 32",
                [*(n for n in servers if n.startswith("project")), "trivial BentoML", *peers],
            ),
            *(
                (batch_body, c, f"{BATCH_ROWS} apps/request, concurrency {c}", ["project", *peers])
                for c in BATCH_CONCURRENCY_LEVELS
            ),
        ]
        for body, concurrency, load, names in comparisons:
            rounds: dict[str, list[LoadResult]] = {name: [] for name in names}
            run = run_wrk_with_cpu if body == batch_body else run_wrk
            for _ in range(args.rounds):
                for name in names:
                    rounds[name].append(run(servers[name], body, concurrency, d, load))
            results += [combine(rounds[name]) for name in names]
        results += [
            run_wrk(project, single_body, c, d, f"1 app, concurrency {c}")
            for c in CONCURRENCY_LEVELS
            if c not in (1, 32)
        ]
        results.append(asyncio.run(steady_rate(project, single_body.read_bytes(), STEADY_RATE, d)))
        results += overload_phase(project, single_body, d)
        alive = project.process.poll() is None
        spread = {
            name: {
                c: connections_per_worker(servers[name], single_body if c == 32 else batch_body, c) for c in (32, 4, 2)
            }
            for name in ("project", *peers)
        }
        if args.profile:
            profile = profile_workers(project, single_body, 8)

        replayed = replay_served_records(project)
    print_results(results)
    report(results, model_tag, batch_body, single_body, alive, monitoring_active)
    print_records(results, replayed)
    print(
        f"\nkeep-alive connections per worker process under wrk (a separate {3} s load each; the project "
        "spreads them by SO_REUSEPORT, the peers share one socket):"
    )
    for name, by_concurrency in spread.items():
        print(
            f"  {name:<22}"
            + "; ".join(
                f"concurrency {c}: {'/'.join(map(str, counts)) or 'none seen'}" for c, counts in by_concurrency.items()
            )
        )
    if profile:
        print("\npy-spy, service workers at concurrency 32 (own samples, idle waits excluded):")
        print("\n".join("  " + line for line in profile))
    load_avg = os.getloadavg()
    print(f"\nload average after: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}")


def served_record_lines(server: Server) -> list[str]:
    """The decision records a server wrote to stdout (its log file), told apart from log lines by their fields."""
    return [
        line
        for line in server.log.read_text(encoding="utf-8", errors="replace").split(
            "\n"
        )  # not splitlines: U+2028 may be in a value
        if line.startswith('{"time":') and '"input_sha256":' in line
    ]


def replay_served_records(server: Server) -> tuple[int, str, bool]:
    """(records, replay report, all identical) of what `server` recorded under this run's loads."""
    from credit_pd.replay import replay

    lines = served_record_lines(server)
    summary = replay(lines)
    return len(lines), summary.report(), summary.all_identical


def print_records(results: list[LoadResult], replayed: tuple[int, str, bool]) -> None:
    """Records on / off at concurrency 32 (same run, alternating rounds), and the replay of the records written."""
    on = next((r for r in results if r.server == "project" and r.load == "1 app, concurrency 32"), None)
    off = next((r for r in results if r.server == "project, records off" and r.load == "1 app, concurrency 32"), None)
    if on is not None and off is not None:
        print(
            f"\ndecision records on / off, 1 app at concurrency 32: {on.requests_per_s:,.0f} / {off.requests_per_s:,.0f} req/s "
            f"= {on.requests_per_s / off.requests_per_s:.2f}; p50 {on.p50_ms:.2f} / {off.p50_ms:.2f} ms, "
            f"p99 {on.p99_ms:.2f} / {off.p99_ms:.2f} ms"
        )
    count, text, identical = replayed
    print(
        f"replay of the {count:,} records the project wrote to stdout under these loads "
        f"({'all identical' if identical else 'NOT all identical'}):"
    )
    print("\n".join("  " + line for line in text.splitlines()))


def records_comparison(servers: dict[str, Server], single_body: Path, seconds: int, rounds: int) -> None:
    """`--records-only`: concurrency 32 on the project with records on and off, taking turns, then the replay."""
    names = ["project", "project, records off"]
    for name in names:
        run_wrk(servers[name], single_body, 8, 3, "warm-up")
    by_server: dict[str, list[LoadResult]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            by_server[name].append(run_wrk(servers[name], single_body, 32, seconds, "1 app, concurrency 32"))
    results = [combine(by_server[name]) for name in names]
    print_results(results)
    print_records(results, replay_served_records(servers["project"]))


def print_overload(results: list[LoadResult], alive: bool) -> None:
    """The overload phase's line: what wrk got, what a sampling client saw, and the recovery."""

    def get(load: str) -> LoadResult:
        return next(r for r in results if r.server == "project" and r.load.startswith(load))

    overload, sampled = get("overload"), get("sampled during overload")
    recovery, before = get("1 app, conc. 1, right after overload"), get("1 app, concurrency 1")
    print(
        f"  overload: wrk at {overload.load.split(', ')[-1]} got {overload.statuses.get('503', 0)} x 503 "
        f"({overload.no_retry_after} without Retry-After) and {overload.statuses.get('200', 0)} x 200; server alive: {alive}; "
        f"right after: p50 {recovery.p50_ms:.2f} ms (before: {before.p50_ms:.2f} ms, ratio {recovery.p50_ms / before.p50_ms:.2f}), "
        f"{recovery.non_200} non-200"
    )
    print(
        f"  during overload, a {OVERLOAD_SAMPLE_RATE} req/s client: {sampled.statuses}, p99 of its 200 answers "
        f"{_ms(sampled.p99_answered_ms)} (bar: < {MAX_OVERLOAD_ANSWERED_P99_MS:g} ms)"
    )


def _ms(value: float | None) -> str:
    return "none answered" if value is None else f"{value:.0f} ms"


def report(
    results: list[LoadResult], model_tag: str, batch_body: Path, single_body: Path, alive: bool, monitoring_active: bool
) -> None:
    def get(server: str, load: str) -> LoadResult | None:
        return next((r for r in results if r.server == server and r.load == load), None)

    peers = [s for s in dict.fromkeys(r.server for r in results) if "peer" in s]
    single32 = get("project", "1 app, concurrency 32")
    single1 = get("project", "1 app, concurrency 1")
    peer32 = max((get(p, "1 app, concurrency 32") for p in peers), key=lambda r: r.requests_per_s)
    peer1 = min((get(p, "1 app, concurrency 1") for p in peers), key=lambda r: r.p50_ms)
    trivial32 = get("trivial BentoML", "1 app, concurrency 32")
    batch_loads = [f"{BATCH_ROWS} apps/request, concurrency {c}" for c in BATCH_CONCURRENCY_LEVELS]
    project_batch = max((get("project", load) for load in batch_loads), key=lambda r: r.requests_per_s)
    peer_batch = max((get(p, load) for p in peers for load in batch_loads), key=lambda r: r.requests_per_s)
    steady = next(r for r in results if r.server == "project" and r.load.startswith("steady"))
    overload = next(r for r in results if r.server == "project" and r.load.startswith("overload"))
    recovery = get("project", "1 app, conc. 1, right after overload")
    sampled = next(r for r in results if r.server == "project" and r.load.startswith("sampled during overload"))
    quiet = get("project, monitoring off", "1 app, concurrency 32")

    vs_peer = single32.requests_per_s / peer32.requests_per_s
    vs_trivial = single32.requests_per_s / trivial32.requests_per_s
    p50_gap = single1.p50_ms - peer1.p50_ms
    rows_project, rows_peer = project_batch.requests_per_s * BATCH_ROWS, peer_batch.requests_per_s * BATCH_ROWS
    inproc_100 = in_process_rows_per_s(model_tag, batch_body.read_bytes(), BATCH_ROWS, 20)
    inproc_1 = in_process_rows_per_s(model_tag, single_body.read_bytes(), 1, 300)
    cores = os.cpu_count() or 1
    treeshap_all_cores = treeshap_rows_per_s(model_tag, batch_body.read_bytes()) * cores

    print("\nratios (same run, same bodies; the peer is the faster of the two on each load):")
    print(
        f"  1 app, concurrency 32: project {single32.requests_per_s:,.0f} req/s / {peer32.server} "
        f"{peer32.requests_per_s:,.0f} = {vs_peer:.2f}; "
        f"/ trivial BentoML {trivial32.requests_per_s:,.0f} = {vs_trivial:.2f}"
    )
    print(
        f"  1 app, concurrency 1: p50 project {single1.p50_ms:.2f} ms - {peer1.server} {peer1.p50_ms:.2f} ms = {p50_gap:+.2f} ms"
    )
    print(
        f"  {BATCH_ROWS} apps/request: project {rows_project:,.0f} rows/s ({project_batch.load}) / {peer_batch.server} "
        f"{rows_peer:,.0f} rows/s ({peer_batch.load}) = {rows_project / rows_peer:.2f}"
    )
    print(
        f"  in-process (validation + model + TreeSHAP + answer + JSON, one thread): {inproc_100:,.0f} rows/s at {BATCH_ROWS} per "
        f"request, {inproc_1:,.0f} at 1; service {BATCH_ROWS}-app rows/s / in-process = {rows_project / inproc_100:.2f}"
    )
    served_100 = in_process_rows_per_s(model_tag, batch_body.read_bytes(), BATCH_ROWS, 20, as_served=True)
    print(
        f"  in-process as served (also the duplicate-key check and decision records to a file; no HTTP, no live "
        f"monitoring): {served_100:,.0f} rows/s at {BATCH_ROWS} per request, one thread"
    )
    cpu_per_request = print_cpu_per_request([r for r in results if r.load in batch_loads])
    print_budget(model_tag, batch_body.read_bytes(), cpu_per_request, peer_batch.server)
    print("  what the bars ask against what is possible here (same run):")
    print(
        f"    1 app, concurrency 32: {MIN_SINGLE_VS_PEER:g} x peer = {MIN_SINGLE_VS_PEER * peer32.requests_per_s:,.0f} req/s; "
        f"the trivial BentoML endpoint (no model, no validation) answered {trivial32.requests_per_s:,.0f}"
    )
    print(
        f"    {BATCH_ROWS} apps/request: {MIN_BATCH_ROWS_VS_PEER:g} x peer = {MIN_BATCH_ROWS_VS_PEER * rows_peer:,.0f} rows/s; LightGBM's "
        f"TreeSHAP alone (no HTTP, validation, encoding or JSON; the peer calls it too) on all {cores} cores = "
        f"{treeshap_all_cores:,.0f} rows/s; the service reached {rows_project / treeshap_all_cores:.0%} of that"
    )
    if quiet is None:
        print("  monitoring on/off: this version has no CREDIT_PD_MONITORING_ENABLED setting")
    else:
        note = "" if monitoring_active else " (the served model carries no drift reference: monitoring was off in both)"
        print(
            f"  monitoring on / off, 1 app at concurrency 32: {single32.requests_per_s:,.0f} / {quiet.requests_per_s:,.0f} req/s "
            f"= {single32.requests_per_s / quiet.requests_per_s:.2f}{note}"
        )
    wrk_shed = overload.statuses.get("503", 0)
    print_overload(results, alive)

    bars = [
        (
            f"1 app, conc. 32: >= {MIN_SINGLE_VS_PEER} x peer, 0 non-200",
            f"{vs_peer:.2f}, {single32.non_200} non-200",
            vs_peer >= MIN_SINGLE_VS_PEER and single32.non_200 == 0,
        ),
        (
            f"1 app, conc. 32: >= {MIN_SINGLE_VS_TRIVIAL} x trivial BentoML",
            f"{vs_trivial:.2f}",
            vs_trivial >= MIN_SINGLE_VS_TRIVIAL,
        ),
        (
            f"1 app, conc. 1: p50 <= peer's + {MAX_P50_ABOVE_PEER_MS:g} ms",
            f"{p50_gap:+.2f} ms",
            p50_gap <= MAX_P50_ABOVE_PEER_MS,
        ),
        (
            f"{BATCH_ROWS} apps/request: rows/s >= {MIN_BATCH_ROWS_VS_PEER} x peer",
            f"{rows_project / rows_peer:.2f}",
            rows_project / rows_peer >= MIN_BATCH_ROWS_VS_PEER,
        ),
        (
            f"steady {STEADY_RATE} req/s: p99 < {MAX_STEADY_P99_MS:g} ms, 0 non-200",
            f"{steady.p99_ms:.1f} ms, {steady.non_200} non-200",
            steady.p99_ms < MAX_STEADY_P99_MS and steady.non_200 == 0,
        ),
        (
            "overload shed with 503 + Retry-After, recovers at once",
            f"{wrk_shed} x 503, p50 after {recovery.p50_ms:.2f} ms",
            alive
            and wrk_shed > 0
            and overload.no_retry_after == 0
            and recovery.non_200 == 0
            and recovery.p50_ms <= 2 * single1.p50_ms + 1,
        ),
        (
            f"overload: p99 of answered requests < {MAX_OVERLOAD_ANSWERED_P99_MS:g} ms",
            _ms(sampled.p99_answered_ms),
            sampled.p99_answered_ms is not None and sampled.p99_answered_ms < MAX_OVERLOAD_ANSWERED_P99_MS,
        ),
    ]
    print("\nbars:")
    for name, value, ok in bars:
        print(f"  {'PASS' if ok else 'MISS'}  {name:<52} {value}")


def section_name(argv: list[str]) -> str:
    """The docs/benchmarks.md section a run writes: a partial run (--records-only, --overload-only)
    keeps its own, so it never replaces a full run's figures."""
    if "--records-only" in argv:
        return "load-records"
    if "--overload-only" in argv:
        return "load-overload"
    return "load"


if __name__ == "__main__":
    with recorded(section_name(sys.argv), command_line("make load-benchmark")):
        main()
