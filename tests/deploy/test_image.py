"""The real OCI image: trained model -> bento -> `bentoml containerize --backend podman` -> a
running container that answers /readyz and a real /predict as a non-root user.

Opt-in, because it needs root, podman and debootstrap, and takes a few minutes (more on the
first run, which builds the Debian base image and downloads the wheels):

    make image-test

(or `CREDIT_PD_IMAGE_TEST=1 .venv/bin/python -m pytest tests/deploy/test_image.py -m integration`
once podman, runc and debootstrap are installed). Everything happens in a temporary BentoML
home: a small generated sample, a quick training run, `bentoml build` of this repository's
bentofile (whose docker.base_image is the local Debian base), then scripts/build_image.sh, which
builds that base image when it is missing and runs `bentoml containerize --backend podman`.
The container is started with the flags this kind of machine needs (runc, explicit ulimits,
host network) on a free port (the image's entrypoint honours $PORT) and is always removed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.deploy.podman_tools import CONTAINERIZE_TIMEOUT_S, SAMPLE_ROWS, podman, run

RUN_HINT = (
    "image test is opt-in (root, podman, several minutes): run `make image-test`, or "
    "CREDIT_PD_IMAGE_TEST=1 .venv/bin/python -m pytest tests/deploy/test_image.py -m integration"
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CREDIT_PD_IMAGE_TEST") != "1", reason=RUN_HINT),
]

IMAGE_TAG = os.environ.get("CREDIT_PD_IMAGE_TEST_TAG", "localhost/credit-pd-service:test")
# What `podman run` needs here: runc, ulimits the sandbox allows, no network namespace.
PODMAN_RUN_FLAGS = [
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
    "--network",
    "host",
]
READY_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def measurements() -> dict[str, object]:
    values: dict[str, object] = {}
    yield values
    print("\nimage test measurements: " + json.dumps(values, indent=2, default=str))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("podman", "bash"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: `make image-test` installs podman, runc and debootstrap")
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def build_env(workdir: Path) -> dict[str, str]:
    """A BentoML home of its own, so neither the developer's store nor the unit tests' is used."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDIT_PD_")}
    env.update(BENTOML_HOME=str(workdir / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    return env


@pytest.fixture(scope="module")
def dataset(workdir: Path) -> Path:
    from credit_pd.config import SampleConfig
    from credit_pd.training.sample import write_sample

    path = workdir / "dataset.csv"
    write_sample(path, SampleConfig(n_rows=SAMPLE_ROWS))
    return path


@pytest.fixture(scope="module")
def bento_tag(dataset: Path, workdir: Path, build_env: dict[str, str], measurements) -> str:
    """Train on the small sample into the temporary store, then `bentoml build` the repository."""
    measurements["train_s"] = round(
        run(
            [
                sys.executable,
                "train.py",
                "--data",
                str(dataset),
                "--folds",
                "2",
                "--quiet",
                "--predictions",
                str(workdir / "predictions.csv"),
                "--report-dir",
                str(workdir / "reports"),
            ],
            env=build_env,
            log=workdir / "train.log",
            timeout=900,
        ),
        1,
    )
    log = workdir / "bento_build.log"
    measurements["bento_build_s"] = round(
        run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], env=build_env, log=log, timeout=600), 1
    )
    tags = [line.split("__tag__:", 1)[1].strip() for line in log.read_text().splitlines() if "__tag__:" in line]
    assert tags, f"no bento tag in the build output:\n{log.read_text()[-2000:]}"
    return tags[-1]


@pytest.fixture(scope="module")
def model_tag(bento_tag: str, build_env: dict[str, str]) -> str:
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, bentoml; print(bentoml.models.get('credit_pd_model:latest').tag)"],
        env=build_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return probe.stdout.strip()


