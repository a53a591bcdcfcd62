"""Load benchmark: the built service under load from a second process on loopback.

    python -m benchmarks.load_benchmark [--target credit_pd_service:latest] [--duration 10]

Starts `bentoml serve` on a free loopback port with the service's default settings, then drives
it with wrk (closed loop, fixed duration) at concurrency 1, 8, 32 and 128 with single-application
requests that ask for explanations, with 100-application requests, at a steady 200 requests/s
(open loop, asyncio client, fixed count), and beyond saturation, followed by a recovery check.
Prints requests/s, p50/p95/p99 latency and non-200 counts, and compares batched rows/s with the
in-process rows/s of the same model + TreeSHAP. Figures, not a timed test. Needs `wrk`
(Debian package `wrk`; `make load-benchmark` installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from credit_pd.config import DEFAULT_DATASET_PATH, SampleConfig
from credit_pd.serving.settings import ServingSettings
from credit_pd.training.dataset import load_dataset
from credit_pd.model_store import load_from_store
from credit_pd.schema import load_schema
from credit_pd.client import requests_from_frame
from credit_pd.serving.contract import application_list_type, build_application_model
from credit_pd.serving.scorer import PDScorer

CONCURRENCY_LEVELS = (1, 8, 32, 128)
BATCH_ROWS = 100
# Batched requests at a few concurrencies; the best is compared with in-process (all are printed).
BATCH_CONCURRENCY_LEVELS = (1, 2, 4)
STEADY_RATE = 200
OVERLOAD_CONCURRENCY = 512
READY_TIMEOUT_S = 180
# Bars from the service issue.
MIN_SINGLE_RPS_AT_32 = 400
MAX_STEADY_P99_MS = 100
MIN_BATCHED_TO_INPROCESS = 0.5

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*a"); f:close()
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {{}} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local merged = {{}}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("counts")) do merged[tostring(status)] = (merged[tostring(status)] or 0) + n end
  end
  local parts = {{}}
  for status, n in pairs(merged) do table.insert(parts, string.format('"%s": %d', status, n)) end
  io.write(string.format('RESULT {{"requests": %d, "duration_us": %d, "socket_errors": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "statuses": {{%s}}}}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), table.concat(parts, ", ")))
end
"""


@dataclass(frozen=True)
class LoadResult:
    label: str
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    non_200: int
    statuses: dict[str, int]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(target: str, port: int, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()[-2000:]}")


def run_wrk(url: str, body_path: Path, concurrency: int, seconds: int, label: str, workdir: Path) -> LoadResult:
    script = workdir / f"post_{body_path.stem}.lua"
    script.write_text(WRK_SCRIPT.format(body=body_path))
    output = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), f"{url}/predict"],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(l for l in output.splitlines() if l.startswith("RESULT "))
    data = json.loads(line[len("RESULT "):])
    statuses = data["statuses"]
    ok = statuses.get("200", 0)
    return LoadResult(label, ok / (data["duration_us"] / 1e6), data["p50_us"] / 1e3, data["p95_us"] / 1e3, data["p99_us"] / 1e3,
                      data["requests"] - ok + data["socket_errors"], statuses)


