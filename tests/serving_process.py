"""Start a real `bentoml serve` subprocess on a free port and stop it: shared by the HTTP tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

SERVER_START_TIMEOUT_S = 120
BENTOML_WORKER_MODULE = "_bentoml_impl.worker.service"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bentoml_serve(target: str, env: dict[str, str], cwd: Path, log_path: Path) -> Iterator[str]:
    """Serve `target` (import path or bento tag); yields the base URL once /readyz answers 200."""
    with bentoml_server(target, env, cwd, log_path) as server:
        yield server.base


@dataclass
class Served:
    """A running `bentoml serve`: its URL and its process (the workers are its children)."""

    base: str
    process: subprocess.Popen

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])

    def workers(self) -> list[psutil.Process]:
        """The live API worker processes, by their worker index order of start."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [
            c
            for c in children
            if c.is_running() and c.status() != psutil.STATUS_ZOMBIE and BENTOML_WORKER_MODULE in " ".join(c.cmdline())
        ]


@contextmanager
def bentoml_server(target: str, env: dict[str, str], cwd: Path, log_path: Path) -> Iterator[Served]:
    """`bentoml_serve`, yielding the process too (for tests that signal or kill it or its workers)."""
    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", target, "--port", str(port), "--host", "127.0.0.1"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, log_path)
        yield Served(base, process)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_until_ready(base: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bentoml serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"bentoml serve not ready after {SERVER_START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")
