"""The batch scorer's cell reader: the same values as `frame[name].iat[row]`, without a Series per cell."""

from __future__ import annotations

import math

from credit_pd.batch.scoring import cell_reader
from credit_pd.batch.validation import validate_batch
from credit_pd.config import SampleConfig
from credit_pd.features import FeatureEncoder
from credit_pd.schema import load_schema
from credit_pd.training.sample import generate_sample, to_export_format


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a is b or (a == b and type(a) is type(b))


def test_cell_reader_returns_what_iat_returns_for_every_cell_of_a_validated_batch():
    schema = load_schema()
    text = to_export_format(generate_sample(SampleConfig(n_rows=400)).frame, schema).astype(str)
    typed = validate_batch(text.replace({"NA": None}), schema).typed
    assert typed.isna().any().any(), "the batch must hold missing cells"
    read = cell_reader(typed)
    for name in schema.feature_names:
        for row in range(len(typed)):
            assert same(read(row, name), typed[name].iat[row]), (name, row)


def test_input_warnings_through_the_reader_equal_the_per_cell_lookup():
    schema = load_schema()
    sample = generate_sample(SampleConfig(n_rows=400)).frame
    encoder = FeatureEncoder.fit(sample.iloc[:200], schema)  # the rest holds unseen and out-of-range values
    typed = validate_batch(to_export_format(sample.iloc[200:], schema).astype(str).replace({"NA": None}), schema).typed
    matrix = encoder.encode_frame(typed)
    expected = encoder.input_warnings(matrix, lambda row, name: typed[name].iat[row])
    assert sum(map(len, expected)) > 0, "the batch must raise warnings"
    assert encoder.input_warnings(matrix, cell_reader(typed)) == expected
