"""Encoding: training files and service requests must become the identical matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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
