"""The stored drift reference, the live counting against it, and the offline report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from credit_pd.dataset import load_dataset
from credit_pd.model_store import get_stored_model
from credit_pd.monitoring.reference import MISSING, OTHER, DriftReference, build_reference, psi, reference_from_store
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def stored_reference(trained_run) -> DriftReference:
    reference = reference_from_store(get_stored_model(trained_run.model_tag))
    assert reference is not None, "training must store the drift reference with the model"
    return reference


def test_reference_is_stored_as_json_with_every_feature(stored_reference: DriftReference, trained_run) -> None:
    assert list(stored_reference.features) == list(trained_run.model.feature_names)
    assert DriftReference.from_dict(json.loads(json.dumps(stored_reference.to_dict()))) == stored_reference
    for binned in stored_reference.features.values():
        assert binned.bins[-1] == MISSING and len(binned.bins) == len(binned.shares) == len(set(binned.bins))
        assert math.isclose(sum(binned.shares), 1.0)
        if binned.kind == "categorical":
            assert binned.bins[-2] == OTHER
        else:
            assert list(binned.edges) == sorted(set(binned.edges))
    assert math.isclose(sum(stored_reference.pd.shares), 1.0) and 0 < stored_reference.pd_mean < 0.2
    # PD bins are log-odds quantiles: about equal shares.
    assert max(stored_reference.pd.shares[:-1]) < 0.2


def test_reference_binning_of_a_known_column() -> None:
    from credit_pd.features import FeatureEncoder

    ages = np.r_[np.arange(91) + 18.0, [np.nan] * 9]  # 18..108: terciles exactly at 48 and 78
    encoder = FeatureEncoder(feature_names=("age",), categorical={}, boolean=())
    reference = build_reference(encoder, ages[:, None], np.full(100, 0.02), numeric_bins=3)
    age = reference.features["age"]
    assert age.edges == (48.0, 78.0) and age.bins == ("<48", "[48, 78)", ">=78", "missing")
    assert age.shares == (0.3, 0.3, 0.31, 0.09)
    assert list(age.bin_indices(np.array([18.0, 47.9, 48.0, 200.0, np.nan]))) == [0, 0, 1, 2, 3]


def test_psi_formula() -> None:
    assert psi([0.5, 0.5], [50, 50]) == 0.0
    assert math.isclose(
        psi([0.5, 0.5], [90, 10]), (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    )
    assert math.isnan(psi([0.5, 0.5], [0, 0]))
    assert psi([0.0, 1.0], [0, 10]) == 0.0  # an empty bin on both sides adds nothing


@pytest.fixture(scope="module")
def shifted_csv(small_sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample with `age` moved up 25 years (capped at the schema's 120), same file format."""
    lines = small_sample_path.read_text().splitlines()
    header = lines[0].split(";")
    col = header.index("age")
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(";")
        fields[col] = repr(min(float(fields[col]) + 25, 120.0))
        out.append(";".join(fields))
    path = tmp_path_factory.mktemp("shifted") / "shifted.csv"
    path.write_text("\n".join(out) + "\n")
    return path


def test_offline_report_finds_the_shifted_feature(trained_run, stored_reference, shifted_csv: Path, schema) -> None:
    from credit_pd.monitoring.report import drift_report

    frame = load_dataset(shifted_csv, schema)
    report = drift_report(trained_run.model, stored_reference, frame, trained_run.model_tag)
    assert report.features[0].name == "age" and report.features[0].psi > 0.25
    assert all(d.psi < 0.1 for d in report.features[1:]), [(d.name, d.psi) for d in report.features[1:4]]
    assert report.features[0].out_of_range_share > 0


def test_report_cli_prints_psi_and_writes_html(trained_run, shifted_csv: Path, tmp_path: Path) -> None:
    page = tmp_path / "drift.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "credit_pd.monitoring.report",
            "--data",
            str(shifted_csv),
            "--model-tag",
            trained_run.model_tag,
            "--html",
            str(page),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    first = next(line for line in lines if line.startswith("age "))
    assert "shifted" in first and "PD (log-odds bins)" in result.stdout
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 42 and "shifted" in text