@pytest.fixture(scope="module")
def image(bento_tag: str, workdir: Path, build_env: dict[str, str], measurements) -> str:
    """scripts/build_image.sh: the Debian base image when absent, then containerize with podman."""
    env = {
        **build_env,
        "IMAGE_TAG": IMAGE_TAG,
        "PYTHON": sys.executable,
        "BENTOML": str(Path(sys.executable).with_name("bentoml")),
    }
    previous = podman("image", "inspect", "--format", "{{.Id}}", IMAGE_TAG).stdout.strip()
    measurements["containerize_s"] = round(
        run(
            ["bash", "scripts/build_image.sh", bento_tag],
            env=env,
            log=workdir / "build_image.log",
            timeout=CONTAINERIZE_TIMEOUT_S,
        ),
        1,
    )
    # The previous run's image is untagged now; drop it (its shared layers stay as build cache).
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", IMAGE_TAG).stdout.strip():
        podman("rmi", previous)
    size = podman("image", "inspect", "--format", "{{.Size}}", IMAGE_TAG)
    assert size.returncode == 0, size.stderr
    measurements["image"] = IMAGE_TAG
    measurements["image_size_mb"] = round(int(size.stdout.strip()) / 1e6)
    measurements["base_image"] = os.environ.get("BASE_IMAGE") or "the bentofile's (python:3.11-slim)"
    return IMAGE_TAG


@pytest.fixture(scope="module")
def container(image: str, measurements) -> dict[str, str]:
    """The image running with the service on a free host port; removed whatever happens."""
    name = f"credit-pd-image-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    start = time.monotonic()
    started = podman("run", "--detach", "--name", name, *PODMAN_RUN_FLAGS, "--env", f"PORT={port}", image)
    try:
        assert started.returncode == 0, f"podman run failed: {started.stderr}"
        base = f"http://127.0.0.1:{port}"
        deadline = start + READY_TIMEOUT_S
        while True:
            state = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            if state != "true":
                pytest.fail(
                    f"container exited before /readyz:\n{podman('logs', name).stdout[-4000:]}"
                    f"{podman('logs', name).stderr[-4000:]}"
                )
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logs = podman("logs", name)
                pytest.fail(f"/readyz not 200 after {READY_TIMEOUT_S} s:\n{(logs.stdout + logs.stderr)[-4000:]}")
            time.sleep(0.25)
        measurements["start_to_ready_s"] = round(time.monotonic() - start, 1)
        yield {"name": name, "base": base}
    finally:
        podman("rm", "--force", "--time", "10", name)


def test_readyz(container):
    response = httpx.get(f"{container['base']}/readyz", timeout=10)
    assert response.status_code == 200


def test_predict_scores_an_application(container, dataset, model_tag, measurements):
    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import labelled_mask, load_dataset
    from credit_pd.schema import load_schema

    schema = load_schema()
    frame = load_dataset(dataset, schema)
    [application] = requests_from_frame(frame[~labelled_mask(frame, schema)].head(1), schema)
    response = httpx.post(f"{container['base']}/predict", json={"applications": application | {"top_k": 3}}, timeout=60)
    assert response.status_code == 200, response.text
    [result] = response.json()
    measurements["predict_response"] = result
    assert result["uuid"] == application["uuid"]
    assert result["model_tag"] == model_tag
    assert 0.0 <= result["pd"] <= 1.0
    assert len(result["explanation"]["contributions"]) == 3


def test_runs_as_non_root(container, measurements):
    uid = podman("exec", container["name"], "id", "-u")
    assert uid.returncode == 0, uid.stderr
    measurements["container_uid"] = int(uid.stdout.strip())
    assert int(uid.stdout.strip()) != 0
    # Every process of the container (server and workers), not only what `exec` starts.
    users = podman("top", container["name"], "user")
    assert users.returncode == 0, users.stderr
    assert "root" not in users.stdout.split()[1:], users.stdout


def test_image_is_slim_and_built_on_the_chosen_base(image, container):
    """Under 500 MB (no compiler toolchain, no git), Python 3.11, Debian 12 on the air-gapped base."""
    user = podman("image", "inspect", "--format", "{{.Config.User}}", image)
    assert user.stdout.strip() == "bentoml"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    assert size < 500e6, f"image is {size / 1e6:.0f} MB"
    probe = podman(
        "exec",
        container["name"],
        "sh",
        "-c",
        "cat /etc/debian_version; python -c 'import platform; print(platform.python_version())'; "
        "for tool in gcc cc make git uv; do command -v $tool || true; done",
    )
    assert probe.returncode == 0, probe.stderr
    debian, python, *tools = probe.stdout.split()
    assert tools == [], f"build tools left in the image: {tools}"
    assert python.startswith("3.11."), python
    if os.environ.get("BASE_IMAGE", "").startswith("localhost/credit-pd-base"):
        assert debian.startswith("12."), debian
