"""The embedded default dataset: deterministic, in the real export's format, realistic, honest truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from credit_pd.config import SampleConfig
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.training.sample import generate_sample, true_pd, true_pd_path_for, write_sample

ROWS = 20_000


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("generated") / "dataset.csv"
    write_sample(path, SampleConfig(n_rows=ROWS))
    return path


@pytest.fixture(scope="module")
def loaded(written: Path, schema) -> pd.DataFrame:
    return load_dataset(written, schema)


@pytest.fixture(scope="module")
def real_text(real_rows_path: Path) -> pd.DataFrame:
    return pd.read_csv(real_rows_path, sep=";", dtype=str, keep_default_na=False)


def test_same_seed_same_bytes_other_seed_other_rows(tmp_path: Path, written: Path):
    again = tmp_path / "again.csv"
    write_sample(again, SampleConfig(n_rows=ROWS))
    assert again.read_bytes() == written.read_bytes()
    assert true_pd_path_for(again).read_bytes() == true_pd_path_for(written).read_bytes()
    other = generate_sample(SampleConfig(n_rows=ROWS, seed=1))
    assert not other.frame["uuid"].isin(generate_sample(SampleConfig(n_rows=ROWS)).frame["uuid"]).any()


def test_written_file_has_the_real_header_and_round_trips_through_the_loader(written: Path, loaded, real_text, schema):
    assert written.read_text().splitlines()[0] == ";".join(real_text.columns)
    assert len(loaded) == ROWS
    assert loaded["uuid"].is_unique


def test_number_formatting_matches_the_real_export(written: Path, real_text):
    ours = pd.read_csv(written, sep=";", dtype=str, keep_default_na=False)
    for column in real_text.columns.drop(["uuid", "default"]):
        real_values, our_values = real_text[column], ours[column]
        real_has_dot = real_values[real_values != "NA"].str.contains(r"\.").any()
        our_has_dot = our_values[our_values != "NA"].str.contains(r"\.").any()
        assert real_has_dot == our_has_dot, f"column {column}: '.0' style differs from the real export"


def test_missing_rates_and_category_sets_follow_the_real_rows(loaded, real_rows_path, schema):
    real = load_dataset(real_rows_path, schema)
    for spec in schema.features:
        ours, theirs = loaded[spec.name].isna().mean(), real[spec.name].isna().mean()
        assert ours == pytest.approx(theirs, abs=0.02), f"{spec.name}: missing rate {ours:.3f} vs real {theirs:.3f}"
    for name in ("merchant_group", "name_in_email", "account_status", "status_max_archived_0_24_months"):
        common = set(real[name].dropna().value_counts().loc[lambda c: c >= 20].index)
        assert common <= set(loaded[name].dropna()), f"{name}: frequent real categories missing from the sample"
    assert set(loaded["merchant_category"]) <= set(real["merchant_category"])


def test_missingness_is_correlated_as_in_the_real_export(loaded):
    no_account = loaded["account_days_in_dc_12_24m"].isna()
    for name in (
        "account_days_in_rem_12_24m",
        "account_days_in_term_12_24m",
        "account_status",
        "account_incoming_debt_vs_paid_0_24m",
    ):
        assert loaded.loc[no_account, name].isna().all(), f"{name} present although the account block is NA"
    assert (loaded.loc[no_account, "account_amount_added_12_24m"] == 0).all()
    no_status = loaded["account_status"].isna()
    assert loaded.loc[no_status, "account_worst_status_0_3m"].isna().all()
    assert (loaded["worst_status_active_inv"].isna() == (loaded["num_active_inv"] == 0)).all()
    no_history = loaded["avg_payment_span_0_12m"].isna()
    assert loaded.loc[no_history, "avg_payment_span_0_3m"].isna().all()
    assert (loaded.loc[no_history, "sum_paid_inv_0_12m"] == 0).mean() > 0.8


def test_archived_status_maxima_are_consistent(loaded):
    level = {name: pd.to_numeric(loaded[name]) for name in loaded.columns if name.startswith("status_")}
    assert (level["status_max_archived_0_24_months"] >= level["status_max_archived_0_12_months"]).all()
    assert (level["status_max_archived_0_12_months"] >= level["status_max_archived_0_6_months"]).all()
    assert (level["status_max_archived_0_24_months"] >= level["status_last_archived_0_24m"]).all()


def test_label_rates_and_oracle_discrimination(loaded, written, schema):
    labelled = labelled_mask(loaded, schema)
    assert 1 - labelled.mean() == pytest.approx(0.10, abs=0.01)
    y = loaded.loc[labelled, "default"].to_numpy()
    assert y.mean() == pytest.approx(0.014, abs=0.003)
    truth = pd.read_csv(true_pd_path_for(written), dtype={"uuid": str}).set_index("uuid")["true_pd"]
    assert roc_auc_score(y, truth.loc[loaded.loc[labelled, "uuid"]].to_numpy()) == pytest.approx(0.90, abs=0.03)


def test_truth_is_a_function_of_the_written_features_only(loaded, written):
    written_truth = pd.read_csv(true_pd_path_for(written), dtype={"uuid": str})
    assert list(written_truth.columns) == ["uuid", "true_pd"]
    recomputed = true_pd(loaded)
    np.testing.assert_allclose(recomputed, written_truth["true_pd"].to_numpy(), rtol=1e-9)
    shuffled_uuid = loaded.assign(uuid=loaded["uuid"].sample(frac=1.0, random_state=0).to_numpy())
    np.testing.assert_array_equal(true_pd(shuffled_uuid), recomputed)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    write_sample(tmp_path / "dataset.csv", SampleConfig(n_rows=500))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.csv", "dataset_true_pd.csv"]
