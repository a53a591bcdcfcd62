"""Validation honesty: out-of-fold scores, no leakage, calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from credit_pd.features import FeatureEncoder
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.training.fit import choose_shape, cross_validate, fit_final_model


@pytest.fixture(scope="module")
def labelled(small_sample_path, schema):
    frame = load_dataset(small_sample_path, schema)
    encoder = FeatureEncoder.fit(frame, schema)
    mask = labelled_mask(frame, schema)
    return encoder.encode_frame(frame)[mask], frame.loc[mask, schema.target_column].to_numpy(), encoder


def test_cross_validation_gives_a_forecast_for_every_labelled_row(labelled, fast_training_config):
    matrix, y, encoder = labelled
    cv = cross_validate(matrix, y, encoder, fast_training_config, progress=False)
    assert len(cv.folds) == fast_training_config.n_folds
    assert cv.oof_pd.shape == y.shape and np.all((cv.oof_pd > 0) & (cv.oof_pd < 1))
    assert cv.pooled.roc_auc > 0.75  # the sample has real signal
    assert all(1 <= f.best_iteration <= fast_training_config.lightgbm.max_boost_rounds for f in cv.folds)
    assert set(cv.summary) == {"roc_auc", "pr_auc", "log_loss", "brier", "ece"}


def test_shuffled_labels_score_near_chance(labelled, fast_training_config):
    """Leakage control: with the link between rows and labels cut, CV must find nothing."""
    matrix, y, encoder = labelled
    shuffled = np.random.default_rng(7).permutation(y)
    cv = cross_validate(matrix, shuffled, encoder, fast_training_config, progress=False)
    assert abs(cv.pooled.roc_auc - 0.5) < 0.08


def test_oof_forecast_is_calibrated_in_the_mean(labelled, fast_training_config):
    matrix, y, encoder = labelled
    cv = cross_validate(matrix, y, encoder, fast_training_config, progress=False)
    assert abs(cv.oof_pd.mean() - y.mean()) < 0.25 * y.mean()


def test_final_model_uses_cross_validated_rounds(labelled, fast_training_config, schema):
    matrix, y, encoder = labelled
    cv = cross_validate(matrix, y, encoder, fast_training_config, progress=False)
    choice = choose_shape(cv, fast_training_config)
    model = fit_final_model(matrix, y, encoder, cv, fast_training_config, schema, choice)
    assert model.booster.num_trees() == choice.rounds
    assert model.booster.dump_model()["tree_info"][0]["num_leaves"] <= choice.shape.num_leaves
    assert model.booster.feature_name() == list(encoder.feature_names)


def test_shape_choice_respects_the_explanation_budget(labelled, fast_training_config):
    """A floor no shape can meet except the cheapest leaves the cheapest; a floor of 0 leaves the best loss."""
    from dataclasses import replace

    matrix, y, encoder = labelled
    free = replace(fast_training_config, min_explained_rows_per_s=0.0)
    cv = cross_validate(matrix, y, encoder, free, progress=False)
    choice = choose_shape(cv, free)
    assert choice.shape.name == min(choice.mean_inner_log_loss, key=choice.mean_inner_log_loss.get)
    assert all(len(f.candidates) == len(free.shapes) for f in cv.folds)
    impossible = replace(fast_training_config, min_explained_rows_per_s=1e12)
    cv = cross_validate(matrix, y, encoder, impossible, progress=False)
    choice = choose_shape(cv, impossible)
    assert "no shape met the budget" in choice.reason
    assert choice.shape.name == max(choice.explained_rows_per_s, key=choice.explained_rows_per_s.get)
