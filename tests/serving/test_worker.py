"""credit_pd.serving.worker: process-level set-up of a worker, one model per server, the worker roster
behind /readyz and /livez; and real `bentoml serve` processes whose workers are killed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.serving_process import Served, bentoml_server


def test_start_up_objects_are_frozen_out_of_gc_scans():
    import gc

    from credit_pd.serving.worker import freeze_startup_objects

    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert gc.isenabled(), "objects created after start-up must still be collected"
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------- one model per server --------


def pretend_bentoml_worker(monkeypatch) -> None:
    import types

    from credit_pd.serving.worker import BENTOML_WORKER_MODULE

    monkeypatch.setitem(
        sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name=BENTOML_WORKER_MODULE))
    )


def test_the_serving_process_resolves_the_tag_and_hands_it_to_its_workers(monkeypatch):
    from credit_pd.serving.worker import SERVER_MODEL_TAG_ENV, server_model_tag

    monkeypatch.delenv(SERVER_MODEL_TAG_ENV, raising=False)
    assert server_model_tag(lambda: "credit_pd_model:old") == ("credit_pd_model:old", False)
    assert os.environ[SERVER_MODEL_TAG_ENV] == "credit_pd_model:old"
    pretend_bentoml_worker(monkeypatch)
    # A worker (also one restarted after a newer model was published) serves what the server resolved.
    assert server_model_tag(lambda: "credit_pd_model:new") == ("credit_pd_model:old", True)


def test_outside_a_worker_the_tag_is_always_resolved_afresh(monkeypatch):
    """An in-process import (tests, notebooks) must not serve a tag a previous import handed over."""
    from credit_pd.serving.worker import SERVER_MODEL_TAG_ENV, server_model_tag

    monkeypatch.setenv(SERVER_MODEL_TAG_ENV, "credit_pd_model:stale")
    assert server_model_tag(lambda: "credit_pd_model:fresh") == ("credit_pd_model:fresh", False)


# ---------------------------------------------------------------- the worker roster -----------


def test_the_roster_tells_serving_starting_stopped_and_dead_workers_apart(tmp_path):
    from credit_pd.serving.worker import WorkerRoster

    roster = WorkerRoster(tmp_path, expected=3)
    assert roster.status().starting == (1, 2, 3) and not roster.status().ready and roster.status().alive
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        roster.register(1)
        roster.register(2, pid=child.pid)
        roster.register(3, pid=child.pid)
        status = roster.status()
        assert status.serving == (1, 2, 3) and status.ready and status.alive
        roster.stopped(3)  # a graceful shutdown: unready, not dead
        assert roster.status().starting == (3,) and roster.status().alive
        roster.starting(3)  # a replacement loading the model: alive, not ready
        assert roster.status().starting == (3,) and roster.status().alive and not roster.status().ready
        roster.stopped(3)
        assert roster.status().starting == (3,) and roster.status().alive
        child.kill()
        time.sleep(0.2)  # not reaped yet: a zombie is dead too
        status = roster.status()
        assert status.dead == (2,) and not status.ready and not status.alive
        assert "dead [2]" in status.describe()
        child.wait()
        assert roster.status().dead == (2,)
    finally:
        child.kill()
        child.wait()


def test_a_reused_pid_is_not_mistaken_for_the_registered_worker(tmp_path):
    from credit_pd.serving.worker import WorkerRoster

    roster = WorkerRoster(tmp_path, expected=1)
    (tmp_path / "worker-1").write_text(f"{os.getpid()} 12345.0")  # this pid, another start time
    assert roster.status().dead == (1,)


def test_the_census_hands_a_connection_over_only_to_a_clearly_less_loaded_serving_sibling(tmp_path, monkeypatch):
    from credit_pd.serving import worker
    from credit_pd.serving.worker import ConnectionCensus, WorkerRoster

    monkeypatch.setattr(worker, "CENSUS_ROSTER_TTL_S", 0.0)  # re-read the roster on every question
    roster = WorkerRoster(tmp_path, expected=2)
    first, second = ConnectionCensus(roster, 1), ConnectionCensus(roster, 2)  # two workers, one shared file
    first.publish(4)
    assert not first.hands_over(4), "a sibling that is not serving yet is never compared with"
    roster.register(1)
    roster.register(2)
    second.publish(0)
    assert first.counts() == second.counts() == {1: 4, 2: 0}
    assert first.hands_over(4) and not second.hands_over(0)
    assert first.hands_over(2)  # 2/0: the smallest imbalance that is moved
    assert not first.hands_over(1)
    second.publish(2)
    assert not first.hands_over(3), "3/2 is as even as 5 connections get"
    second.publish(15)
    assert not first.hands_over(17), "a random split of many connections is left alone"
    assert first.hands_over(20)
    first.leaving = 2  # two of its connections were already told to close
    first.publish(4)
    assert first.counts()[1] == 2 and not first.hands_over(4)
    second.publish(9)
    assert ConnectionCensus(roster, 2).counts()[2] == 0, "a restarted worker does not inherit its predecessor's count"


def test_the_census_never_compares_with_a_dead_workers_last_count(tmp_path, monkeypatch):
    from credit_pd.serving import worker
    from credit_pd.serving.worker import ConnectionCensus, WorkerRoster

    monkeypatch.setattr(worker, "CENSUS_ROSTER_TTL_S", 0.0)
    roster = WorkerRoster(tmp_path, expected=2)
    census = ConnectionCensus(roster, 1)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        roster.register(1)
        roster.register(2, pid=child.pid)
        ConnectionCensus(roster, 2).publish(0)
        census.publish(6)
        assert census.hands_over(6)
        child.kill()
        child.wait()
        assert roster.status().dead == (2,) and not census.hands_over(6)
    finally:
        child.kill()
        child.wait()


def test_a_roster_made_outside_a_worker_expects_only_its_own_process(monkeypatch):
    from credit_pd.serving.worker import SERVER_ROSTER_ENV, WorkerRoster

    monkeypatch.delenv(SERVER_ROSTER_ENV, raising=False)
    roster = WorkerRoster.for_server(4)
    assert roster.expected == 1 and os.environ[SERVER_ROSTER_ENV] == str(roster.directory)
    pretend_bentoml_worker(monkeypatch)
    inherited = WorkerRoster.for_server(4)
    assert inherited.directory == roster.directory and inherited.expected == 4


# ---------------------------------------------------------------- real servers ----------------
# kill -9 of one worker under load, with and without BentoML's in-place restart, and SIGTERM drain.

POLL_S = 0.1


def publish_copy(tag: str) -> str:
    """Publish the stored model again under a new version (what a training run does to `latest`)."""
    from credit_pd.model_store import SCORING_SPEC_KEY, get_stored_model, load_from_store, save_to_store

    stored = get_stored_model(tag)
    extra = {key: value for key, value in stored.custom_objects.items() if key != SCORING_SPEC_KEY}
    return str(
        save_to_store(load_from_store(stored), stored.info.metadata, stored.info.labels, custom_objects=extra).tag
    )


class Probe(threading.Thread):
    """Polls /readyz and /livez on fresh connections (so the kernel picks either worker) and keeps
    posting one application, counting the answers that were not 200."""

    def __init__(self, base: str, application: dict) -> None:
        super().__init__(daemon=True)
        self.base, self.application = base, application
        self.timeline: list[tuple[float, int, int]] = []
        self.requests = 0
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            self.timeline.append((now, status(self.base + "/readyz"), status(self.base + "/livez")))
            self.requests += 1
            try:
                answer = httpx.post(self.base + "/predict", json={"applications": self.application}, timeout=10)
                if answer.status_code != 200:
                    self.failed.append(str(answer.status_code))
            except httpx.HTTPError as exc:
                self.failed.append(type(exc).__name__)
            self.stop.wait(max(0.0, POLL_S - (time.monotonic() - now)))

    def seconds(self, since: float, probe: int, code: int) -> float:
        """How long after `since` the probe (1 readyz, 2 livez) answered `code`, first to last sample."""
        times = [row[0] for row in self.timeline if row[0] >= since and row[probe] == code]
        return (times[-1] - times[0] + POLL_S) if times else 0.0

    def first(self, since: float, probe: int, code: int) -> float | None:
        return next((row[0] - since for row in self.timeline if row[0] >= since and row[probe] == code), None)


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def serve_env(model_tag: str | None, **extra: str) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("CREDIT_PD_MODEL_TAG", "BENTOML_CONTAINERIZED")
    }
    if model_tag:
        env["CREDIT_PD_MODEL_TAG"] = model_tag
    return env | {"CREDIT_PD_WORKERS": "2", "CREDIT_PD_MAX_LATENCY_MS": "10000"} | extra


def one_application(served_model_tag: str) -> dict:
    from credit_pd.model_store import get_stored_model, stored_contract

    schema, _ = stored_contract(get_stored_model(served_model_tag))
    from credit_pd.serving.contract import build_application_model
    from credit_pd.serving.settings import ServingSettings

    return dict(
        build_application_model(
            schema, stored_contract(get_stored_model(served_model_tag))[1], ServingSettings()
        ).example_application
    )


def kill_one_worker_and_watch(served: Served, application: dict, watch_s: float) -> tuple[Probe, float]:
    probe = Probe(served.base, application)
    probe.start()
    time.sleep(1.0)
    victim = served.workers()[-1]
    killed_at = time.monotonic()
    victim.kill()
    time.sleep(watch_s)
    probe.stop.set()
    probe.join(timeout=15)
    return probe, killed_at


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_restarted_after_a_new_model_was_published_serves_the_servers_model(trained_run, tmp_path):
    """Served from source (BentoML restarts a dead worker in place): the restarted worker serves
    the tag the server resolved at start, not the store's new `latest`; /readyz is 503 until it serves."""
    from credit_pd.model_store import get_stored_model

    old = str(get_stored_model("credit_pd_model:latest").tag)
    application = one_application(old)
    with bentoml_server("service:CreditPDService", serve_env(None), REPO_ROOT, tmp_path / "serve.log") as served:
        new = publish_copy(old)
        assert str(get_stored_model("credit_pd_model:latest").tag) == new != old
        probe = Probe(served.base, application)
        probe.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        served.workers()[-1].kill()
        deadline = killed_at + 25
        while time.monotonic() < deadline and not (
            len(served.workers()) == 2 and status(served.base + "/readyz") == 200
        ):
            time.sleep(0.2)
        time.sleep(1.0)
        probe.stop.set()
        probe.join(timeout=15)
        unready, dead = probe.seconds(killed_at, 1, 503), probe.seconds(killed_at, 2, 503)
        print(
            f"\nin-place restart: /readyz 503 from {probe.first(killed_at, 1, 503):.2f} s after the kill "
            f"for {unready:.1f} s, "
            f"/livez 503 for {dead:.1f} s; {len(probe.failed)} of {probe.requests} requests failed {probe.failed}"
        )
        assert status(served.base + "/readyz") == 200, "the restarted worker should serve again"
        assert probe.first(killed_at, 1, 503) is not None and probe.first(killed_at, 1, 503) < 3
        tags = set()
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            answer = httpx.post(served.base + "/predict", json={"applications": application}, timeout=10)
            tags.add(answer.json()[0]["model_tag"])
            tags.add(httpx.get(served.base + "/readyz", timeout=5).headers["credit-pd-model-tag"])
        assert tags == {old}, f"one server, one model: {tags}"


