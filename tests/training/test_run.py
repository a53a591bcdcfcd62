"""The training run's outputs: predictions contract, store round trip, report, all-or-nothing writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.errors import DatasetError
from credit_pd.model_store import load_from_store
from credit_pd.training.run import run_training
from tests.conftest import FIXTURES


def test_predictions_file_contract(trained_run, small_sample_path, schema):
    predictions = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str})
    frame = load_dataset(small_sample_path, schema)
    unlabelled_ids = frame.loc[~labelled_mask(frame, schema), schema.id_column]
    assert trained_run.predictions_path.read_text().splitlines()[0] == "uuid,pd"
    assert list(predictions.columns) == ["uuid", "pd"]
    assert predictions["uuid"].tolist() == unlabelled_ids.tolist()
    assert predictions["pd"].between(0, 1).all() and predictions["pd"].notna().all()
    assert trained_run.n_scored == len(unlabelled_ids) > 0


def test_store_round_trip_reproduces_the_csv_exactly(trained_run, small_sample_path, schema):
    model = load_from_store(trained_run.model_tag)
    frame = load_dataset(small_sample_path, schema)
    unlabelled = frame[~labelled_mask(frame, schema)]
    predictions = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str})
    reproduced = model.predict_pd(model.encoder.encode_frame(unlabelled))
    np.testing.assert_array_equal(reproduced, predictions["pd"].to_numpy())


def test_store_metadata_tells_a_reviewer_what_the_model_is(trained_run, small_sample_path):
    import bentoml

    from credit_pd.training.facts import file_sha256

    info = bentoml.models.get(trained_run.model_tag).info
    meta = info.metadata
    assert meta["data"]["sha256"] == file_sha256(small_sample_path)
    assert meta["data"]["file_name"] == small_sample_path.name
    assert set(meta["cv_summary"]) == {"roc_auc", "pr_auc", "log_loss", "brier", "ece"}
    assert len(meta["cv_per_fold"]) == 3
    assert meta["schema"]["name"] == "klarna_bnpl"
    assert {"lightgbm", "bentoml", "scikit-learn"} <= set(meta["library_versions"])
    assert meta["calibration"]["method"] == "platt"
    assert meta["training_seconds"] > 0
    assert meta["shape"]["name"] in meta["shape"]["candidates_inner_log_loss"] and meta["shape"]["reason"]
    assert meta["shape"]["family"] in {"GLM", "GLM-offset", "trees", "blend"} and meta["shape"]["selection_seconds"] > 0
    assert meta["explained_rows_per_s"] > 0
    assert info.labels["schema"] == "klarna_bnpl"


def test_card_and_metadata_read_the_same_facts(trained_run):
    card = trained_run.report_path.read_text()
    facts = trained_run.facts
    assert facts.model_tag == trained_run.model_tag
    assert f"{facts.explained_rows_per_s:,.0f} rows/s" in card and facts.shape.description in card
    assert f"`{facts.data.file_name}`" in card and str(trained_run.report_path.parent.parent) not in card
    for frozen in ("0.0492 vs 0.0486", "~10×", "on 2 cores"):
        assert frozen not in card


def test_report_has_card_and_plots(trained_run):
    report_dir = trained_run.report_path.parent
    for plot in ("roc_pr.png", "calibration.png", "shap_summary.png"):
        assert (report_dir / plot).stat().st_size > 10_000, plot
    card = trained_run.report_path.read_text()
    for section in ("**Validation.**", "**Limits.**", "roc_auc", "shap_summary.png", trained_run.model_tag):
        assert section in card
    # One page of prose; the tables (metrics, the per-grade back-test with one row per grade) come on top.
    assert len([line for line in card.splitlines() if not line.startswith("|")]) < 60


def test_bad_data_writes_nothing(tmp_path, small_sample_path, fast_training_config):
    from credit_pd.schema import DEFAULT_SCHEMA_PATH

    lines = small_sample_path.read_text().splitlines()
    cells = lines[5].split(";")
    cells[lines[0].split(";").index("age")] = "old"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines[:5], ";".join(cells), *lines[6:]]) + "\n")
    predictions, reports = tmp_path / "predictions.csv", tmp_path / "reports"
    with pytest.raises(DatasetError, match="column 'age'.*line 6: 'old'"):
        run_training(bad, DEFAULT_SCHEMA_PATH, predictions, reports, fast_training_config, progress=False)
    assert not predictions.exists() and not reports.exists()


def test_absent_custom_dataset_is_an_error_not_a_sample(tmp_path, fast_training_config):
    from credit_pd.schema import DEFAULT_SCHEMA_PATH

    with pytest.raises(DatasetError, match="does not exist"):
        run_training(
            tmp_path / "absent.csv",
            DEFAULT_SCHEMA_PATH,
            tmp_path / "p.csv",
            tmp_path / "r",
            fast_training_config,
            progress=False,
        )


def write_german_credit(path: Path, n_rows: int = 3_000, seed: int = 3) -> None:
    """A small dataset in another schema's format: comma separator, empty = missing."""
    rng = np.random.default_rng(seed)
    duration = rng.integers(4, 72, n_rows)
    amount = np.round(rng.lognormal(8, 0.7, n_rows), 0)
    checking = rng.choice(["<0", "0-200", ">200", "none"], n_rows)
    logit = -2.2 + 0.03 * (duration - 24) + 0.9 * (checking == "<0") - 0.8 * (checking == "none")
    bad = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int).astype(str).astype(object)
    bad[: n_rows // 10] = ""
    amount_text = amount.astype(str).astype(object)
    amount_text[rng.random(n_rows) < 0.05] = ""
    pd.DataFrame(
        {
            "application_id": [f"A{i:05d}" for i in range(n_rows)],
            "bad_loan": bad,
            "duration_months": duration,
            "credit_amount": amount_text,
            "checking_status": checking,
            "purpose": rng.choice(["car", "furniture", "education", "business"], n_rows),
            "foreign_worker": rng.choice(["True", "False"], n_rows),
        }
    ).to_csv(path, index=False)


def test_another_schema_trains_end_to_end(tmp_path, fast_training_config):
    data = tmp_path / "german.csv"
    write_german_credit(data)
    run = run_training(
        data,
        FIXTURES / "german_credit_schema.yaml",
        tmp_path / "pred.csv",
        tmp_path / "reports",
        fast_training_config,
        progress=False,
    )
    stored = load_from_store(run.model_tag)
    example = stored.schema.example  # the schema file has none: one is built from a labelled row
    assert example is not None and set(example) == set(stored.feature_names)
    assert isinstance(example["foreign_worker"], (bool, type(None))) and isinstance(example["duration_months"], float)
    predictions = pd.read_csv(run.predictions_path)
    assert list(predictions.columns) == ["uuid", "pd"]
    assert len(predictions) == 300 and predictions["uuid"].str.startswith("A").all()
    assert run.cv.pooled.roc_auc > 0.65
    assert list(run.model.feature_names) == [
        "duration_months",
        "credit_amount",
        "checking_status",
        "purpose",
        "foreign_worker",
    ]


def test_no_unlabelled_rows_says_so_and_writes_a_header_only_file(tmp_path, fast_training_config, capsys):
    data = tmp_path / "german.csv"
    write_german_credit(data, n_rows=1_500)
    text = data.read_text().splitlines()
    header = text[0].split(",")
    target = header.index("bad_loan")
    rows = [line.split(",") for line in text[1:]]
    kept = [line for line, cells in zip(text[1:], rows, strict=False) if cells[target] != ""]
    data.write_text("\n".join([text[0], *kept]) + "\n")
    run = run_training(
        data,
        FIXTURES / "german_credit_schema.yaml",
        tmp_path / "pred.csv",
        tmp_path / "reports",
        fast_training_config,
        progress=False,
    )
    said = [line for line in capsys.readouterr().out.splitlines() if "no unlabelled rows" in line]
    assert len(said) == 1 and "header" in said[0]
    assert run.n_scored == 0 and (tmp_path / "pred.csv").read_text() == "uuid,pd\n"


def test_card_has_the_grade_backtest_of_this_run(trained_run, small_sample_path):
    from credit_pd.dataset import labelled_mask, load_dataset
    from credit_pd.master_scale import backtest_grades

    card = trained_run.report_path.read_text()
    assert "**Master-scale back-test.**" in card and "grades.png" in card
    assert (trained_run.report_path.parent / "grades.png").stat().st_size > 0
    rows, scale, schema = trained_run.facts.grade_backtest, trained_run.model.master_scale, trained_run.model.schema
    assert [r["grade"] for r in rows] == scale.names
    assert sum(r["count"] for r in rows) == trained_run.facts.data.n_labelled
    assert sum(r["defaults"] for r in rows) == trained_run.facts.data.n_positives
    frame = load_dataset(small_sample_path, schema)
    y = frame.loc[labelled_mask(frame, schema), schema.target_column].to_numpy(dtype=float)
    assert [r.as_dict() for r in backtest_grades(y, trained_run.cv.oof_pd, scale)] == rows
    for r in [r for r in rows if r["count"]]:
        assert f"| {r['grade']} | " in card and f"| {r['count']:,} | {r['defaults']:,} |" in card


def test_a_lenders_master_scale_and_the_default_reason_codes_travel_with_the_model(tmp_path, fast_training_config):
    from credit_pd.master_scale import geometric_scale

    data = tmp_path / "german.csv"
    write_german_credit(data)
    lender = geometric_scale(first_max_pd=0.05, ratio=2.0, n_grades=5)
    run = run_training(
        data,
        FIXTURES / "german_credit_schema.yaml",
        tmp_path / "pred.csv",
        tmp_path / "reports",
        fast_training_config,
        progress=False,
        master_scale=lender,
    )
    stored = load_from_store(run.model_tag)
    assert stored.master_scale == lender and [r["grade"] for r in run.facts.grade_backtest] == ["1", "2", "3", "4", "5"]
    assert stored.schema.reason_codes == {
        "duration_months": "Loan duration",
        "credit_amount": "Amount borrowed",
        "checking_status": "Checking account band",
        "purpose": "Loan purpose",
        "foreign_worker": "Foreign worker flag",
    }
