"""Shared steps of the opt-in image and cluster tests: logged build steps, podman calls, training.

Both tests build the real service image from a fresh training run in a temporary BentoML home
(scripts/build_image.sh, `bentoml containerize --backend podman`); BASE_IMAGE in the environment
selects the base (`make image-test` / `make cluster-test` pass the air-gapped Debian base).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SAMPLE_ROWS = 20_000
CONTAINERIZE_TIMEOUT_S = 45 * 60
AIRGAP_BASE_PREFIX = "localhost/credit-pd-base"


def run(cmd: list[str], *, env: dict[str, str], log: Path, timeout: float) -> float:
    """Run one build step with its output in `log`; fail with the log's tail. Returns seconds."""
    start = time.monotonic()
    with log.open("w") as handle:
        try:
            result = subprocess.run(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(cmd)} took over {timeout:.0f} s:\n{log.read_text()[-4000:]}")
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {result.returncode}:\n{log.read_text()[-4000:]}")
    return time.monotonic() - start


def podman(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def bentoml_env(workdir: Path) -> dict[str, str]:
    """A BentoML home of its own, so neither the developer's store nor the unit tests' is used."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDIT_PD_")}
    env.update(BENTOML_HOME=str(workdir / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    return env


def write_dataset(path: Path) -> Path:
    from credit_pd.config import SampleConfig
    from credit_pd.training.sample import write_sample

    write_sample(path, SampleConfig(n_rows=SAMPLE_ROWS))
    return path


def train(dataset: Path, out: Path, env: dict[str, str], *extra: str) -> tuple[str, Path]:
    """train.py into the temporary store; (model tag, predictions file)."""
    out.mkdir(parents=True, exist_ok=True)
    predictions = out / "predictions.csv"
    log = out / "train.log"
    run(
        [
            sys.executable,
            "train.py",
            "--data",
            str(dataset),
            "--quiet",
            "--predictions",
            str(predictions),
            "--report-dir",
            str(out / "reports"),
            *extra,
        ],
        env=env,
        log=log,
        timeout=900,
    )
    tags = [line.rsplit(" ", 1)[-1] for line in log.read_text().splitlines() if "saved to the BentoML store as" in line]
    assert tags, f"no model tag in the training output:\n{log.read_text()[-2000:]}"
    return tags[-1], predictions


def build_bento(workdir: Path, env: dict[str, str]) -> str:
    log = workdir / "bento_build.log"
    run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], env=env, log=log, timeout=600)
    tags = [line.split("__tag__:", 1)[1].strip() for line in log.read_text().splitlines() if "__tag__:" in line]
    assert tags, f"no bento tag in the build output:\n{log.read_text()[-2000:]}"
    return tags[-1]


def build_image(bento_tag: str, image_tag: str, workdir: Path, env: dict[str, str]) -> tuple[float, int]:
    """scripts/build_image.sh; replaces the previous image of that tag. (seconds, bytes)."""
    build_env = {
        **env,
        "IMAGE_TAG": image_tag,
        "PYTHON": sys.executable,
        "BENTOML": str(Path(sys.executable).with_name("bentoml")),
    }
    previous = podman("image", "inspect", "--format", "{{.Id}}", image_tag).stdout.strip()
    seconds = run(
        ["bash", "scripts/build_image.sh", bento_tag],
        env=build_env,
        log=workdir / "build_image.log",
        timeout=CONTAINERIZE_TIMEOUT_S,
    )
    # The previous run's image is untagged now; drop it (its shared layers stay as build cache).
    if previous and previous != podman("image", "inspect", "--format", "{{.Id}}", image_tag).stdout.strip():
        podman("rmi", previous)
    size = podman("image", "inspect", "--format", "{{.Size}}", image_tag)
    assert size.returncode == 0, size.stderr
    return seconds, int(size.stdout.strip())


def first_unlabelled_application(dataset: Path) -> dict:
    """The first unlabelled row of the dataset as a /predict application (what train.py scores)."""
    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import labelled_mask, load_dataset
    from credit_pd.schema import load_schema

    schema = load_schema()
    frame = load_dataset(dataset, schema)
    [application] = requests_from_frame(frame[~labelled_mask(frame, schema)].head(1), schema)
    return application


def predicted_pd(predictions: Path, uuid: str) -> float:
    """train.py's PD for one uuid (its `uuid,pd` file)."""
    import pandas as pd

    frame = pd.read_csv(predictions)
    return float(frame.loc[frame["uuid"] == uuid, "pd"].item())
