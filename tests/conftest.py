"""Shared fixtures: an isolated BentoML store, small generated datasets and one trained model.

The store lives in a temporary BENTOML_HOME (set before bentoml is imported) so tests never read
or overwrite the models a developer trained; the trained-model fixture is session-scoped because
a training run is the most expensive thing the unit tests need.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_REAL_ROWS = REPO_ROOT.parent / "shared" / "data" / "real_unlabeled_rows.csv"
FIXTURES = Path(__file__).parent / "fixtures"
# Small but not tiny: ~2,700 labelled defaults would need 200k rows; 12,000 rows give ~150,
# enough for CV to run every code path in a few seconds.
SMALL_SAMPLE_ROWS = 12_000


def pytest_configure(config: pytest.Config) -> None:
    home = Path(tempfile.mkdtemp(prefix="credit-pd-test-bentoml-"))
    os.environ["BENTOML_HOME"] = str(home)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    # LightGBM's OpenMP threads sleep rather than spin while waiting (read when LightGBM loads):
    # with other processes on the 2 cores, spinning made 2-thread fits ~15x slower.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def schema():
    from credit_pd.schema import load_schema

    return load_schema()


@pytest.fixture(scope="session")
def small_sample_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from credit_pd.config import SampleConfig
    from credit_pd.training.sample import write_sample

    path = tmp_path_factory.mktemp("sample") / "dataset.csv"
    write_sample(path, SampleConfig(n_rows=SMALL_SAMPLE_ROWS))
    return path


@pytest.fixture(scope="session")
def fast_training_config():
    from credit_pd.config import LightGBMParams, TrainingConfig, TreeShape

    # Two candidate shapes (the real grid has more), so the shape choice runs in every test run.
    shapes = (TreeShape("stumps", 2, 1, 50, 1.0, 0.1), TreeShape("depth 2", 4, 2, 50, 10.0, 0.05))
    return TrainingConfig(
        n_folds=3,
        shap_summary_rows=500,
        shapes=shapes,
        lightgbm=LightGBMParams(max_boost_rounds=300, early_stopping_rounds=30),
    )


@pytest.fixture(scope="session")
def trained_run(small_sample_path: Path, tmp_path_factory: pytest.TempPathFactory, fast_training_config):
    """One full training run (CV, refit, store, predictions, report) on the small sample."""
    from credit_pd.schema import DEFAULT_SCHEMA_PATH
    from credit_pd.training.run import run_training

    out = tmp_path_factory.mktemp("run")
    return run_training(
        small_sample_path,
        DEFAULT_SCHEMA_PATH,
        out / "test_predictions.csv",
        out / "reports",
        fast_training_config,
        progress=False,
    )


@pytest.fixture(scope="session")
def real_rows_path() -> Path:
    if not SHARED_REAL_ROWS.is_file():
        pytest.skip(f"shared real rows not found at {SHARED_REAL_ROWS}")
    return SHARED_REAL_ROWS
