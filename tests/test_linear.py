"""The GLM part and the hybrid scoring model: design, exact additivity per family, the store round trip."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.features import FeatureEncoder
from credit_pd.linear import LEVEL, MISSING, RARE, VALUE, LinearDesign, LinearModel, log1p_rule
from credit_pd.model_store import load_from_store, save_to_store
from credit_pd.scoring_model import BlendWeights, PlattCalibrator, ScoringModel
from credit_pd.training.glm import fit_glm

ADDITIVITY = 1e-9


@pytest.fixture(scope="module")
def data(small_sample_path, schema):
    frame = load_dataset(small_sample_path, schema)
    encoder = FeatureEncoder.fit(frame, schema)
    mask = labelled_mask(frame, schema)
    return encoder.encode_frame(frame)[mask], frame.loc[mask, schema.target_column].to_numpy(np.float64), encoder


@pytest.fixture(scope="module")
def glm(data):
    matrix, y, encoder = data
    return fit_glm(matrix, y, LinearDesign.fit(matrix, encoder), encoder, penalty_c=1.0)


def _booster(data, rounds: int, init_score: np.ndarray | None = None) -> lgb.Booster:
    matrix, y, encoder = data
    dataset = lgb.Dataset(
        matrix,
        y,
        feature_name=list(encoder.feature_names),
        categorical_feature=encoder.categorical_indices,
        init_score=init_score,
    )
    params = {
        "objective": "binary",
        "num_leaves": 4,
        "verbosity": -1,
        "num_threads": 1,
        "seed": 1,
        "monotone_constraints": encoder.monotone_constraints,
    }
    return lgb.train(params, dataset, num_boost_round=rounds)


def _empty_booster(data) -> lgb.Booster:
    matrix, y, encoder = data
    return lgb.Booster(
        {"objective": "binary", "verbosity": -1}, lgb.Dataset(matrix, y, feature_name=list(encoder.feature_names))
    )


@pytest.fixture(scope="module")
def families(data, glm, schema):
    """One model of every family, built from the same GLM and boosters."""
    matrix, _, encoder = data
    common = {"encoder": encoder, "calibrator": PlattCalibrator(1.1, -0.2), "schema": schema, "num_threads": 1}
    trees, other = _booster(data, 30), _booster(data, 12)
    return {
        "trees": ScoringModel(booster=trees, **common),
        "GLM": ScoringModel(booster=_empty_booster(data), linear=glm, family="GLM", **common),
        "GLM-offset": ScoringModel(
            booster=_booster(data, 20, init_score=glm.raw_score(matrix)), linear=glm, family="GLM-offset", **common
        ),
        "blend": ScoringModel(
            booster=trees,
            extra_boosters=(other,),
            linear=glm,
            family="blend",
            weights=BlendWeights(offset=-0.3, linear=0.6, trees=(0.5, 0.2)),
            **common,
        ),
    }


def test_design_columns_follow_the_documented_rules(data):
    matrix, _, encoder = data
    design = LinearDesign.fit(matrix, encoder)
    names = encoder.feature_names
    by_feature = {name: [c for c in design.columns if names[c.feature] == name] for name in names}
    for name in encoder.categorical:
        assert {c.kind for c in by_feature[name]} <= {LEVEL, RARE, MISSING}
    age = by_feature["age"]
    assert [c.kind for c in age] == [VALUE] and age[0].log1p  # never missing, non-negative
    assert any(c.kind == MISSING for c in by_feature["account_days_in_dc_12_24m"])
    x = design.transform(matrix)
    values = [i for i, c in enumerate(design.columns) if c.kind == VALUE]
    np.testing.assert_allclose(
        x[:, values].mean(axis=0), 0.0, atol=1e-9
    )  # numeric columns standardised on the training rows
    np.testing.assert_allclose(x[:, values].std(axis=0), 1.0, atol=1e-9)
    assert set(np.unique(x[:, [i for i, c in enumerate(design.columns) if c.kind != VALUE]])) <= {0.0, 1.0}
    assert not log1p_rule(np.array([0.0, 1.0, 0.0])) and not log1p_rule(np.array([-1.0, 2.0, 5.0]))


def test_design_clips_to_the_training_range_and_imputes_missing(data):
    matrix, _, encoder = data
    design = LinearDesign.fit(matrix, encoder)
    j = encoder.feature_names.index("age")
    column = next(c for c in design.columns if c.feature == j)
    rows = np.repeat(matrix[:1], 3, axis=0)
    rows[:, j] = [column.high, column.high * 10, np.nan]
    x = design.transform(rows)[:, design.columns.index(column)]
    assert x[0] == x[1]  # beyond the training maximum scores as the maximum
    expected = (np.log1p(column.median) - column.center) / column.scale  # imputed with the training median
    assert x[2] == pytest.approx(expected)


def test_design_rejects_a_matrix_of_the_wrong_width(data):
    matrix, _, encoder = data
    design = LinearDesign.fit(matrix, encoder)
    with pytest.raises(ValueError, match=r"expects \(n_rows, 41\)"):
        design.transform(matrix[:, :5])


def _awkward_rows(matrix: np.ndarray, encoder) -> np.ndarray:
    """Training rows with what a design must still score bit for bit: NaN, -0.0, codes that are not
    integers, codes no level has, infinities and huge numbers, in categorical and numeric columns."""
    rng = np.random.default_rng(7)
    rows = matrix[:400].copy()
    for value, share in [(np.nan, 0.1), (-0.0, 0.05), (np.inf, 0.02), (-1e300, 0.02), (999.0, 0.03)]:
        rows[rng.random(rows.shape) < share] = value
    categorical = encoder.categorical_indices
    rows[:40, categorical] += 0.5  # between two codes: no level's indicator is set
    rows[40:60, categorical] = -1.0
    return rows


def _bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float64).view(np.int64)


def test_vectorised_design_has_the_bits_of_each_column_computed_alone(glm, data):
    matrix, _, encoder = data
    rows = _awkward_rows(matrix, encoder)
    design = glm.design
    reference = np.column_stack(
        [(column.raw(rows[:, column.feature]) - column.center) / column.scale for column in design.columns]
    )
    assert {c.kind for c in design.columns} == {VALUE, MISSING, LEVEL, RARE}  # every kind is exercised
    np.testing.assert_array_equal(_bits(design.transform(rows)), _bits(reference))


def test_glm_explanations_have_the_bits_of_the_column_by_column_sums(glm, data):
    """The code tables and the vectorised sums give what summing each feature's columns left to right
    gives (the order decision records were scored and are replayed in), row alone or in a batch."""
    matrix, _, encoder = data
    rows = _awkward_rows(matrix, encoder)
    per_column = (glm.design.transform(rows) - glm.means) * glm.coefficients
    reference = np.zeros((len(rows), glm.design.n_features))
    for j in range(glm.design.n_features):
        for i in [i for i, c in enumerate(glm.design.columns) if c.feature == j]:
            reference[:, j] += per_column[:, i]
    base, contributions = glm.explain(rows)
    np.testing.assert_array_equal(_bits(contributions), _bits(reference))
    np.testing.assert_array_equal(_bits(glm.contributions_by_design(rows)), _bits(reference))
    alone = np.vstack([glm.explain(rows[i : i + 1])[1] for i in range(0, len(rows), 7)])
    np.testing.assert_array_equal(_bits(alone), _bits(contributions[::7]))
    assert base[0] == glm.intercept + float(glm.means @ glm.coefficients)


@pytest.mark.parametrize("family", ["trees", "GLM", "GLM-offset", "blend"])
def test_every_family_is_exactly_additive(families, data, family):
    matrix, _, _ = data
    model = families[family]
    explanation = model.explain(matrix[:2000])
    raw = model.raw_score(matrix[:2000])
    assert explanation.contributions.shape == (2000, len(model.feature_names))
    assert np.max(np.abs(explanation.raw_score - raw)) < ADDITIVITY
    assert np.all(np.isfinite(model.predict_pd(matrix[:10])))


def test_blend_is_the_weighted_sum_of_its_members(families, data):
    matrix, _, _ = data
    blend, glm = families["blend"], families["GLM"]
    rows = matrix[:500]
    members = [glm.linear.raw_score(rows), *(b.predict(rows, raw_score=True) for b in blend.boosters)]
    w = blend.weights
    np.testing.assert_allclose(
        blend.raw_score(rows),
        w.offset + w.linear * members[0] + w.trees[0] * members[1] + w.trees[1] * members[2],
        rtol=0,
        atol=1e-12,
    )


def test_glm_contributions_are_coefficient_times_centred_design(glm, data):
    matrix, _, encoder = data
    rows = matrix[:50]
    base, contributions = glm.explain(rows)
    centred = (glm.design.transform(rows) - glm.means) * glm.coefficients
    j = encoder.feature_names.index("merchant_category")
    own = [i for i, c in enumerate(glm.design.columns) if c.feature == j]
    np.testing.assert_allclose(contributions[:, j], centred[:, own].sum(axis=1), atol=1e-12)
    assert base[0] == pytest.approx(glm.intercept + glm.means @ glm.coefficients)


def test_glm_keeps_the_monotone_directions(glm, data):
    _, _, encoder = data
    for feature, coefficient in glm.signed_value_coefficients().items():
        sign = encoder.monotone_constraints[feature]
        assert sign * coefficient >= 0, encoder.feature_names[feature]
    for name in glm.constrained:
        assert glm.signed_value_coefficients()[encoder.feature_names.index(name)] == 0.0


@pytest.mark.parametrize("family", ["trees", "GLM", "GLM-offset", "blend"])
def test_every_family_round_trips_through_the_model_store(families, data, family):
    matrix, _, _ = data
    model = families[family]
    stored = save_to_store(model, metadata={}, labels={}, name=f"linear_test_{family.lower().replace('-', '_')}")
    loaded = load_from_store(stored)
    assert loaded.family == family and loaded.n_trees == model.n_trees
    rows = matrix[:300]
    np.testing.assert_array_equal(loaded.raw_score(rows), model.raw_score(rows))
    np.testing.assert_array_equal(loaded.explain(rows).contributions, model.explain(rows).contributions)
    np.testing.assert_array_equal(loaded.predict_pd(rows), model.predict_pd(rows))


def test_a_glm_model_holds_no_trees_and_scores_as_its_glm(families, data):
    matrix, _, _ = data
    model = families["GLM"]
    assert model.n_trees == 0 and model.describe().startswith("GLM")
    np.testing.assert_array_equal(model.raw_score(matrix[:100]), model.linear.raw_score(matrix[:100]))


def test_inconsistent_parts_are_refused(families, data, schema):
    matrix, _, encoder = data
    model = families["blend"]
    with pytest.raises(ValueError, match="tree weights"):
        ScoringModel(
            booster=model.booster,
            encoder=encoder,
            calibrator=model.calibrator,
            schema=schema,
            linear=model.linear,
            family="blend",
            weights=BlendWeights(trees=(1.0, 1.0)),
        )
    with pytest.raises(ValueError, match="needs its GLM part"):
        ScoringModel(booster=model.booster, encoder=encoder, calibrator=model.calibrator, schema=schema, family="GLM")
    spec = model.linear.to_dict()
    spec["coefficients"] = spec["coefficients"][:-1]
    with pytest.raises(ValueError, match="design columns"):
        LinearModel.from_dict(spec)


def test_the_start_up_check_refuses_code_tables_that_differ_from_the_design(glm, data):
    matrix, _, _ = data
    glm.check_code_tables(matrix[:50])  # consistent: no error
    broken = LinearModel.from_dict(glm.to_dict())
    broken._code_tables.values[:] += 1e-12  # what a table built by other arithmetic would be off by
    with pytest.raises(ValueError, match="GLM code tables differ"):
        broken.check_code_tables(matrix[:50])
