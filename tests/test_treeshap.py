"""Table TreeSHAP (credit_pd.treeshap) against LightGBM's pred_contrib, the reference.

Every test trains a small booster on synthetic rows and checks contributions, base value and
base + sum = raw score to 1e-9 with `verify_tables`, on the training rows plus rows built to sit
on LightGBM's decision edges (exact thresholds and their neighbours, values near zero, NaN,
categories never seen, negative and fractional codes).
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from credit_pd.config import DEFAULT_SHAPES, SampleConfig, TrainingConfig, TreeShape
from credit_pd.features import FeatureEncoder
from credit_pd.schema import (
    DEFAULT_SCHEMA_PATH,
    DatasetSchema,
    FeatureType,
    load_schema,
)
from credit_pd.treeshap import (
    K_ZERO_THRESHOLD,
    TableMismatchError,
    TablesTooLarge,
    TreeShapError,
    TreeShapTables,
    UnsupportedModel,
    verify_tables,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = [
    DEFAULT_SCHEMA_PATH,
    REPO / "tests" / "fixtures" / "german_credit_schema.yaml",
    *sorted((REPO / "benchmarks" / "datasets").glob("*.yaml")),
]
N_ROWS = 2_000
CATEGORICAL = [0, 3]  # columns of `synthetic` holding category codes


def synthetic(n: int = N_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Numeric, categorical and integer columns with NaN and exact zeros, and a label using them all."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(0, 7, n).astype(float),  # categorical, 7 levels
            rng.normal(size=n),
            np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n)),  # many exact zeros
            rng.integers(0, 25, n).astype(float),  # categorical, 25 levels (bitset > 1 word)
            rng.integers(0, 5, n).astype(float),  # small integers: thresholds between them
            rng.normal(size=n),
        ]
    )
    x[rng.random(n) < 0.1, 0] = np.nan
    x[rng.random(n) < 0.15, 1] = np.nan
    x[rng.random(n) < 0.1, 3] = np.nan
    logit = (
        (np.nan_to_num(x[:, 0]) % 2 - 0.5)
        + np.nan_to_num(x[:, 1])
        + 0.8 * (x[:, 2] == 0)
        + 0.3 * (np.nan_to_num(x[:, 3]) % 3)
        - 0.4 * x[:, 4]
        + 0.5 * x[:, 5] * np.nan_to_num(x[:, 1])
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y


def train(
    x: np.ndarray,
    y: np.ndarray,
    rounds: int = 30,
    categorical: list[int] | None = None,
    init_score: np.ndarray | None = None,
    **params,
) -> lgb.Booster:
    base = {
        "objective": "binary",
        "verbosity": -1,
        "num_threads": 1,
        "min_child_samples": 10,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "max_cat_to_onehot": 4,
        "seed": 1,
    }
    data = lgb.Dataset(
        x,
        y,
        categorical_feature=CATEGORICAL if categorical is None else categorical,
        init_score=init_score,
        params={"feature_pre_filter": False},
    )
    return lgb.train({**base, **params}, data, num_boost_round=rounds)


def thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    """(feature, threshold) of every numeric node."""
    found: list[tuple[int, float]] = []

    def walk(node: dict) -> None:
        if "split_index" in node:
            if node["decision_type"] == "<=":
                found.append((node["split_feature"], float(node["threshold"])))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def missing_types(booster: lgb.Booster) -> set[tuple[str, str]]:
    """(decision type, missing type) pairs of all nodes, to prove a test exercises what it claims."""
    found: set[tuple[str, str]] = set()

    def walk(node: dict) -> None:
        if "split_index" in node:
            found.add((node["decision_type"], node["missing_type"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return found


def edge_rows(x: np.ndarray, booster: lgb.Booster, seed: int = 1) -> np.ndarray:
    """Rows that sit on decision edges, each a copy of a training row with one value replaced."""
    rng = np.random.default_rng(seed)
    specials = [
        np.nan,
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        K_ZERO_THRESHOLD,
        -K_ZERO_THRESHOLD,
        np.nextafter(K_ZERO_THRESHOLD, 1.0),
        -np.nextafter(K_ZERO_THRESHOLD, 1.0),
        -0.5,
        -1.0,
        -3.0,
        2.7,
        6.999,
        7.0,
        40.0,
        1e10,
        -1e10,
        3e9,
        np.inf,
        -np.inf,
    ]
    rows = []
    for feature in range(x.shape[1]):
        for value in specials:
            row = x[rng.integers(len(x))].copy()
            row[feature] = value
            rows.append(row)
    for feature, threshold in thresholds(booster):
        for value in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf)):
            row = x[rng.integers(len(x))].copy()
            row[feature] = value
            rows.append(row)
    return np.vstack([x, np.array(rows)])


def check(booster: lgb.Booster, x: np.ndarray) -> TreeShapTables:
    tables = TreeShapTables.from_booster(booster)
    result = verify_tables(tables, booster, edge_rows(x, booster))
    assert result.rows > len(x)
    return tables


GRID = [
    pytest.param(
        shape.num_leaves, shape.max_depth, shape.min_child_samples, getattr(shape, "glm_offset", False), id=shape.name
    )
    for shape in DEFAULT_SHAPES
]
# Leaf-wise shapes (issue 21): 8-31 leaves with bounded depth; the larger ones use leaf tables.
LEAF_WISE = [
    pytest.param(leaves, depth, 5, False, id=f"{leaves} leaves, depth {depth}")
    for leaves, depth in ((16, 4), (15, 5), (31, 6), (31, 8))
]


@pytest.mark.parametrize("num_leaves, max_depth, min_child, glm_offset", GRID + LEAF_WISE)
def test_every_shape_matches_pred_contrib(num_leaves: int, max_depth: int, min_child: int, glm_offset: bool) -> None:
    x, y = synthetic()
    offset = 0.5 * np.nan_to_num(x[:, 1]) - 0.3 * x[:, 4] if glm_offset else None
    booster = train(
        x, y, num_leaves=num_leaves, max_depth=max_depth, min_child_samples=min(min_child, 40), init_score=offset
    )
    tables = check(booster, x)
    assert tables.n_trees == booster.num_trees()
    if num_leaves > 9:
        assert tables.n_leaf_units > 0, "deep trees must be explained with per-leaf tables"


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"use_missing": False}, "None"),
        ({"zero_as_missing": True}, "Zero"),
        ({}, "NaN"),
    ],
)
def test_each_missing_type(params: dict, expected: str) -> None:
    x, y = synthetic(seed=2)
    booster = train(x, y, num_leaves=4, max_depth=2, **params)
    assert ("<=", expected) in missing_types(booster)
    check(booster, x)


def test_missing_type_none_for_a_feature_without_nan_in_training() -> None:
    x, y = synthetic(seed=3)
    booster = train(x, y, num_leaves=8, max_depth=3)
    assert ("<=", "None") in missing_types(booster)  # columns 2, 4 and 5 have no NaN
    check(booster, x)


def test_categorical_splits_with_unseen_missing_negative_and_fractional_codes() -> None:
    x, y = synthetic(seed=4)
    booster = train(x, y, num_leaves=8, max_depth=3, max_cat_to_onehot=2)
    assert any(kind == "==" for kind, _ in missing_types(booster))
    tables = check(booster, x)
    rows = np.repeat(x[:1], 9, axis=0)
    rows[:, 3] = [np.nan, -1.0, -0.5, 0.5, 24.0, 25.0, 1e6, 2.0**31, -(2.0**31)]
    verify_tables(tables, booster, rows)


def test_one_hot_categorical_splits() -> None:
    x, y = synthetic(seed=5)
    booster = train(x, y, num_leaves=4, max_depth=2, max_cat_to_onehot=32)
    check(booster, x)


def test_monotone_constraints() -> None:
    x, y = synthetic(seed=6)
    booster = train(
        x,
        y,
        num_leaves=8,
        max_depth=3,
        monotone_constraints=[0, 1, 0, 0, -1, 1],
        monotone_constraints_method="advanced",
    )
    check(booster, x)


def test_boosting_from_an_init_score_excludes_it() -> None:
    """A model boosted from a GLM offset: tables explain the trees, as pred_contrib does."""
    x, y = synthetic(seed=7)
    offset = 0.7 * np.nan_to_num(x[:, 1]) - 0.2
    booster = train(x, y, num_leaves=4, max_depth=2, init_score=offset)
    tables = check(booster, x)
    base, contributions = tables.explain(x)
    np.testing.assert_allclose(base + contributions.sum(axis=1), booster.predict(x, raw_score=True), atol=1e-9)


def test_regression_objective_and_unused_features() -> None:
    x, y = synthetic(seed=8)
    x = np.column_stack([x, np.zeros(len(x))])  # a feature no tree can use
    booster = train(x, y + x[:, 5], objective="regression", num_leaves=8, max_depth=3)
    tables = check(booster, x)
    assert np.all(tables.explain(x)[1][:, -1] == 0.0)


def test_zero_and_one_tree_boosters() -> None:
    x, y = synthetic(seed=9)
    constant = train(x, np.ones(len(x)), rounds=3, objective="regression")  # trees of one leaf
    assert all(t["num_leaves"] == 1 for t in constant.dump_model()["tree_info"])
    check(constant, x)
    one = train(x, y, rounds=1, num_leaves=4, max_depth=2)
    assert one.num_trees() == 1
    check(one, x)
    none = lgb.Booster({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, y, categorical_feature=CATEGORICAL))
    assert none.num_trees() == 0
    tables = TreeShapTables.from_booster(none)
    verify_tables(tables, none, x)
    base, contributions = tables.explain(x)
    assert base == 0.0 and contributions.shape == x.shape and not contributions.any()


def test_num_iteration_and_best_iteration_are_what_predict_uses() -> None:
    x, y = synthetic(seed=10)
    booster = train(x, y, rounds=20, num_leaves=4, max_depth=2)
    verify_tables(TreeShapTables.from_booster(booster, num_iteration=7), booster, x, num_iteration=7)
    booster.best_iteration = 11
    tables = TreeShapTables.from_booster(booster)
    assert tables.n_trees == 11
    verify_tables(tables, booster, x)  # predict(num_iteration=None) uses the best iteration too


def _schema_frame(schema: DatasetSchema, n: int, seed: int) -> pd.DataFrame:
    """Rows typed like `load_dataset`'s result for any schema: floats, labels or None, 0/1 target."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    score = np.zeros(n)
    for spec in schema.features:
        missing = rng.random(n) < (0.1 if spec.nullable else 0.0)
        if spec.type == FeatureType.CATEGORICAL:
            codes = rng.integers(0, 9, n)
            score += 0.3 * (codes % 3)
            labels = [None if m else f"level {c}" for c, m in zip(codes, missing, strict=True)]
            columns[spec.name] = pd.Series(labels, dtype=object)
        elif spec.type == FeatureType.BOOLEAN:
            flags = rng.random(n) < 0.4
            score += 0.5 * flags
            columns[spec.name] = np.where(missing, np.nan, flags.astype(float))
        else:
            low = spec.minimum if spec.minimum is not None else -50.0
            high = spec.maximum if spec.maximum is not None else low + 100.0
            values = np.round(rng.uniform(low, high, n), 1)
            score += (values - low) / (high - low)
            columns[spec.name] = np.where(missing, np.nan, values)
    frame = pd.DataFrame(columns)
    frame[schema.target_column] = (rng.random(n) < 1 / (1 + np.exp(-(score - score.mean())))).astype(float)
    return frame


