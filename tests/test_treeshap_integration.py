"""Table TreeSHAP inside the stored model: built and verified by training, used by every reader.

The trained run (tests/conftest.py) stores its model with tables; the service scorer and the
batch scorer must then answer with contributions equal to the stored booster's pred_contrib to
1e-9 on the 10,000 real rows (read from ../shared with pandas, never copied), and PDs equal to
train.py's. A model whose tables disagree with pred_contrib is never published.
"""

from __future__ import annotations

from dataclasses import replace

import bentoml
import numpy as np
import pandas as pd
import pytest

from credit_pd.batch.model import ship_model
from credit_pd.batch.scoring import BatchScorer
from credit_pd.client import requests_from_frame
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.model_store import load_from_store
from credit_pd.serving.contract import build_application_model
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings
from credit_pd.treeshap import TableMismatchError, TreeShapTables

pytestmark = pytest.mark.slow
TOL = 1e-9


@pytest.fixture(scope="module")
def stored(trained_run):
    return load_from_store(trained_run.model_tag)


@pytest.fixture(scope="module")
def real_frame(real_rows_path, schema) -> pd.DataFrame:
    frame = load_dataset(real_rows_path, schema)
    assert len(frame) == 10_000
    return frame


def reference(model, matrix: np.ndarray) -> np.ndarray:
    """The model's explanation with every booster's part from LightGBM's pred_contrib (no tables),
    as (n_rows, n_features + 1) with the base value last, like pred_contrib; also checks each
    booster's tables against its own pred_contrib on these rows."""
    assert all(check.rows == len(matrix) for check in model.verify_tree_tables(matrix))
    explanation = replace(model, tree_tables=()).explain(matrix)
    return np.column_stack([explanation.contributions, explanation.base_value])


def served(model, tag: str, frame: pd.DataFrame, schema) -> list:
    """The service's answers (every feature's contribution) for the frame's rows."""
    application = build_application_model(model.schema, model.encoder, ServingSettings())
    options = {"top_k": "all", "unseen_categories": "score_as_missing"}  # real rows hold categories the sample lacks
    requests = [application.model_validate(r | options) for r in requests_from_frame(frame, schema)]
    return PDScorer(model, tag).score(requests)


def test_training_stores_tables_for_every_booster(stored):
    assert len(stored.tree_tables) == len(stored.boosters)
    for booster, tables in zip(stored.boosters, stored.tree_tables, strict=True):
        assert isinstance(tables, TreeShapTables) and tables.n_trees == booster.num_trees()
    assert sum(t.n_trees for t in stored.tree_tables) > 0
    assert stored.self_check()  # the start-up check ran (load_from_store) and compares something


def test_served_contributions_equal_pred_contrib_on_the_real_rows(stored, trained_run, real_frame, schema):
    matrix = stored.encoder.encode_frame(real_frame)
    expected = reference(stored, matrix)
    answers = served(stored, trained_run.model_tag, real_frame, schema)
    column = {name: i for i, name in enumerate(stored.feature_names)}
    got = np.zeros_like(expected[:, :-1])
    for row, answer in enumerate(answers):
        for item in answer.explanation.contributions:
            got[row, column[item.feature]] = item.contribution
    assert np.max(np.abs(got - expected[:, :-1])) <= TOL
    assert np.max(np.abs(np.array([a.explanation.base_value for a in answers]) - expected[:, -1])) <= TOL
    train_py_pd = stored.predict_pd(matrix)  # what train.py computes: calibrated booster raw score
    assert np.max(np.abs(np.array([a.pd for a in answers]) - train_py_pd)) <= TOL


def test_batch_contributions_equal_pred_contrib_on_the_real_rows(trained_run, real_frame, schema):
    model = ship_model(trained_run.model_tag).rebuild()
    assert model.tree_tables, "the shipped spec must carry the tables to the executors"
    scorer = BatchScorer(model=model, model_tag=trained_run.model_tag, schema=model.schema, top_k=None)
    scores = scorer.score(real_frame)
    matrix = model.encoder.encode_frame(real_frame)
    expected = reference(model, matrix)
    k = len(model.feature_names)
    column = {name: i for i, name in enumerate(model.feature_names)}
    got = np.zeros_like(expected[:, :-1])
    features = scores[[f"feature_{r}" for r in range(1, k + 1)]].to_numpy()
    values = scores[[f"contribution_{r}" for r in range(1, k + 1)]].to_numpy(dtype=np.float64)
    for r in range(k):
        got[np.arange(len(got)), [column[f] for f in features[:, r]]] = values[:, r]
    assert np.max(np.abs(got - expected[:, :-1])) <= TOL
    assert np.max(np.abs(scores["base_value"].to_numpy() - expected[:, -1])) <= TOL
    assert np.max(np.abs(scores["pd"].to_numpy() - model.predict_pd(matrix))) <= TOL


def test_served_pd_equals_train_py_predictions(stored, trained_run, small_sample_path, schema):
    frame = load_dataset(small_sample_path, schema)
    unlabelled = frame[~labelled_mask(frame, schema)]
    expected = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    answers = served(stored, trained_run.model_tag, unlabelled, schema)
    got = pd.Series([a.pd for a in answers], index=[a.uuid for a in answers])
    assert len(got) == len(expected) > 1_000
    assert np.max(np.abs(got.loc[expected.index].to_numpy() - expected.to_numpy())) <= TOL


def test_a_model_whose_tables_disagree_is_never_published(
    small_sample_path, fast_training_config, tmp_path, monkeypatch
):
    from credit_pd.schema import DEFAULT_SCHEMA_PATH
    from credit_pd.training.run import run_training

    true_explain = TreeShapTables.explain

    def off_by_a_micro(self, matrix, chunk_rows=128):
        base, contributions = true_explain(self, matrix, chunk_rows)
        return base, contributions + 1e-6

    monkeypatch.setattr(TreeShapTables, "explain", off_by_a_micro)
    before = {str(m.tag) for m in bentoml.models.list()}
    with pytest.raises(TableMismatchError, match=r"contributions 1e-06"):
        run_training(
            small_sample_path,
            DEFAULT_SCHEMA_PATH,
            tmp_path / "predictions.csv",
            tmp_path / "reports",
            fast_training_config,
            progress=False,
        )
    assert {str(m.tag) for m in bentoml.models.list()} == before
    assert not (tmp_path / "predictions.csv").exists() and not (tmp_path / "reports").exists()
