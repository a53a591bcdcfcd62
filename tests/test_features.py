"""Encoding: training files and service requests must become the identical matrix."""

from __future__ import annotations

import decimal
import re

import numpy as np
import pandas as pd
import pytest

from credit_pd.categories import canonical_categories
from credit_pd.client import requests_from_frame
from credit_pd.dataset import load_dataset
from credit_pd.features import FeatureEncoder


@pytest.fixture(scope="module")
def frame(small_sample_path, schema) -> pd.DataFrame:
    return load_dataset(small_sample_path, schema)


@pytest.fixture(scope="module")
def encoder(frame, schema) -> FeatureEncoder:
    return FeatureEncoder.fit(frame, schema)


def test_frame_and_records_encode_identically(frame, encoder, schema):
    head = frame.head(300)
    np.testing.assert_array_equal(encoder.encode_frame(head), encoder.encode_records(requests_from_frame(head, schema)))


def test_complete_records_encode_as_row_by_row_does(frame, encoder, schema):
    """The column-wise path (records holding every feature) gives the row-by-row path's matrix for
    every spelling: canonical, other spellings of a numeric code, unseen, missing; a record lacking a
    key sends the whole batch down the row-by-row path, where the key counts as None."""
    records = requests_from_frame(frame.head(50), schema)
    coded = next(name for name in encoder.categorical if encoder.numeric_coded(name))
    label = encoder.categorical[coded][0]
    records[1] = records[1] | {coded: float(label), "merchant_group": "Spaceships"}
    records[2] = records[2] | {coded: f"{label}.0", "age": None}
    records[3] = records[3] | {coded: 10**6, "merchant_group": None}
    expected = encoder._encode_records_by_row(records)
    np.testing.assert_array_equal(encoder.encode_records(records), expected)
    assert np.isnan(expected[1, list(encoder.feature_names).index("merchant_group")])
    assert expected[1, list(encoder.feature_names).index(coded)] == 0.0
    lacking = [records[0], {k: v for k, v in records[1].items() if k != "age"}]
    np.testing.assert_array_equal(encoder.encode_records(lacking), encoder._encode_records_by_row(lacking))
    assert np.isnan(encoder.encode_records(lacking)[1, list(encoder.feature_names).index("age")])
    assert encoder.encode_records([]).shape == (0, len(encoder.feature_names))


def test_uuid_and_target_are_not_features(encoder, schema):
    assert schema.id_column not in encoder.feature_names
    assert schema.target_column not in encoder.feature_names
    assert list(encoder.feature_names) == schema.feature_names


def test_unseen_and_missing_categories_become_nan(frame, encoder, schema):
    record = requests_from_frame(frame.head(1), schema)[0] | {"merchant_group": "Spaceships", "account_status": None}
    matrix = encoder.encode_records([record])
    names = list(encoder.feature_names)
    assert np.isnan(matrix[0, names.index("merchant_group")])
    assert np.isnan(matrix[0, names.index("account_status")])
    [warnings] = encoder.input_warnings(matrix, lambda row, name: record[name])
    assert warnings == ["merchant_group: value 'Spaceships' was not seen in training; scored as missing"], (
        "a missing value is no warning"
    )


def test_codes_do_not_depend_on_row_order(frame, schema, encoder):
    shuffled = FeatureEncoder.fit(frame.sample(frac=1.0, random_state=1), schema)
    assert shuffled == encoder


def test_round_trips_through_plain_dict(encoder):
    assert FeatureEncoder.from_dict(encoder.to_dict()) == encoder


def test_out_of_training_range_is_reported(frame, encoder, schema):
    low, high = encoder.numeric_ranges["age"]
    record = requests_from_frame(frame.head(1), schema)[0] | {"age": high + 1}
    [warnings] = encoder.input_warnings(encoder.encode_records([record]), lambda row, name: record[name])
    assert warnings == [
        f"age: value {high + 1!r} is outside the training range [{low:g}, {high:g}]; scored as the nearest seen value"
    ]