def _klarna_sample_frame(schema: DatasetSchema, n: int) -> pd.DataFrame:
    from credit_pd.training.sample import generate_sample

    frame = generate_sample(SampleConfig(n_rows=n)).frame
    return frame[frame[schema.target_column].notna()].reset_index(drop=True)


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.stem)
def test_repo_schemas_trained_as_the_project_trains(schema_path: Path) -> None:
    """Each schema's features through the project's encoder, parameters and monotone constraints."""
    from credit_pd.training.fit import booster_params, make_dataset

    schema = load_schema(schema_path)
    frame = (
        _klarna_sample_frame(schema, 6_000)
        if schema_path == DEFAULT_SCHEMA_PATH
        else _schema_frame(schema, N_ROWS, seed=11)
    )
    encoder = FeatureEncoder.fit(frame, schema)
    matrix = encoder.encode_frame(frame)
    y = frame[schema.target_column].to_numpy()
    config = TrainingConfig(num_threads=1)
    shape = TreeShape("test", num_leaves=8, max_depth=3, min_child_samples=20, lambda_l2=1.0, learning_rate=0.1)
    booster = lgb.train(booster_params(encoder, config, shape, seed=3), make_dataset(matrix, y, encoder), 25)
    tables = TreeShapTables.from_booster(booster)
    unseen = matrix[:50].copy()
    unseen[:, encoder.categorical_indices] = 99.0  # codes beyond every vocabulary
    verify_tables(tables, booster, np.vstack([matrix, unseen, np.full((1, matrix.shape[1]), np.nan)]))


