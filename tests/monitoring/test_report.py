"""The offline drift report's sample-size rule (issue 19, finding 12): warn below 10 rows per bin, --strict exits 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from credit_pd.monitoring.reference import BinnedFeature, psi
from credit_pd.monitoring.report import EXIT_SMALL_SAMPLE, MIN_ROWS_PER_BIN, DriftReport, _variable
from tests.conftest import REPO_ROOT

# Ten equal training bins and an empty `missing` bin: 10 bins count, so 100 rows are needed.
TEN_BINS = BinnedFeature(
    name="x",
    kind="numeric",
    bins=tuple(f"b{i}" for i in range(10)) + ("missing",),
    shares=(0.1,) * 10 + (0.0,),
    edges=tuple(float(i) for i in range(1, 10)),
)


def report_of(n_rows: int) -> DriftReport:
    counts = np.bincount(np.arange(n_rows) % 10, minlength=11)
    drift = _variable(TEN_BINS, counts)
    return DriftReport(
        features=[drift], pd=drift, n_rows=n_rows, pd_mean_new=0.01, pd_mean_reference=0.01, model_tag="m:1"
    )


def test_rows_needed_counts_the_non_empty_training_bins():
    assert _variable(TEN_BINS, np.ones(11)).rows_needed == 10 * MIN_ROWS_PER_BIN


def test_too_few_rows_give_one_warning_with_the_rows_needed():
    warning = report_of(99).sample_warning()
    assert warning == (
        "warning: 99 row(s) are too few for a reliable PSI of 2 of 2 variables (fewer than 10 rows per bin; "
        "their verdicts are marked *): at least 100 rows are needed"
    )
    assert report_of(100).sample_warning() is None and report_of(100).too_small_for == []


def test_the_threshold_is_where_noise_alone_reaches_the_moving_line():
    """Rows drawn from the training shares themselves (no drift): mean PSI ~ (bins - 1) / rows."""
    rng = np.random.default_rng(0)
    shares = np.full(10, 0.1)

    def mean_psi(n_rows: int) -> float:
        return float(np.mean([psi(shares, rng.multinomial(n_rows, shares)) for _ in range(400)]))

    at_rule = mean_psi(10 * MIN_ROWS_PER_BIN)
    assert 0.05 < at_rule < 0.1  # ~ 9 / 100: just under "moving" at the rule's threshold
    assert mean_psi(10) > 0.25  # one row per bin: noise alone reads "shifted"


@pytest.fixture(scope="module")
def one_row_csv(small_sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = small_sample_path.read_text().splitlines()
    path = tmp_path_factory.mktemp("one-row") / "one.csv"
    path.write_text("\n".join(lines[:2]) + "\n")
    return path


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "credit_pd.monitoring.report", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_one_row_warns_and_strict_exits_non_zero(trained_run, one_row_csv: Path):
    plain = run_report("--data", str(one_row_csv), "--model-tag", trained_run.model_tag)
    assert plain.returncode == 0, plain.stderr[-2000:]
    (warning,) = plain.stderr.strip().splitlines()
    assert warning.startswith("warning: 1 row(s) are too few for a reliable PSI of ")
    assert warning in plain.stdout  # the printed report carries it too, above the table
    age = next(line for line in plain.stdout.splitlines() if line.startswith("age "))
    assert "*" in age
    strict = run_report("--data", str(one_row_csv), "--model-tag", trained_run.model_tag, "--strict")
    assert strict.returncode == EXIT_SMALL_SAMPLE and strict.stderr.strip() == warning


def test_strict_passes_on_a_sample_large_enough(trained_run, small_sample_path: Path):
    result = run_report("--data", str(small_sample_path), "--model-tag", trained_run.model_tag, "--strict")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning" not in result.stdout and "*" not in result.stdout


def test_a_bom_and_crlf_file_reports_like_the_plain_one(trained_run, small_sample_path: Path, tmp_path: Path):
    lines = small_sample_path.read_text().splitlines()[:3000]
    plain, windows = tmp_path / "plain.csv", tmp_path / "windows.csv"
    plain.write_text("\n".join(lines) + "\n")
    windows.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())
    results = [run_report("--data", str(path), "--model-tag", trained_run.model_tag) for path in (plain, windows)]
    assert [r.returncode for r in results] == [0, 0], results[1].stderr[-2000:]
    assert results[1].stdout == results[0].stdout and "Drift of 2,999 rows" in results[0].stdout