def reference_codes(encoder: FeatureEncoder, name: str, column: pd.Series) -> np.ndarray:
    """The codes as `encode_frame` built them before its per-distinct-value path: every row through
    `canonical_categories`, then `pd.Categorical` over the vocabulary."""
    codes = pd.Categorical(canonical_categories(column), categories=list(encoder.categorical[name])).codes
    codes = codes.astype(np.float64)
    codes[codes < 0] = np.nan
    return codes


TRICKY = FeatureEncoder(
    feature_names=("status", "label"),
    categorical={"status": ("-1", "0", "01", "1", "1.5", "1e0", "2", "A", "a b"), "label": ("x",)},
    boolean=(),
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize(
    "column",
    [
        pd.Series(
            ["1", "1.0", "1.00", 1, 1.0, np.float64(1.5), "1.50", None, np.nan, "", "A", "a b", "01", "1e0", "+1", " 1"]
            + ["-0.0", -0.0, 0, "0.0", "B", pd.NA, pd.NaT, decimal.Decimal("NaN"), decimal.Decimal("1.0"), np.int64(2)]
            + [np.float32(2.0), "-1", -1, "-1.0", 10**20, 1e20, "2.000000000000000000001", "1" * 30],
            dtype=object,
        ),
        pd.Series(["1", "1.0", None, "A", "", "01", "x", "1.50", "-0.0", "1e0"], dtype="str"),
        pd.Series(["1", "1.0", None, "A", "", "01"], dtype="string"),
        pd.Series([1.0, 2.0, np.nan, -0.0, 0.0, 1.5, 3.0, 2.5]),
        pd.Series([1, 2, 0, -1, 5]),
        pd.Series([1, None, 2], dtype="Int64"),
        pd.Series(["1", "A", None, "1.0"], dtype="category"),
        pd.Series(pd.Categorical([1.0, 2.0, None])),
        pd.Series([], dtype=object),
        pd.Series([None, None], dtype=object),
    ],
    ids=["object", "str", "string", "float", "int", "Int64", "category", "numeric-category", "empty", "all-missing"],
)
def test_per_distinct_value_codes_equal_spelling_every_row(column):
    np.testing.assert_array_equal(TRICKY._encode_column("status", column), reference_codes(TRICKY, "status", column))


@pytest.mark.parametrize(
    "column",
    [pd.Series([True, False]), pd.Series(["A", True], dtype=object), pd.Series(["1", np.inf], dtype=object)],
    ids=["bool", "text-and-bool", "infinity"],
)
def test_per_distinct_value_codes_fail_as_spelling_every_row(column):
    with pytest.raises((TypeError, ValueError)) as expected:
        reference_codes(TRICKY, "status", column)
    with pytest.raises(expected.type, match=re.escape(str(expected.value))):
        TRICKY._encode_column("status", column)


def test_the_loaders_frame_encodes_as_spelling_every_row(frame, encoder):
    for name in encoder.categorical:
        np.testing.assert_array_equal(
            encoder._encode_column(name, frame[name]), reference_codes(encoder, name, frame[name])
        )


def test_frame_warnings_equal_the_per_cell_warnings_in_the_same_order(frame, encoder, schema):
    rows = frame.head(200).copy()
    low, high = encoder.numeric_ranges["age"]
    rows.loc[rows.index[:40], "merchant_group"] = "Spaceships"
    rows.loc[rows.index[20:60], "age"] = high + 1
    rows.loc[rows.index[30:50], "account_status"] = "99"
    rows.loc[rows.index[50:70], "merchant_group"] = np.nan  # missing: no warning
    rows = rows.reset_index(drop=True)
    matrix = encoder.encode_frame(rows)
    expected = encoder.input_warnings(matrix, lambda row, name: rows[name].to_numpy()[row])
    assert max(map(len, expected)) == 3, "rows with several warnings, of both kinds"
    assert encoder.frame_warnings(matrix, rows) == expected
    assert expected[35] == [
        "account_status: value '99' was not seen in training; scored as missing",
        "merchant_group: value 'Spaceships' was not seen in training; scored as missing",
        f"age: value {high + 1!r} is outside the training range [{low:g}, {high:g}]; scored as the nearest seen value",
    ]