def test_arrays_round_trip_through_npz(tmp_path: Path) -> None:
    x, y = synthetic(seed=12)
    booster = train(x, y, num_leaves=16, max_depth=5)
    tables = TreeShapTables.from_booster(booster)
    arrays = tables.to_arrays()
    assert all(isinstance(value, np.ndarray) for value in arrays.values())
    np.savez(tmp_path / "tables.npz", **arrays)
    with np.load(tmp_path / "tables.npz") as stored:
        loaded = TreeShapTables.from_arrays(dict(stored))
    base, contributions = loaded.explain(x)
    expected_base, expected = tables.explain(x)
    assert base == expected_base
    assert np.array_equal(contributions, expected)
    verify_tables(loaded, booster, x)


def test_from_arrays_rejects_incomplete_or_foreign_tables() -> None:
    x, y = synthetic(seed=13)
    arrays = TreeShapTables.from_booster(train(x, y, rounds=3)).to_arrays()
    with pytest.raises(TreeShapError, match="lack fields.*table"):
        TreeShapTables.from_arrays({k: v for k, v in arrays.items() if k != "table"})
    with pytest.raises(TreeShapError, match="format version 99"):
        TreeShapTables.from_arrays({**arrays, "format_version": np.asarray(99)})


def test_verify_tables_names_the_largest_differences() -> None:
    x, y = synthetic(seed=14)
    booster = train(x, y, num_leaves=4, max_depth=2)
    arrays = TreeShapTables.from_booster(booster).to_arrays()
    arrays["table"] = arrays["table"] + 1e-6
    with pytest.raises(TableMismatchError, match=r"contributions .*e-0\d.*base value .*raw score"):
        verify_tables(TreeShapTables.from_arrays(arrays), booster, x)
    arrays = TreeShapTables.from_booster(booster).to_arrays()
    arrays["base_value"] = arrays["base_value"] + 1e-3
    with pytest.raises(TableMismatchError, match=r"base value 0\.001"):
        verify_tables(TreeShapTables.from_arrays(arrays), booster, x)


