"""Process-level set-up of a BentoML worker that is not a patch of library internals."""

from __future__ import annotations

import atexit
import gc
import mmap
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (BentoML, LightGBM, pandas, the model) out of GC scans.

    Each scored row allocates a dozen response objects, so the collector runs often; a full
    collection then walked the whole start-up heap and stalled a request by tens of ms (the
    load benchmark's p95 of 100-application requests). Objects created later are still collected.
    """
    gc.collect()
    gc.freeze()


# ---------------------------------------------------------------- one model per server --------

BENTOML_WORKER_MODULE = "_bentoml_impl.worker.service"
# Set by the serving process for its workers (never by an operator: `CREDIT_PD_MODEL_TAG` is the setting).
SERVER_MODEL_TAG_ENV = "CREDIT_PD_SERVER_MODEL_TAG"
SERVER_ROSTER_ENV = "CREDIT_PD_SERVER_ROSTER_DIR"


def in_bentoml_worker() -> bool:
    """True in a process BentoML started as an API worker (not in `bentoml serve` itself, nor in tests)."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) == BENTOML_WORKER_MODULE


def server_model_tag(resolve: Callable[[], str]) -> tuple[str, bool]:
    """The concrete model tag this process serves, and whether it was handed over by the server.

    `bentoml serve` imports service.py once in its own process before it starts the workers, and
    each worker imports it again, also when it is restarted after a crash. Resolving
    `credit_pd_model:latest` in every import let a worker restarted after a training run publish a
    new model serve that model while its siblings served the old one (seen: one server, PD
    0.001939 and 0.007456 for the same application). So the serving process resolves the tag
    (`resolve`, e.g. `latest` -> a version) and puts it into its environment, which the workers
    inherit (BentoML's process manager copies the environment when it creates the worker watcher,
    after the import); a worker serves the inherited tag for its whole life, whatever the store
    says later. Returns (tag, True) in a worker that got the tag that way, (tag, False) otherwise.
    """
    if in_bentoml_worker():
        handed_over = os.environ.get(SERVER_MODEL_TAG_ENV)
        if handed_over:
            return handed_over, True
    tag = resolve()
    os.environ[SERVER_MODEL_TAG_ENV] = tag
    return tag, False


# ---------------------------------------------------------------- pods that tell the truth ----


@dataclass(frozen=True)
class RosterStatus:
    """What the workers of one server are doing, by worker index (1..expected)."""

    serving: tuple[int, ...]
    starting: tuple[int, ...]  # not registered yet (loading the model), or stopped cleanly
    dead: tuple[int, ...]  # registered, then gone without a clean exit (SIGKILL, OOM killer, crash)

    @property
    def ready(self) -> bool:
        return not self.starting and not self.dead

    @property
    def alive(self) -> bool:
        return not self.dead

    def describe(self) -> str:
        parts = [
            f"{name} {list(indices)}"
            for name, indices in (
                ("serving", self.serving),
                ("starting or stopped", self.starting),
                ("dead", self.dead),
            )
            if indices
        ]
        return ", ".join(parts)


STOPPED = "stopped"
STARTING = "loading"


class WorkerRoster:
    """Which workers of this server serve, so every worker's /readyz and /livez speak for all.

    BentoML answers a probe in whichever worker the kernel hands the connection to, and that
    worker knew only about itself: a pod whose other worker was killed stayed Ready and Live with
    half its capacity, since inside a container BentoML does not restart a dead worker.
    Each worker registers here once it has loaded the model (a file per worker index holding its
    pid and start time, written atomically), and marks itself stopped on a clean exit (SIGTERM
    drain). A registered worker whose process is gone or a zombie, with no clean exit, is dead.
    The directory is made by the serving process and handed to the workers like the model tag.

    Why Kubernetes restarts the pod rather than BentoML restarting the worker in place: inside a
    container BentoML deliberately runs its workers without respawn (`BENTOML_CONTAINERIZED`), and
    turning that on would be a patch of its process manager; a kubelet restart is counted
    (`restartCount`, events) and backs off (CrashLoopBackOff) when the OOM killer strikes on every
    burst, where an in-place respawn loop would stay silent; and a fresh container starts from a
    clean prometheus multiprocess directory and page cache. The cost is the pod's other worker
    (its in-flight requests drain on SIGTERM) and a model load. Readiness fails first, within one
    probe, so the load balancer stops sending before liveness has failed `failureThreshold` times.
    Outside a container (`make run`) BentoML does restart the worker; /livez is 503 until the new
    process has started, /readyz until it serves, and it serves the server's model tag.
    """

    def __init__(self, directory: Path, expected: int) -> None:
        self.directory = directory
        self.expected = expected

    @classmethod
    def for_server(cls, workers: int) -> WorkerRoster:
        """The server's roster of `workers` workers, inherited in a BentoML worker. Elsewhere (the
        serving process; a service instantiated in-process, as in the tests) a new one, removed at
        exit, that expects only this process; also in a worker that inherited none (the hand-over
        failed, logged by service.py's start-up line for it): each worker then speaks for itself."""
        inherited = os.environ.get(SERVER_ROSTER_ENV)
        if in_bentoml_worker() and inherited and Path(inherited).is_dir():
            return cls(Path(inherited), workers)
        directory = Path(tempfile.mkdtemp(prefix="credit-pd-workers-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ[SERVER_ROSTER_ENV] = str(directory)
        return cls(directory, 1)

    def _path(self, index: int) -> Path:
        return self.directory / f"worker-{index}"

    def register(self, index: int, pid: int | None = None) -> None:
        """Record worker `index` as serving from process `pid` (this process by default)."""
        process = psutil.Process(pid or os.getpid())
        self._write(index, f"{process.pid} {process.create_time()!r}")

    def starting(self, index: int) -> None:
        """Worker `index` is this process, still loading: not ready, but alive (a worker restarted
        in place replaces its dead predecessor's entry as soon as it starts, not once it serves)."""
        process = psutil.Process(os.getpid())
        self._write(index, f"{process.pid} {process.create_time()!r} {STARTING}")

    def stopped(self, index: int) -> None:
        """Worker `index` shut down cleanly (called from the service's shutdown hook, which runs
        only on a graceful shutdown): not serving, but not dead either, so a draining pod is
        unready without failing liveness. A crash or a SIGKILL never gets here: that worker is dead."""
        self._write(index, STOPPED)

    def _write(self, index: int, text: str) -> None:
        temporary = self.directory / f".worker-{index}.{os.getpid()}"
        temporary.write_text(text)
        os.replace(temporary, self._path(index))

    def status(self) -> RosterStatus:
        groups: dict[str, list[int]] = {"serving": [], "starting": [], "dead": []}
        for index in range(1, self.expected + 1):
            groups[self._state(index)].append(index)
        return RosterStatus(*(tuple(groups[name]) for name in ("serving", "starting", "dead")))

    def _state(self, index: int) -> str:
        try:
            text = self._path(index).read_text()
        except FileNotFoundError:
            return "starting"
        if text == STOPPED:
            return "starting"
        pid, created, *loading = text.split()
        try:
            process = psutil.Process(int(pid))
            gone = process.status() == psutil.STATUS_ZOMBIE or repr(process.create_time()) != created
        except psutil.NoSuchProcess:
            gone = True
        return "dead" if gone else "starting" if loading else "serving"


# ------------------------------------------------------- keep-alive connections per worker ----

# How often a worker re-reads which of its siblings serve (the roster's files) for the census.
CENSUS_ROSTER_TTL_S = 1.0


class ConnectionCensus:
    """How many connections each worker of this server holds, so an over-full worker can hand one on.

    The kernel places each new connection on a worker by a hash of the client's address and
    port (`patches.balance_worker_accepts`), and a keep-alive client stays where it landed. With
    a few connections that often leaves one worker with all of them: 100-application requests
    on 4 connections ran at half the rate, one core busy and one idle, in about one load round
    in three (the load benchmark's spread check: 3/1, 4/0). Each worker publishes its count of
    open connections in a shared file of the server's roster directory (one 8-byte slot per
    worker index, written in place; an aligned 8-byte store is never seen half-written), and
    when it holds clearly more than a serving sibling (`hands_over`), the protocol answers the
    next API request of a connection with `Connection: close` (patches.bounded_http_protocol):
    the client reconnects and the kernel places the new connection afresh, on either worker.

    Only serving siblings count (the roster, re-read every CENSUS_ROSTER_TTL_S): a dead worker's
    last count is never compared with. The margin (at least 2, and a fifth of the own count)
    leaves the random splits of many connections alone (1,040/1,008 stays as it is).
    """

    SLOT = 8

    def __init__(self, roster: WorkerRoster, index: int) -> None:
        self.roster = roster
        self.index = index
        size = self.SLOT * (roster.expected + 1)
        fd = os.open(roster.directory / "connections", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # every worker asks for the same size: whoever is first makes it
            self._slots = memoryview(mmap.mmap(fd, size)).cast("q")
        finally:
            os.close(fd)
        self.leaving = 0  # own connections already told to close, not yet gone
        self._siblings: tuple[int, ...] = ()
        self._siblings_read_at = -CENSUS_ROSTER_TTL_S
        self.publish(0)  # a worker restarted in place starts with none, whatever its predecessor held

    def publish(self, connections: int) -> None:
        """This worker now holds `connections` open connections (less those already leaving)."""
        self._slots[self.index] = connections - self.leaving

    def counts(self) -> dict[int, int]:
        """The published counts of every worker index of the server."""
        return {index: self._slots[index] for index in range(1, self.roster.expected + 1)}

    def hands_over(self, connections: int) -> bool:
        """Whether this worker, holding `connections`, should close one: it holds at least 2 and
        a fifth more than its least loaded serving sibling."""
        own = connections - self.leaving
        siblings = self._serving_siblings()
        if own < 2 or not siblings:
            return False
        gap = own - min(self._slots[index] for index in siblings)
        return gap >= 2 and 5 * gap > own

    def _serving_siblings(self) -> tuple[int, ...]:
        now = time.monotonic()
        if now - self._siblings_read_at >= CENSUS_ROSTER_TTL_S:
            self._siblings = tuple(i for i in self.roster.status().serving if i != self.index)
            self._siblings_read_at = now
        return self._siblings
