"""`bentoml build` packages a bento that serves on its own, outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT
from tests.serving_process import bentoml_serve

BUILD_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def bento_tag(trained_run) -> str:
    env = {**os.environ, "CREDIT_PD_MODEL_TAG": trained_run.model_tag}
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    tags = [line.split("__tag__:", 1)[1].strip() for line in built.stdout.splitlines() if "__tag__:" in line]
    assert tags, f"no tag in `bentoml build -o tag` output:\n{built.stdout[-2000:]}"
    return tags[-1]


def test_bento_holds_service_and_model_but_no_training_wing(bento_tag, trained_run):
    import bentoml

    bento = bentoml.get(bento_tag)
    source = Path(bento.path) / "src"
    assert (source / "service.py").is_file()
    assert (source / "credit_pd" / "serving" / "scorer.py").is_file()
    assert not (source / "credit_pd" / "training").exists(), "training-only code should stay out of the bento"
    assert not (source / "credit_pd" / "schemas").exists(), "the stored model carries its schema; no schema file ships"
    assert not any(part.startswith(".venv") for path in source.rglob("*") for part in path.relative_to(source).parts)
    assert [str(model.tag) for service in bento.info.services for model in service.models] == [trained_run.model_tag]


@pytest.mark.integration
@pytest.mark.slow
def test_built_bento_serves_the_trained_pd(bento_tag, trained_run, small_sample_path, schema, tmp_path):
    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import labelled_mask, load_dataset

    frame = load_dataset(small_sample_path, schema)
    applications = requests_from_frame(frame[~labelled_mask(frame, schema)].head(5), schema)
    expected = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREDIT_PD_")}
    with bentoml_serve(bento_tag, env, tmp_path, tmp_path / "serve.log") as base:
        response = httpx.post(f"{base}/predict", json={"applications": applications}, timeout=30)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["uuid"] for a in answers] == [a["uuid"] for a in applications]
    for answer in answers:
        assert answer["pd"] == pytest.approx(expected[answer["uuid"]], abs=1e-9)
        assert answer["model_tag"] == trained_run.model_tag
        assert answer["explanation"]["contributions"], "the bento should explain by default"
