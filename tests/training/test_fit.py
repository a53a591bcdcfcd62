"""Validation honesty and the candidate choice: out-of-fold scores, nested CV, GLM / offset / blend candidates."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from credit_pd.config import TreeShape
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.features import FeatureEncoder
from credit_pd.linear import LinearDesign
from credit_pd.scoring_model import BlendWeights
from credit_pd.training.fit import (
    GLM,
    choose_shape,
    common_rounds,
    cross_validate,
    fit_blend_weights,
    fit_final_model,
    inner_choice,
    log_loss_of_raw,
)
from credit_pd.training.glm import GLM_GRADIENT_TOLERANCE, fit_glm

OFFSET_STUMPS = TreeShape("GLM-offset, stumps", 2, 1, 50, 10.0, 0.1, glm_offset=True)


@pytest.fixture(scope="module")
def labelled(small_sample_path, schema):
    frame = load_dataset(small_sample_path, schema)
    encoder = FeatureEncoder.fit(frame, schema)
    mask = labelled_mask(frame, schema)
    return encoder.encode_frame(frame)[mask], frame.loc[mask, schema.target_column].to_numpy(), encoder


@pytest.fixture(scope="module")
def hybrid_config(fast_training_config):
    """The fast grid plus a GLM-offset shape, so every candidate family runs."""
    return replace(fast_training_config, shapes=(OFFSET_STUMPS, *fast_training_config.shapes))


@pytest.fixture(scope="module")
def hybrid_cv(labelled, hybrid_config):
    matrix, y, encoder = labelled
    return cross_validate(matrix, y, encoder, hybrid_config, progress=False)


def test_cross_validation_gives_a_forecast_for_every_labelled_row(hybrid_cv, labelled, hybrid_config):
    _, y, _ = labelled
    cv = hybrid_cv
    assert len(cv.folds) == hybrid_config.n_folds
    assert cv.oof_pd.shape == y.shape and np.all((cv.oof_pd > 0) & (cv.oof_pd < 1))
    assert cv.pooled.roc_auc > 0.75  # the sample has real signal
    assert set(cv.summary) == {"roc_auc", "pr_auc", "log_loss", "brier", "ece"}
    assert cv.selection_seconds > 0


def test_every_candidate_family_is_scored_by_the_inner_cv(hybrid_cv, hybrid_config):
    names = {c.name: c for c in hybrid_cv.final.candidates}
    assert {GLM, OFFSET_STUMPS.name, "stumps", "depth 2"} <= set(names)
    assert {c.family for c in names.values()} == {"GLM", "GLM-offset", "trees", "blend"}
    blends = [c for c in names.values() if c.family == "blend"]
    assert 1 <= len(blends) <= hybrid_config.max_blend_trees
    for blend in blends:
        # A blend costs the sum of its members' explanations.
        members = [names[GLM], *(names[m] for m in blend.members)]
        assert 1 / blend.explained_rows_per_s == pytest.approx(
            sum(1 / m.explained_rows_per_s for m in members), rel=1e-9
        )
    offset = names[OFFSET_STUMPS.name]
    assert 1 / offset.explained_rows_per_s >= 1 / names[GLM].explained_rows_per_s


def test_the_nested_cv_gives_the_same_result_in_one_process_as_in_two(hybrid_cv, labelled, hybrid_config):
    """The six inner choices run side by side (`cv_processes`), each LightGBM call on one thread,
    so the process count changes the wall time only: same forecasts, losses and choices."""
    matrix, y, encoder = labelled
    assert hybrid_config.cv_processes == 2
    alone = cross_validate(matrix, y, encoder, replace(hybrid_config, cv_processes=1), progress=False)
    np.testing.assert_array_equal(alone.oof_raw, hybrid_cv.oof_raw)
    np.testing.assert_array_equal(alone.oof_pd, hybrid_cv.oof_pd)
    assert (
        [f.fold for f in alone.folds] == [f.fold for f in hybrid_cv.folds] == list(range(1, hybrid_config.n_folds + 1))
    )
    for ours, theirs in zip(alone.folds, hybrid_cv.folds, strict=True):
        assert ours.chosen.name == theirs.chosen.name and ours.best_iteration == theirs.best_iteration
    assert {c.name: c.inner_log_loss for c in alone.final.candidates} == {
        c.name: c.inner_log_loss for c in hybrid_cv.final.candidates
    }
    assert alone.final.chosen.name == hybrid_cv.final.chosen.name
    assert multiprocessing.active_children() == [], "the nested CV's worker processes have exited"


def test_shuffled_labels_score_near_chance(labelled, fast_training_config):
    """Leakage control: with the link between rows and labels cut, CV must find nothing."""
    matrix, y, encoder = labelled
    shuffled = np.random.default_rng(7).permutation(y)
    cv = cross_validate(matrix, shuffled, encoder, fast_training_config, progress=False)
    assert abs(cv.pooled.roc_auc - 0.5) < 0.08


def test_oof_forecast_is_calibrated_in_the_mean(hybrid_cv, labelled):
    _, y, _ = labelled
    assert abs(hybrid_cv.oof_pd.mean() - y.mean()) < 0.25 * y.mean()


def test_final_model_is_the_candidate_chosen_on_all_rows(hybrid_cv, labelled, hybrid_config, schema):
    matrix, y, encoder = labelled
    choice = choose_shape(hybrid_cv, hybrid_config)
    model = fit_final_model(matrix, y, encoder, hybrid_cv, hybrid_config, schema, choice)
    assert choice.candidate == hybrid_cv.final.chosen
    assert choice.mean_inner_log_loss[choice.candidate.name] == min(
        loss
        for name, loss in choice.mean_inner_log_loss.items()
        if choice.explained_rows_per_s[name] >= hybrid_config.min_explained_rows_per_s
    )
    expected_family = (
        "GLM" if choice.candidate.family == "GLM-offset" and choice.candidate.rounds == 0 else choice.candidate.family
    )
    assert model.family == expected_family
    if model.family in ("trees", "GLM-offset"):
        assert model.n_trees == choice.rounds
    assert model.booster.feature_name() == list(encoder.feature_names)
    explanation = model.explain(matrix[:500])
    assert np.max(np.abs(explanation.raw_score - model.raw_score(matrix[:500]))) < 1e-9


@pytest.mark.parametrize("family", ["GLM", "GLM-offset", "trees", "blend"])
def test_each_family_refits_to_an_exact_monotone_model(hybrid_cv, labelled, hybrid_config, schema, family):
    """Force each family as the final choice: it refits, explains exactly and keeps the monotone directions."""
    matrix, y, encoder = labelled
    candidate = next(c for c in hybrid_cv.final.candidates if c.family == family)
    weights = (
        BlendWeights(offset=-0.1, linear=0.5, trees=(0.4,) * len(candidate.members)) if family == "blend" else None
    )
    final = replace(hybrid_cv.final, chosen=candidate, weights=weights)
    model = fit_final_model(matrix, y, encoder, replace(hybrid_cv, final=final), hybrid_config, schema)
    rows = matrix[:300]
    assert np.max(np.abs(model.explain(rows).raw_score - model.raw_score(rows))) < 1e-9
    for j, sign in enumerate(encoder.monotone_constraints):
        if sign == 0:
            continue
        low, high = encoder.numeric_ranges[encoder.feature_names[j]]
        scores = []
        for value in np.linspace(low, high, 7):
            grid = rows.copy()
            grid[:, j] = value
            scores.append(model.raw_score(grid))
        steps = np.diff(np.array(scores), axis=0) * sign
        assert steps.min() >= -1e-12, (family, encoder.feature_names[j])


def test_choice_respects_the_explanation_budget(labelled, hybrid_config):
    """A floor of 0 leaves the best loss; a floor nothing meets leaves the cheapest candidate."""
    matrix, y, encoder = labelled
    free = replace(hybrid_config, min_explained_rows_per_s=0.0)
    choice = inner_choice(matrix, y, encoder, free, seed=3)
    assert choice.chosen.inner_log_loss == min(c.inner_log_loss for c in choice.candidates)
    impossible = replace(hybrid_config, min_explained_rows_per_s=1e12)
    choice = inner_choice(matrix, y, encoder, impossible, seed=3)
    assert "no candidate met the budget" in choice.reason
    assert choice.chosen.explained_rows_per_s == max(c.explained_rows_per_s for c in choice.candidates)


def test_common_rounds_takes_the_mean_curve_and_zero_when_no_tree_beats_the_floor():
    class Run:
        def __init__(self, curve, n):
            self.curve, self.valid_idx = np.array(curve), np.arange(n)

    runs = [Run([0.5, 0.4, 0.45, 0.5], 100), Run([0.5, 0.45, 0.3, 0.35, 0.4], 100)]
    assert common_rounds(runs, None) == 3  # mean curve 0.5, 0.425, 0.375, 0.425 over the 4 common rounds
    assert common_rounds(runs, floor_loss=0.37) == 0


def test_blend_weights_are_non_negative_and_match_logistic_regression_when_free():
    rng = np.random.default_rng(5)
    members = rng.normal(size=(4000, 3))
    y = (rng.random(4000) < expit(-1 + 0.8 * members[:, 0] + 0.5 * members[:, 1] + 0.3 * members[:, 2])).astype(float)
    weights = fit_blend_weights(members, y)
    reference = LogisticRegression(C=np.inf).fit(members, y)
    np.testing.assert_allclose([weights.linear, *weights.trees], reference.coef_[0], atol=1e-3)
    assert weights.offset == pytest.approx(reference.intercept_[0], abs=1e-3)
    flipped = fit_blend_weights(np.column_stack([members[:, 0], -members[:, 1]]), y)
    assert flipped.trees == (0.0,)  # a member that only hurts gets weight 0, never a negative one


def test_glm_fit_matches_scikit_learn_when_no_sign_constraint_binds(labelled):
    """Same objective and stopping rule as scikit-learn's lbfgs: the same optimum, to the tolerance."""
    matrix, y, encoder = labelled
    free = replace(encoder, monotone={})
    design = LinearDesign.fit(matrix, free)
    ours = fit_glm(matrix, y, design, free, penalty_c=1.0)
    x = design.transform(matrix)
    theirs = LogisticRegression(C=1.0, tol=GLM_GRADIENT_TOLERANCE, max_iter=5000).fit(x, y)

    def objective(coefficients, intercept):
        return log_loss_of_raw(y, intercept + x @ coefficients) + coefficients @ coefficients / (2 * len(y))

    assert objective(ours.coefficients, ours.intercept) == pytest.approx(
        objective(theirs.coef_[0], theirs.intercept_[0]), rel=1e-6
    )
    np.testing.assert_allclose(ours.coefficients, theirs.coef_[0], atol=0.02)
    assert ours.constrained == ()


