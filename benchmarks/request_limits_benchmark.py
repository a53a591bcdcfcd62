"""Request limits, measured: worker memory with the largest allowed request, and the 413 for a huge body.

    .venv/bin/python -m benchmarks.request_limits_benchmark [--model-tag credit_pd_model:latest]

Starts `bentoml serve` with one worker on loopback and prints, for the worker process:
- RSS before, peak during (sampled every 2 ms) and after requests at the limits: 1,000 copies of
  the model's example application (what clients send), and 1,000 applications with every field at
  its longest allowed spelling (the worst case the contract admits), one at a time and 8 at once;
- the time until the status line of a 413 for a 60 MB body sent with Content-Length, and for one
  sent chunked (no Content-Length), and the worker's RSS before and after each.
Figures vary with what else runs on the machine; the memory figures vary by a few MB run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.results import command_line, recorded  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HUGE_BODY_BYTES = 60 * 1024 * 1024
SEND_CHUNK = 64 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                "service:CreditPDService",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("server not ready in 120 s")


def worker_process(server: subprocess.Popen) -> psutil.Process:
    """The one service worker (the process that imported service.py and holds the model)."""
    children = psutil.Process(server.pid).children(recursive=True)
    workers = [c for c in children if "worker" in " ".join(c.cmdline())]
    if len(workers) != 1:
        raise SystemExit(f"expected one worker process, found {[c.cmdline() for c in children]}")
    return workers[0]


class PeakRSS:
    """Samples a process's RSS every 2 ms in a thread; `.peak` is the highest seen."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.0f}"


def largest_requests(base: str, n: int) -> dict[str, bytes]:
    """1,000 example applications, and 1,000 with every field at its longest allowed form."""
    document = httpx.get(f"{base}/docs.json").json()
    application = document["components"]["schemas"]["Application"]
    example = application["example"]
    typical = [example | {"uuid": f"{i:08d}"} for i in range(n)]
    longest = dict(example, unseen_categories="score_as_missing", uuid="u" * 128, top_k="all")
    for name, prop in application["properties"].items():
        if name in ("unseen_categories", "uuid", "explain", "top_k"):
            continue
        if prop.get("type") == "number":
            longest[name] = (
                -1.2345678901234567e-300 if prop["minimum"] < 0 else min(prop["maximum"], 1.2345678901234567e300)
            )
        elif "maxLength" in prop:  # free-text category: 200 characters
            longest[name] = "x" * prop["maxLength"]
        elif "anyOf" in prop:  # numeric code: a 200-character decimal string
            longest[name] = "1." + "0" * 198
    worst = [longest | {"uuid": f"{i:0128d}"} for i in range(n)]
    return {
        "1,000 example applications": json.dumps({"applications": typical}).encode(),
        "1,000 longest-form applications": json.dumps({"applications": worst}).encode(),
    }


def measure_request(base: str, worker: psutil.Process, label: str, body: bytes, repeats: int = 3) -> None:
    for attempt in range(repeats):
        before = worker.memory_info().rss
        with PeakRSS(worker) as sampler:
            started = time.perf_counter()
            response = httpx.post(
                f"{base}/predict", content=body, headers={"content-type": "application/json"}, timeout=120
            )
            seconds = time.perf_counter() - started
        after = worker.memory_info().rss
        print(
            f"{label} ({len(body) / 1e6:.2f} MB), run {attempt + 1}: HTTP {response.status_code} in {seconds:.2f} s; "
            f"worker RSS before {mb(before)} MB, peak {mb(sampler.peak)} MB, after {mb(after)} MB"
        )


def measure_concurrent(base: str, worker: psutil.Process, label: str, body: bytes, concurrency: int) -> None:
    """`concurrency` copies of the largest request at once: the worst case one worker must hold."""
    import asyncio

    async def fire() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(f"{base}/predict", content=body, headers={"content-type": "application/json"})
                for _ in range(concurrency)
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    before = worker.memory_info().rss
    with PeakRSS(worker) as sampler:
        started = time.perf_counter()
        statuses = asyncio.run(fire())
        seconds = time.perf_counter() - started
    codes = {code: statuses.count(code) for code in sorted(set(statuses))}
    print(
        f"{concurrency} x {label} at once: HTTP {codes} in {seconds:.2f} s; worker RSS before {mb(before)} MB, "
        f"peak {mb(sampler.peak)} MB ({(sampler.peak - before) / concurrency / 1e6:.0f} MB per request in flight)"
    )


def time_to_413(port: int, worker: psutil.Process, chunked: bool) -> None:
    """Send a 60 MB body as fast as loopback takes it; time until the status line arrives."""
    head = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {HUGE_BODY_BYTES}\r\n\r\n"
    chunk = b"[" * SEND_CHUNK
    frame = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk
    before = worker.memory_info().rss
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock, PeakRSS(worker) as sampler:
        started = time.perf_counter()
        sock.sendall(head.encode())

        def upload() -> None:
            nonlocal sent
            try:
                while sent < HUGE_BODY_BYTES:
                    sock.sendall(frame)
                    sent += len(chunk)
                if chunked:
                    sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the server answered and closed: the rest is not wanted

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        status = sock.recv(64).split(b"\r\n", 1)[0].decode()
        seconds = time.perf_counter() - started
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the server's Connection: close
        uploader.join(timeout=10)
    time.sleep(0.5)
    after = worker.memory_info().rss
    how = "chunked" if chunked else "with Content-Length"
    print(
        f"60 MB body {how}: '{status}' after {seconds * 1000:.1f} ms, {sent / 1e6:.1f} MB sent by then; "
        f"worker RSS before {mb(before)} MB, peak {mb(sampler.peak)} MB, after {mb(after)} MB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-tag", default=None, help="model to serve (default: CREDIT_PD_MODEL_TAG or the latest)")
    args = parser.parse_args(argv)
    env = {**os.environ, "CREDIT_PD_WORKERS": "1"}
    if args.model_tag:
        env["CREDIT_PD_MODEL_TAG"] = args.model_tag
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="request-limits-")) / "serve.log"
    server = start_server(port, env, log_path)
    try:
        base = f"http://127.0.0.1:{port}"
        worker = worker_process(server)
        limit = httpx.get(f"{base}/docs.json").json()["components"]["schemas"]["PredictRequest"]["properties"][
            "applications"
        ]["anyOf"][1]["maxItems"]
        print(
            f"worker pid {worker.pid}, idle RSS {mb(worker.memory_info().rss)} MB; per-request cap {limit} applications"
        )
        print(f"server (arbiter) process RSS {mb(psutil.Process(server.pid).memory_info().rss)} MB")
        requests = largest_requests(base, limit)
        for label, body in requests.items():
            measure_request(base, worker, label, body)
        measure_concurrent(
            base, worker, "1,000 longest-form applications", requests["1,000 longest-form applications"], concurrency=8
        )
        time_to_413(port, worker, chunked=False)
        time_to_413(port, worker, chunked=True)
        measure_request(
            base,
            worker,
            "after the 413s, 1,000 example applications",
            largest_requests(base, limit)["1,000 example applications"],
            repeats=1,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    with recorded("request-limits", command_line("")):
        main()
