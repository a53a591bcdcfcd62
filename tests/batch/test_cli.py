"""`python batch_score.py`: fails fast (before Spark) on a bad model tag or a missing Java, and on the
embedded sample writes Parquet whose PDs equal train.py's predictions file for the same uuids."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import bentoml
import numpy as np
import pandas as pd
import pytest

from credit_pd.batch.environment import SparkEnvironmentError, require_java
from tests.conftest import REPO_ROOT

# Printed by pyspark when it starts a JVM: its absence shows a run stopped before Spark.
SPARK_STARTED = "log4j"
SUMMARY = re.compile(r"^batch_score: ([\d,]+) rows scored, ([\d,]+) rejects \(.+\), ([\d,]+) rows/s over [\d.]+ s, output (.+)$")


def batch_score(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO_ROOT / "batch_score.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_unknown_model_tag_fails_before_spark_starts(small_sample_path, tmp_path):
    result = batch_score("--input", str(small_sample_path), "--output", str(tmp_path / "out"), "--model-tag", "credit_pd_model:nosuchversion")
    assert result.returncode == 2
    assert "batch_score: error: model 'credit_pd_model:nosuchversion' is not in the BentoML model store" in result.stderr
    assert SPARK_STARTED not in result.stderr and not (tmp_path / "out").exists()


def test_a_model_that_is_not_a_credit_pd_scorer_is_refused_before_spark(small_sample_path, tmp_path):
    other = bentoml.picklable_model.save_model("not_a_credit_pd_model", {"weights": [1, 2, 3]})
    result = batch_score("--input", str(small_sample_path), "--output", str(tmp_path / "out"), "--model-tag", str(other.tag))
    assert result.returncode == 2
    assert f"model '{other.tag}' is not a credit_pd scoring model" in result.stderr
    assert SPARK_STARTED not in result.stderr


def fake_java(directory: Path, version_line: str) -> Path:
    java = directory / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return directory


def test_java_too_old_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'openjdk version "11.0.22" 2024-01-16')))
    with pytest.raises(SparkEnvironmentError, match=r"needs Java 17\+ but .* is Java 11: install it with `apt-get install -y openjdk-17-jre-headless`"):
        require_java()


def test_no_java_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SparkEnvironmentError, match="no `java` was found .*openjdk-17-jre-headless"):
        require_java()


def test_java_8_version_string_is_read_as_8(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'java version "1.8.0_392"')))
    with pytest.raises(SparkEnvironmentError, match="is Java 8:"):
        require_java()


def test_this_machine_has_java_17_or_newer():
    assert require_java() >= 17


@pytest.mark.slow
def test_embedded_sample_run_equals_train_py_predictions(small_sample_path, trained_run, tmp_path):
    """The issue's acceptance run: CSV in, Parquet out, PDs equal data/test_predictions.csv by uuid."""
    out = tmp_path / "run"
    result = batch_score("--input", str(small_sample_path), "--output", str(out), "--model-tag", trained_run.model_tag,
                         "--master", "local[2]", "--top-k", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [l for l in result.stdout.splitlines() if l.startswith("batch_score:")]
    match = SUMMARY.match(line)
    assert match, line
    scores = pd.read_parquet(out / "scores").set_index("uuid")
    assert int(match.group(1).replace(",", "")) == len(scores) and match.group(2) == "0"
    assert match.group(4) == f"{out}/scores"
    expected = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    np.testing.assert_allclose(scores.loc[expected.index, "pd"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    assert list(scores.columns[:8]) == ["pd", "model_tag", "base_value", "raw_score", "feature_1", "value_1", "contribution_1", "feature_2"]
    assert "feature_4" not in scores