def test_glm_constrains_a_wrong_signed_monotone_coefficient_to_zero(labelled):
    """Labels that fall with a monotone-increasing feature: its GLM coefficient sits at 0 and is named."""
    matrix, _, encoder = labelled
    j = encoder.feature_names.index("num_arch_dc_0_12m")
    rng = np.random.default_rng(11)
    y = (rng.random(len(matrix)) < expit(-2.0 - 4.0 * np.log1p(matrix[:, j]))).astype(float)
    design = LinearDesign.fit(matrix, encoder)
    free = fit_glm(matrix, y, design, replace(encoder, monotone={}), penalty_c=1.0)
    assert free.signed_value_coefficients()[j] < 0  # the data alone would lower the PD with more debt collection
    glm = fit_glm(matrix, y, design, encoder, penalty_c=1.0)
    assert "num_arch_dc_0_12m" in glm.constrained
    assert glm.signed_value_coefficients()[j] == 0.0
    for feature, coefficient in glm.signed_value_coefficients().items():
        assert coefficient * encoder.monotone_constraints[feature] >= 0


def test_offset_model_that_keeps_no_tree_is_stored_and_served_as_the_glm(
    small_sample_path, schema, tmp_path, fast_training_config
):
    """Labels drawn from a logistic model: boosting from the GLM keeps no tree; the GLM is stored and served."""
    from credit_pd.client import requests_from_frame
    from credit_pd.model_store import load_from_store
    from credit_pd.schema import DEFAULT_SCHEMA_PATH
    from credit_pd.serving.contract import build_application_model
    from credit_pd.serving.scorer import PDScorer
    from credit_pd.serving.settings import ServingSettings
    from credit_pd.training.run import run_training

    raw = pd.read_csv(small_sample_path, sep=";", dtype=str, keep_default_na=False)
    frame = load_dataset(small_sample_path, schema)
    encoder = FeatureEncoder.fit(frame, schema)
    matrix = encoder.encode_frame(frame)
    logit = (
        -3.0
        + 0.6 * np.log1p(np.nan_to_num(matrix[:, encoder.feature_names.index("num_arch_dc_0_12m")]))
        - 0.02 * (matrix[:, encoder.feature_names.index("age")] - 40)
    )
    labels = (np.random.default_rng(3).random(len(raw)) < expit(logit)).astype(int).astype(str)
    raw[schema.target_column] = np.where(raw[schema.target_column] == "NA", "NA", labels)
    path = tmp_path / "logistic.csv"
    raw.to_csv(path, sep=";", index=False)
    offset = TreeShape("GLM-offset, stumps", 2, 1, 200, 100.0, 0.05, glm_offset=True)
    config = replace(fast_training_config, shapes=(offset,), max_blend_trees=0)
    run = run_training(
        path, DEFAULT_SCHEMA_PATH, tmp_path / "predictions.csv", tmp_path / "reports", config, progress=False
    )
    final = {c.name: c for c in run.cv.final.candidates}
    assert final[offset.name].rounds == 0
    assert run.model.family == "GLM" and run.model.n_trees == 0
    assert "GLM" in run.report_path.read_text()
    stored = load_from_store(run.model_tag)
    assert stored.family == "GLM" and stored.n_trees == 0
    rows = matrix[:200]
    np.testing.assert_array_equal(stored.predict_pd(rows), run.model.predict_pd(rows))
    scorer = PDScorer(stored, run.model_tag)
    application_model = build_application_model(stored.schema, stored.encoder, ServingSettings())
    unlabelled = frame[~labelled_mask(frame, schema)].head(20)
    answers = scorer.score(
        [application_model.model_validate(r | {"top_k": "all"}) for r in requests_from_frame(unlabelled, schema)]
    )
    expected = stored.predict_pd(encoder.encode_frame(unlabelled))
    np.testing.assert_allclose([a.pd for a in answers], expected, rtol=0, atol=1e-12)
    for answer in answers:
        total = answer.explanation.base_value + sum(c.contribution for c in answer.explanation.contributions)
        assert total == pytest.approx(answer.explanation.raw_score, abs=1e-9)
    predictions = pd.read_csv(run.predictions_path, dtype={"uuid": str})
    assert len(predictions) == run.n_scored and np.all((predictions["pd"] > 0) & (predictions["pd"] < 1))
