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
SUMMARY = re.compile(
    r"^batch_score: ([\d,]+) rows in = ([\d,]+) scored \+ ([\d,]+) rejected \(.+\), ([\d,]+) rows/s over [\d.]+ s, "
    r"output (.+)$"
)


def batch_score(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "batch_score.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_unknown_model_tag_fails_before_spark_starts(small_sample_path, tmp_path):
    result = batch_score(
        "--input",
        str(small_sample_path),
        "--output",
        str(tmp_path / "out"),
        "--model-tag",
        "credit_pd_model:nosuchversion",
    )
    assert result.returncode == 2
    assert (
        "batch_score: error: model 'credit_pd_model:nosuchversion' is not in the BentoML model store" in result.stderr
    )
    assert SPARK_STARTED not in result.stderr and not (tmp_path / "out").exists()


def test_a_model_that_is_not_a_credit_pd_scorer_is_refused_before_spark(small_sample_path, tmp_path):
    other = bentoml.picklable_model.save_model("not_a_credit_pd_model", {"weights": [1, 2, 3]})
    result = batch_score(
        "--input", str(small_sample_path), "--output", str(tmp_path / "out"), "--model-tag", str(other.tag)
    )
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
    with pytest.raises(
        SparkEnvironmentError,
        match=r"needs Java 17\+ but .* is Java 11: install it with `apt-get install -y openjdk-17-jre-headless`",
    ):
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
    result = batch_score(
        "--input",
        str(small_sample_path),
        "--output",
        str(out),
        "--model-tag",
        trained_run.model_tag,
        "--master",
        "local[2]",
        "--top-k",
        "3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [text for text in result.stdout.splitlines() if text.startswith("batch_score:")]
    match = SUMMARY.match(line)
    assert match, line
    scores = pd.read_parquet(out / "scores").set_index("uuid")
    assert (
        int(match.group(1).replace(",", "")) == int(match.group(2).replace(",", "")) == len(scores)
        and match.group(3) == "0"
    )
    assert match.group(5) == f"{out}/scores"
    expected = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    np.testing.assert_allclose(scores.loc[expected.index, "pd"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    assert list(scores.columns[:9]) == [
        "pd",
        "grade",
        "model_tag",
        "base_value",
        "raw_score",
        "feature_1",
        "value_1",
        "contribution_1",
        "feature_2",
    ]
    assert {"reason_1", "reason_1_contribution", "reason_4", "reason_4_contribution", "warnings"} <= set(scores.columns)
    assert "feature_4" not in scores


# ---- paths refused before Spark starts (issue 19, findings 8 and 9) ----


@pytest.fixture
def no_spark(monkeypatch):
    """Starting Spark fails the test: what these runs refuse must be refused before it."""
    import credit_pd.batch.job as job

    def refuse(*args, **kwargs):
        raise AssertionError("Spark was started")

    monkeypatch.setattr(job, "build_session", refuse)


def run_main(*args: str) -> int:
    from credit_pd.batch.cli import main

    return main(list(args))


def bad_output_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    existing_file = tmp_path / "scores.parquet"
    existing_file.write_text("x")
    full = tmp_path / "full"
    (full / "notes").mkdir(parents=True)
    parent_file = tmp_path / "a-file"
    parent_file.write_text("x")
    return {
        "existing file": (existing_file, f"output {existing_file} is an existing file; --output names a directory"),
        "non-empty dir": (
            full,
            f"output {full} already exists and is not empty (notes); choose another --output or pass --overwrite",
        ),
        "parent is a file": (
            parent_file / "out",
            f"output {parent_file / 'out'} cannot be created: {parent_file} is a file",
        ),
    }


@pytest.mark.parametrize("case", ["existing file", "non-empty dir", "parent is a file"])
def test_a_bad_output_is_refused_before_spark_in_one_line(
    trained_run, small_sample_path, tmp_path, no_spark, capsys, case
):
    output, message = bad_output_cases(tmp_path)[case]
    assert (
        run_main("--input", str(small_sample_path), "--output", str(output), "--model-tag", trained_run.model_tag) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"batch_score: error: {message}")


def test_overwrite_replaces_only_a_previous_runs_outputs(trained_run, small_sample_path, tmp_path, no_spark, capsys):
    output = tmp_path / "out"
    (output / "scores").mkdir(parents=True)
    (output / "keep-me.txt").write_text("x")
    assert (
        run_main(
            "--input",
            str(small_sample_path),
            "--output",
            str(output),
            "--model-tag",
            trained_run.model_tag,
            "--overwrite",
        )
        == 2
    )
    assert "holds more than a previous run's scores/ and rejects/ (keep-me.txt)" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_parent_is_refused_before_spark(trained_run, small_sample_path, tmp_path, no_spark, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert (
        run_main(
            "--input", str(small_sample_path), "--output", str(locked / "out"), "--model-tag", trained_run.model_tag
        )
        == 2
    )
    assert f"{locked} is not writable by this user" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("encode", "expected"),
    [
        (lambda text: text.encode("latin-1"), r", line 9: bytes 0xe9 .* not valid UTF-8 .*not UTF-8: save as UTF-8$"),
        (
            lambda text: text.encode("utf-16"),
            r"is UTF-16 \(it starts with a UTF-16 byte-order mark\), not UTF-8: save as UTF-8$",
        ),
    ],
)
def test_a_book_that_is_not_utf8_is_refused_before_spark_naming_the_line(
    trained_run, small_sample_path, tmp_path, no_spark, capsys, encode, expected
):
    lines = small_sample_path.read_text().splitlines()[:20]
    cells = lines[8].split(";")
    cells[lines[0].split(";").index("merchant_group")] = "Caf\u00e9"
    lines[8] = ";".join(cells)
    book = tmp_path / "book.csv"
    book.write_bytes(encode("\n".join(lines) + "\n"))
    assert run_main("--input", str(book), "--output", str(tmp_path / "out"), "--model-tag", trained_run.model_tag) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and re.search(expected, err), err
    assert err.startswith(f"batch_score: error: input {book}")
