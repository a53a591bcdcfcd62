"""Too few events for the chosen CV: one line with the counts and the minimum, exit 2, before any fitting."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from credit_pd.config import TrainingConfig
from credit_pd.errors import DatasetError
from credit_pd.training.events import check_enough_events, minimum_per_class
from tests.conftest import REPO_ROOT


def smallest_splittable(n_folds: int, inner_folds: int) -> int:
    """The fewest positives for which scikit-learn's own outer split leaves every fold what the CV needs."""
    for count in range(1, 100):
        y = np.r_[np.ones(count), np.zeros(500)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            splits = list(StratifiedKFold(n_folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
        if all(y[valid].sum() >= 1 and y[train].sum() >= inner_folds for train, valid in splits):
            return count
    raise AssertionError("not found")


@pytest.mark.parametrize(("n_folds", "inner_folds"), [(5, 3), (2, 2), (3, 3), (5, 5), (10, 3), (2, 5)])
def test_minimum_is_what_stratified_k_fold_actually_needs(n_folds, inner_folds):
    config = replace(TrainingConfig(), n_folds=n_folds, inner_folds=inner_folds)
    assert minimum_per_class(config) == smallest_splittable(n_folds, inner_folds)


def test_the_check_names_counts_minimum_and_the_scarce_class():
    config = TrainingConfig()
    with pytest.raises(DatasetError) as caught:
        check_enough_events(np.r_[np.ones(4), np.zeros(499)], config, "default")
    message = str(caught.value)
    assert message.startswith(
        f"too few defaults for {config.n_folds}-fold cross-validation with {config.inner_folds} inner folds"
    )
    assert "4 labelled row(s) have default = 1 and 499 have default = 0" in message
    assert f"at least {minimum_per_class(config)}" in message
    with pytest.raises(DatasetError, match="too few non-defaults"):
        check_enough_events(np.r_[np.ones(400), np.zeros(2)], config, "default")
    check_enough_events(np.r_[np.ones(minimum_per_class(config)), np.zeros(100)], config, "default")


def rare_event_file(source: Path, tmp_path: Path, n_rows: int, n_defaults: int) -> Path:
    frame = pd.read_csv(source, sep=";", dtype=str, keep_default_na=False)
    labelled = frame[frame["default"] != "NA"]
    rows = pd.concat(
        [
            labelled[labelled["default"] == "1"].head(n_defaults),
            labelled[labelled["default"] == "0"].head(n_rows - n_defaults),
        ]
    )
    path = tmp_path / f"rare_{n_rows}_{n_defaults}.csv"
    rows.to_csv(path, sep=";", index=False)
    return path


@pytest.mark.parametrize(("n_rows", "n_defaults"), [(2, 1), (10, 1), (100, 2), (503, 3), (503, 4)])
def test_rare_events_exit_2_with_one_line_before_fitting(small_sample_path, tmp_path, n_rows, n_defaults):
    data = rare_event_file(small_sample_path, tmp_path, n_rows, n_defaults)
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--data",
            str(data),
            "--predictions",
            str(tmp_path / "p.csv"),
            "--report-dir",
            str(tmp_path / "r"),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "BENTOML_HOME": str(tmp_path / "home")},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"{n_defaults} labelled row(s) have default = 1 and {n_rows - n_defaults} have default = 0" in line
    assert f"each class needs at least {minimum_per_class(TrainingConfig())}" in line
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "home").exists()


def test_the_minimum_is_enough_for_a_real_run(small_sample_path, tmp_path, fast_training_config):
    from credit_pd.schema import DEFAULT_SCHEMA_PATH
    from credit_pd.training.run import run_training

    needed = minimum_per_class(fast_training_config)
    data = rare_event_file(small_sample_path, tmp_path, 400, needed)
    run = run_training(
        data, DEFAULT_SCHEMA_PATH, tmp_path / "p.csv", tmp_path / "r", fast_training_config, progress=False
    )
    assert len(run.cv.oof_pd) == 400 and np.isfinite(run.cv.oof_pd).all()
    with pytest.raises(DatasetError, match=f"{needed - 1} labelled row"):
        run_training(
            rare_event_file(small_sample_path, tmp_path, 400, needed - 1),
            DEFAULT_SCHEMA_PATH,
            tmp_path / "p2.csv",
            tmp_path / "r2",
            fast_training_config,
            progress=False,
        )
