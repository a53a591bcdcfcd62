"""The batch scorer's warnings: taken column by column from the typed batch, the same as per cell."""

from __future__ import annotations

from credit_pd.batch.validation import validate_batch
from credit_pd.config import SampleConfig
from credit_pd.features import FeatureEncoder
from credit_pd.schema import load_schema
from credit_pd.training.sample import generate_sample, to_export_format


def test_frame_warnings_of_a_validated_batch_equal_the_per_cell_lookup():
    schema = load_schema()
    sample = generate_sample(SampleConfig(n_rows=400)).frame
    encoder = FeatureEncoder.fit(sample.iloc[:200], schema)  # the rest holds unseen and out-of-range values
    typed = validate_batch(to_export_format(sample.iloc[200:], schema).astype(str).replace({"NA": None}), schema).typed
    assert typed.isna().any().any(), "the batch must hold missing cells"
    matrix = encoder.encode_frame(typed)
    expected = encoder.input_warnings(matrix, lambda row, name: typed[name].iat[row])
    assert sum(map(len, expected)) > 0, "the batch must raise warnings"
    assert encoder.frame_warnings(matrix, typed) == expected