@pytest.mark.integration
@pytest.mark.slow
def test_in_a_container_a_dead_worker_makes_the_pod_unready_and_not_live(trained_run, tmp_path):
    """BENTOML_CONTAINERIZED (as in the image): BentoML does not restart a dead worker, so the pod
    must say so: /readyz and /livez 503 from within a probe period until the kubelet restarts it."""
    application = one_application(trained_run.model_tag)
    env = serve_env(trained_run.model_tag, BENTOML_CONTAINERIZED="true")
    with bentoml_server("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as served:
        assert len(served.workers()) == 2
        probe, killed_at = kill_one_worker_and_watch(served, application, watch_s=6.0)
        unready, dead = probe.first(killed_at, 1, 503), probe.first(killed_at, 2, 503)
        print(
            f"\nin a container: /readyz 503 {unready:.2f} s and /livez 503 {dead:.2f} s after the kill, and for the "
            f"remaining {probe.seconds(killed_at, 2, 503):.1f} s watched; {len(probe.failed)} of {probe.requests} "
            f"requests failed {probe.failed}"
        )
        assert len(served.workers()) == 1, "no in-place restart inside a container"
        assert unready is not None and unready < 2 and dead is not None and dead < 2
        after = [row for row in probe.timeline if row[0] > killed_at + 2]
        assert after and all(row[1] == 503 and row[2] == 503 for row in after), "must stay unready and not live"
        # The surviving worker still answers what reaches it.
        assert httpx.post(served.base + "/predict", json={"applications": application}, timeout=10).status_code == 200


@dataclass
class Sent:
    started: float
    outcome: str = ""  # the status code, or the exception's name


def keep_posting(base: str, body: bytes, until: threading.Event, log: list[Sent]) -> None:
    """One keep-alive client posting `body` back to back until the server is gone."""
    with httpx.Client(base_url=base, timeout=60) as client:
        while not until.is_set():
            sent = Sent(time.monotonic())
            log.append(sent)
            try:
                sent.outcome = str(
                    client.post("/predict", content=body, headers={"content-type": "application/json"}).status_code
                )
            except httpx.HTTPError as exc:
                sent.outcome = type(exc).__name__
                if isinstance(exc, httpx.ConnectError):
                    return  # the listener is closed: nothing more will be accepted


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_under_load_completes_every_accepted_request_and_a_slow_client_does_not_hold_the_exit(
    trained_run, small_sample_path, schema, tmp_path
):
    """SIGTERM to `bentoml serve` while 8 clients post 100 applications back to back and one client
    trickles a body: every request in flight at the signal gets its 200, and the server exits
    within the body timeout (a slow-body client stretched the exit to ~31 s before)."""
    import json
    import signal
    import socket

    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import load_dataset

    body_timeout_s = 5
    applications = requests_from_frame(load_dataset(small_sample_path, schema).head(100), schema)
    body = json.dumps({"applications": [a | {"explain": False} for a in applications]}).encode()
    env = serve_env(trained_run.model_tag, CREDIT_PD_BODY_TIMEOUT_S=str(body_timeout_s))
    with bentoml_server("service:CreditPDService", env, REPO_ROOT, tmp_path / "serve.log") as served:
        slow = socket.create_connection(("127.0.0.1", served.port))
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
        )
        done, logs = threading.Event(), [[] for _ in range(8)]
        clients = [
            threading.Thread(target=keep_posting, args=(served.base, body, done, log), daemon=True) for log in logs
        ]
        for client in clients:
            client.start()
        time.sleep(3.0)
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(timeout=60)
        exit_s = time.monotonic() - signalled
        done.set()
        for client in clients:
            client.join(timeout=30)
        slow.settimeout(1)
        slow_answer = slow.recv(200).split(b"\r\n", 1)[0]
        slow.close()
    sent = [s for log in logs for s in log]
    before = [s for s in sent if s.started < signalled]
    in_flight = [s for s in before if s.outcome != "200"]  # accepted before the signal, not answered 200: cut
    after = Counter(s.outcome for s in sent if s.started >= signalled)
    print(
        f"\nSIGTERM drain: {len(before)} requests sent before the signal, {len(in_flight)} of them cut; "
        f"after the signal: {dict(after)}; exit {exit_s:.1f} s after SIGTERM; slow-body client got {slow_answer!r}"
    )
    assert before and not in_flight, f"cut: {[s.outcome for s in in_flight]}"
    assert not [o for o in after if o.startswith("5")], f"no 5xx while draining: {dict(after)}"
    assert exit_s < body_timeout_s + 8, f"the slow client held the exit for {exit_s:.1f} s"
    assert slow_answer in (b"HTTP/1.1 408 Request Timeout", b""), slow_answer