async def steady_rate(url: str, body: bytes, rate: int, seconds: int) -> LoadResult:
    """Open loop: one request every 1/rate s regardless of answers, so queueing shows in latency."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
        async def one() -> None:
            started = time.perf_counter()
            try:
                response = await client.post("/predict", content=body, headers={"content-type": "application/json"})
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            statuses[key] = statuses.get(key, 0) + 1

        tasks = []
        start = time.perf_counter()
        for i in range(rate * seconds):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    ms = np.array(latencies) * 1e3
    ok = statuses.get("200", 0)
    return LoadResult(f"steady {rate} req/s", ok / seconds, *np.percentile(ms, [50, 95, 99]), sum(statuses.values()) - ok, statuses)


def in_process_rows_per_s(model_tag: str, applications: list[dict], batch_rows: int, repeats: int = 20) -> float:
    """The same validation + model + TreeSHAP + response building the service does, minus HTTP."""
    settings = ServingSettings()
    model = load_from_store(model_tag, num_threads=settings.lightgbm_threads)
    batch_type = application_list_type(build_application_model(model, settings), settings)
    from pydantic import TypeAdapter

    adapter = TypeAdapter(batch_type)
    scorer = PDScorer(model, model_tag)
    body = applications[:batch_rows]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        scorer.score(adapter.validate_python(body))
        best = min(best, time.perf_counter() - started)
    return batch_rows / best


def sample_applications(n: int) -> list[dict]:
    schema = load_schema()
    path = DEFAULT_DATASET_PATH
    if not path.exists():
        from credit_pd.training.sample import write_sample

        path = Path(tempfile.mkdtemp()) / "dataset.csv"
        write_sample(path, SampleConfig(n_rows=5_000))
    return requests_from_frame(load_dataset(path, schema).head(n), schema)


def print_results(results: list[LoadResult]) -> None:
    header = f"{'load':<34}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'non-200':>9}  statuses"
    print("\n" + header + "\n" + "-" * (len(header) + 10))
    for r in results:
        print(f"{r.label:<34}{r.requests_per_s:>9.1f}{r.p50_ms:>9.1f}{r.p95_ms:>9.1f}{r.p99_ms:>9.1f}{r.non_200:>9}  {r.statuses}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="credit_pd_service:latest", help="bento tag or service import path")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load level (default: %(default)s)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk (or run `make load-benchmark`)")

    settings = ServingSettings()
    applications = sample_applications(BATCH_ROWS)
    workdir = Path(tempfile.mkdtemp(prefix="credit-pd-load-"))
    single_body = workdir / "single.json"
    single_body.write_text(json.dumps({"applications": applications[0]}))
    batch_body = workdir / "batch.json"
    batch_body.write_text(json.dumps({"applications": applications[:BATCH_ROWS]}))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    print(f"serving {args.target} on {url}: workers={settings.workers}, max_batch_size={settings.max_batch_size}, "
          f"max_latency_ms={settings.max_latency_ms}, lightgbm_threads={settings.lightgbm_threads}")
    server = start_server(args.target, port, workdir / "server.log")
    try:
        model_tag = httpx.post(f"{url}/predict", content=single_body.read_bytes(), headers={"content-type": "application/json"}).json()[0]["model_tag"]
        run_wrk(url, single_body, 8, 3, "warm-up", workdir)
        results = [run_wrk(url, single_body, c, args.duration, f"single+explain, concurrency {c}", workdir) for c in CONCURRENCY_LEVELS]
        batch_runs = [run_wrk(url, batch_body, c, args.duration, f"{BATCH_ROWS} apps/request, conc. {c}", workdir) for c in BATCH_CONCURRENCY_LEVELS]
        batched = max(batch_runs, key=lambda run: run.requests_per_s)
        steady = asyncio.run(steady_rate(url, single_body.read_bytes(), STEADY_RATE, args.duration))
        overload = run_wrk(url, single_body, OVERLOAD_CONCURRENCY, args.duration, f"overload, concurrency {OVERLOAD_CONCURRENCY}", workdir)
        retry_after = probe_retry_after(url, single_body.read_bytes())
        recovery = run_wrk(url, single_body, 1, 3, "right after overload, conc. 1", workdir)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)

    print_results([*results, *batch_runs, steady, overload, recovery])
    service_rows = batched.requests_per_s * BATCH_ROWS
    inproc_100 = in_process_rows_per_s(model_tag, applications, BATCH_ROWS)
    inproc_1 = in_process_rows_per_s(model_tag, applications, 1, repeats=200)
    print(f"\nrows/s, {BATCH_ROWS} applications per request: service {service_rows:,.0f} (best: {batched.label}), in-process {inproc_100:,.0f} "
          f"(ratio {service_rows / inproc_100:.2f})")
    single_32 = results[CONCURRENCY_LEVELS.index(32)]
    print(f"rows/s, single applications: service at concurrency 32 {single_32.requests_per_s:,.0f}, in-process batch of 1 {inproc_1:,.0f} "
          f"(ratio {single_32.requests_per_s / inproc_1:.2f})")
    print(f"overload: {overload.statuses.get('503', 0)} answers were 503, Retry-After header seen: {retry_after}; "
          f"server alive afterwards: {alive}; recovery non-200: {recovery.non_200}")
    print("\nbars:")
    bars = [
        (f">= {MIN_SINGLE_RPS_AT_32} req/s, 0 non-200 at concurrency 32", f"{single_32.requests_per_s:.0f} req/s, {single_32.non_200} non-200",
         single_32.requests_per_s >= MIN_SINGLE_RPS_AT_32 and single_32.non_200 == 0),
        (f"p99 < {MAX_STEADY_P99_MS} ms at steady {STEADY_RATE} req/s", f"{steady.p99_ms:.1f} ms, {steady.non_200} non-200",
         steady.p99_ms < MAX_STEADY_P99_MS and steady.non_200 == 0),
        (f"batched rows/s >= {MIN_BATCHED_TO_INPROCESS} x in-process", f"{service_rows / inproc_100:.2f}", service_rows / inproc_100 >= MIN_BATCHED_TO_INPROCESS),
        ("sheds overload with 503 + Retry-After, stays up, recovers", f"503s={overload.statuses.get('503', 0)}",
         alive and recovery.non_200 == 0 and (overload.non_200 == 0 or retry_after)),
    ]
    for name, value, ok in bars:
        print(f"  {'PASS' if ok else 'MISS'}  {name:<58} {value}")


def probe_retry_after(url: str, body: bytes) -> bool:
    """Fire a burst large enough to be shed and look for Retry-After on a 503."""
    async def burst() -> bool:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1024)) as client:
            calls = [client.post("/predict", content=body, headers={"content-type": "application/json"}) for _ in range(1500)]
            responses = await asyncio.gather(*calls, return_exceptions=True)
        shed = [r for r in responses if isinstance(r, httpx.Response) and r.status_code == 503]
        return bool(shed) and all("retry-after" in r.headers for r in shed)

    return asyncio.run(burst())


if __name__ == "__main__":
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    main()
