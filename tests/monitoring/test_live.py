"""credit_pd.monitoring.live against a real `bentoml serve`: counts survive a worker's SIGKILL.

Issue 19: 20 requests of 50 applications, then kill -9 of the worker that answered them:
`bentoml_service_request_total` rose by 20 but `credit_pd_scored_applications_total` by 0, because
the counts waited for a 1 s background flush. They are now written before the answers return.
"""

from __future__ import annotations

import json
import os
import socket
import time

import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.monitoring.scrape import by_label, scrape
from tests.serving_process import bentoml_server

REQUESTS = 20
PER_REQUEST = 50


def post_keep_alive(sock: socket.socket, body: bytes) -> int:
    """One POST on an open keep-alive connection; returns the status (the answer is read whole)."""
    sock.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65_536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65_536)
    return int(head.split(b" ", 2)[1])


def worker_holding(workers: list[psutil.Process], server_port: int, client_port: int) -> psutil.Process:
    """The worker process at the server end of the connection from `client_port`."""
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == server_port and conn.raddr and conn.raddr.port == client_port:
                return worker
    raise AssertionError(f"no worker holds the connection from port {client_port}")


@pytest.mark.integration
@pytest.mark.slow
def test_counts_of_answered_applications_survive_a_sigkill_of_the_worker(trained_run, fresh_applications, tmp_path):
    env = {
        **os.environ,
        "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
        "CREDIT_PD_WORKERS": "2",
        "CREDIT_PD_MONITORING_ENABLED": "true",
        "BENTOML_CONTAINERIZED": "true",
    }  # no in-place restart
    with bentoml_server("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as served:
        before = scrape(served.base)
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.settimeout(30)
            for i in range(REQUESTS):
                batch = [a | {"explain": False} for a in fresh_applications[i * PER_REQUEST : (i + 1) * PER_REQUEST]]
                assert post_keep_alive(sock, json.dumps({"applications": batch}).encode()) == 200
            victim = worker_holding(served.workers(), served.port, sock.getsockname()[1])
            victim.kill()  # right after the last answer, as the OOM killer would
        victim.wait(timeout=10)
        time.sleep(0.5)
        after = scrape(served.base)  # answered by the surviving worker, from every worker's files
    tag = (trained_run.model_tag,)
    scored = by_label(after, "credit_pd_scored_applications_total", "model_tag").get(tag, 0.0) - by_label(
        before, "credit_pd_scored_applications_total", "model_tag"
    ).get(tag, 0.0)
    histogram = by_label(after, "credit_pd_prediction_pd_count", "model_tag").get(tag, 0.0) - by_label(
        before, "credit_pd_prediction_pd_count", "model_tag"
    ).get(tag, 0.0)
    bins = by_label(after, "credit_pd_feature_bin_total", "feature")
    bins_before = by_label(before, "credit_pd_feature_bin_total", "feature")
    print(f"\nafter kill -9: scored +{scored:.0f}, PD histogram +{histogram:.0f} (sent {REQUESTS * PER_REQUEST})")
    assert scored == REQUESTS * PER_REQUEST and histogram == REQUESTS * PER_REQUEST
    assert {bins[k] - bins_before.get(k, 0.0) for k in bins} == {REQUESTS * PER_REQUEST}, (
        "every feature counted every application"
    )


FILE_COUNTERS_CHECK = r"""
import os, sys
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from credit_pd.monitoring.live import _FileCounters

counter = Counter("t_bins", "bins", ["bin"])
histogram = Histogram("t_pd", "pd", ["m"], buckets=[0.1, 0.5, float("inf")]).labels("x")
children = [counter.labels(str(i)) for i in range(3)] + [*histogram._buckets, histogram._sum]
files = _FileCounters.for_children(children)
assert files is not None, "prometheus_client's multiprocess layout moved"
files.add(np.array([1.0, 0.0, 5.0, 2.0, 1.0, 0.0, 0.75]))
# Grow the counter file well past its first mapping: the counters mapped before must stay exact.
for i in range(3, 3000):
    counter.labels(str(i)).inc()
files.add(np.array([1.0, 1.0, 0.0, 0.0, 0.0, 3.0, 2.5]))
registry = CollectorRegistry()
MultiProcessCollector(registry)
value = registry.get_sample_value
got = [value("t_bins_total", {"bin": str(i)}) for i in range(4)]
got += [value("t_pd_bucket", {"m": "x", "le": le}) for le in ("0.1", "0.5", "+Inf")] + [value("t_pd_sum", {"m": "x"})]
print(got)
"""


def test_file_counters_add_a_batch_into_prometheus_multiprocess_files(tmp_path):
    """The vectorised write lands where prometheus_client's collector reads (cumulative buckets),
    also after the file grew; fails when prometheus_client's multiprocess layout moves."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FILE_COUNTERS_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # bins 2, 1, 5 and bin 3 (inc()-ed once); buckets 2, 1, 3 per bucket -> cumulative 2, 3, 6; sum 3.25
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [2.0, 1.0, 5.0, 1.0, 2.0, 3.0, 6.0, 3.25]


def test_outside_multiprocess_mode_counters_are_incremented_one_by_one():
    from prometheus_client import CollectorRegistry, Counter

    from credit_pd.monitoring.live import _FileCounters

    counter = Counter("t_single", "single", ["bin"], registry=CollectorRegistry())
    assert _FileCounters.for_children([counter.labels("a")]) is None
