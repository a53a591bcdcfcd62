"""Model behaviour, in the spirit of Made-With-ML's `tests/model`: directional and invariance checks.

Directional: for every feature the schema marks `monotone: increasing` (credit policy: more debt
collection, reminders, write-offs or debt in recovery), a worse value never lowers the PD, for real
applications of the small sample. Invariance: the id, the other rows of a batch and their order never
change an application's PD. The features come from the schema, not from this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from credit_pd.client import requests_from_frame
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.schema import Monotone

STEPS = (0.0, 1.0, 2.0, 5.0, 20.0, 100.0, 5_000.0)


@pytest.fixture(scope="module")
def records(small_sample_path, schema) -> list[dict]:
    frame = load_dataset(small_sample_path, schema)
    return requests_from_frame(frame[~labelled_mask(frame, schema)].head(40), schema)


def pds(model, records: list[dict]) -> np.ndarray:
    return model.predict_pd(model.encoder.encode_records(records))


def monotone_features(schema, direction: Monotone) -> list[str]:
    return [f.name for f in schema.features if f.monotone is direction]


def test_the_schema_has_policy_directions_to_check(schema):
    assert len(monotone_features(schema, Monotone.INCREASING)) >= 5


@pytest.mark.parametrize("direction", [Monotone.INCREASING, Monotone.DECREASING])
def test_a_worse_value_of_a_policy_feature_never_lowers_the_pd(trained_run, records, direction):
    model = trained_run.model
    sign = 1 if direction is Monotone.INCREASING else -1
    for name in monotone_features(model.schema, direction):
        steps = STEPS if sign > 0 else STEPS[::-1]
        for record in records:
            curve = pds(model, [record | {name: value} for value in steps])
            assert np.all(np.diff(curve) >= -1e-12), f"{name}: PD fell as the value worsened: {curve.tolist()}"


def test_the_id_never_changes_the_pd(trained_run, records):
    model = trained_run.model
    renamed = [record | {"uuid": f"someone-else-{i}"} for i, record in enumerate(records)]
    np.testing.assert_array_equal(pds(model, renamed), pds(model, records))


def test_an_applications_pd_does_not_depend_on_the_rest_of_its_batch(trained_run, records):
    model = trained_run.model
    together = pds(model, records)
    alone = np.array([pds(model, [record])[0] for record in records])
    shuffled_order = np.random.default_rng(0).permutation(len(records))
    shuffled = pds(model, [records[i] for i in shuffled_order])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-12)
    np.testing.assert_allclose(shuffled, together[shuffled_order], rtol=0, atol=1e-12)


def test_a_decision_is_bit_identical_alone_and_in_any_batch(trained_run, records):
    """Replay compares PDs exactly: a row's PD, contributions and reasons must not depend on its batch."""
    model = trained_run.model
    matrix = model.encoder.encode_records(records)
    together = model.decide(matrix)
    for i in range(len(records)):
        alone = model.decide(matrix[i : i + 1])
        assert alone.pd[0] == together.pd[i], f"row {i}: {alone.pd[0]!r} alone, {together.pd[i]!r} in the batch"
        np.testing.assert_array_equal(alone.explanation.contributions[0], together.explanation.contributions[i])