def test_tables_too_large_is_a_clear_signal() -> None:
    x, y = synthetic(seed=15)
    booster = train(x, y, num_leaves=31, max_depth=8)
    with pytest.raises(TablesTooLarge, match="pred_contrib"):
        TreeShapTables.from_booster(booster, max_table_values=1_000)


def test_multiclass_is_unsupported() -> None:
    x, _ = synthetic(seed=16)
    booster = train(x, (x[:, 4] % 3), rounds=2, objective="multiclass", num_class=3)
    with pytest.raises(UnsupportedModel, match="multiclass"):
        TreeShapTables.from_booster(booster)


def test_bad_matrix_names_what_was_expected() -> None:
    x, y = synthetic(seed=17)
    tables = TreeShapTables.from_booster(train(x, y, rounds=2))
    with pytest.raises(ValueError, match=r"shape \(5, 3\); expected \(n_rows, 6\)"):
        tables.explain(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="dtype <U1"):
        tables.explain(np.full((2, 6), "a"))


def test_chunking_does_not_change_the_result() -> None:
    x, y = synthetic(seed=18)
    tables = TreeShapTables.from_booster(train(x, y, num_leaves=16, max_depth=4))
    whole = tables.explain(x, chunk_rows=len(x))[1]
    assert np.array_equal(tables.explain(x, chunk_rows=7)[1], whole)
    assert np.array_equal(tables.explain(x[:1])[1], whole[:1])
    assert tables.explain(x[:0])[1].shape == (0, 6)