def test_report_cli_names_a_bad_file(trained_run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("uuid;whatever\n1;2\n")
    result = subprocess.run(
        [sys.executable, "-m", "credit_pd.monitoring.report", "--data", str(bad), "--model-tag", trained_run.model_tag],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "missing columns" in result.stderr


def test_live_counts_match_the_reference_binning(
    trained_run, stored_reference, small_sample_path: Path, schema
) -> None:
    """The vectorised live counting gives the reference's own bins, unseen labels go to `other`,
    and a second monitor in the same process (another model) still works."""
    from credit_pd.client import requests_from_frame
    from credit_pd.monitoring.live import LiveMonitor

    encoder = trained_run.model.encoder
    records = requests_from_frame(load_dataset(small_sample_path, schema).head(300), schema)
    records[0]["merchant_group"] = "never seen"
    matrix = encoder.encode_records(records)
    monitor = LiveMonitor(stored_reference, encoder, "test:one")
    counts, unseen, _ = monitor.feature_bin_counts(records, matrix)
    for i, name in enumerate(monitor.feature_order):
        binned, col = stored_reference.features[name], encoder.feature_names.index(name)
        table = binned.code_to_bin(encoder.categorical[name]) if name in encoder.categorical else None
        flag = np.array([name == "merchant_group" and r is records[0] for r in records]) if table is not None else None
        expected = binned.counts(matrix[:, col], table, flag)
        assert list(counts[monitor.feature_offsets[i] : monitor.feature_offsets[i] + len(binned.bins)]) == list(
            expected
        ), name
    assert (
        dict(zip(monitor.categorical_names, unseen.tolist(), strict=False))["merchant_group"] == 1 and unseen.sum() == 1
    )
    monitor.observe(records, matrix, trained_run.model.predict_pd(matrix))
    from prometheus_client import REGISTRY

    scored = REGISTRY.get_sample_value("credit_pd_scored_applications_total", {"model_tag": "test:one"})
    assert scored == len(records), "counts are written when observed, not later"
    LiveMonitor(stored_reference, encoder, "test:two")


def test_grade_shares_are_the_training_pds_per_master_scale_grade(
    trained_run, stored_reference, small_sample_path: Path, schema
) -> None:
    """The reference's grade shares are the stored model's grades of the training rows, and live
    monitoring counts served applications per grade from the grades the scorer computed."""
    from prometheus_client import REGISTRY

    from credit_pd.monitoring.live import LiveMonitor

    model = trained_run.model
    grades = stored_reference.grades
    assert grades is not None and list(grades.bins) == model.master_scale.names
    matrix = model.encoder.encode_frame(load_dataset(small_sample_path, schema))
    expected = np.bincount(model.master_scale.grade_index(model.predict_pd(matrix)), minlength=len(grades.bins)) / len(
        matrix
    )
    np.testing.assert_allclose(grades.shares, expected, rtol=0, atol=1e-12)
    monitor = LiveMonitor(stored_reference, model.encoder, "test:grades")
    served = matrix[:200]
    decision = model.decide(served)
    monitor.observe([{}] * len(served), served, decision.pd, decision.grade_index)
    counted = {
        name: REGISTRY.get_sample_value("credit_pd_grade_total", {"model_tag": "test:grades", "grade": name})
        for name in grades.bins
    }
    assert counted == {
        name: float(n)
        for name, n in zip(grades.bins, np.bincount(decision.grade_index, minlength=len(grades.bins)), strict=False)
    }
    shares = {
        name: REGISTRY.get_sample_value("credit_pd_reference_grade_share", {"model_tag": "test:grades", "grade": name})
        for name in grades.bins
    }
    assert shares == dict(zip(grades.bins, grades.shares, strict=False))
