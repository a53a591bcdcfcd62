"""Model behaviour of the reasons: a worse record in one reason's features raises that reason and lists it.

Directional checks on a model trained in the test session (tests/conftest.py `trained_run`), in the
spirit of Made-With-ML's `tests/model`: what a customer is told must move the way the record moved.
"""

from __future__ import annotations

import numpy as np
import pytest

DEBT_COLLECTION = {"num_arch_dc_0_12m": 4.0, "num_arch_dc_12_24m": 3.0, "account_days_in_dc_12_24m": 60.0}


def _decide(model, application: dict, max_reasons: int = 4):
    decision = model.decide(model.encoder.encode_records([application]), max_reasons)
    by_code = model.reason_codes.code_contributions(decision.explanation.contributions)[0]
    return decision, dict(zip(model.reason_codes.codes, by_code.tolist(), strict=False))


@pytest.fixture(scope="module")
def clean_application(trained_run) -> dict:
    """The schema's example with no debt-collection history at all."""
    example = dict(trained_run.model.schema.example)
    return {**example, **{name: 0.0 for name in DEBT_COLLECTION}}


def test_more_debt_collection_raises_its_reason_and_lists_it(trained_run, clean_application):
    model = trained_run.model
    before, before_codes = _decide(model, clean_application)
    after, after_codes = _decide(model, {**clean_application, **DEBT_COLLECTION})
    assert "DEBT_COLLECTION" not in [r["code"] for r in before.reasons[0]]
    assert after_codes["DEBT_COLLECTION"] > before_codes["DEBT_COLLECTION"]
    assert "DEBT_COLLECTION" in [r["code"] for r in after.reasons[0]]
    assert after.pd[0] > before.pd[0]
    assert model.master_scale.grade_index(after.pd)[0] >= model.master_scale.grade_index(before.pd)[0]


def test_reasons_are_ranked_positive_and_within_the_limit(trained_run, sample_rows):
    model = trained_run.model
    decision = model.decide(model.encoder.encode_frame(sample_rows), max_reasons=4)
    texts = dict(zip(model.reason_codes.codes, model.reason_codes.texts, strict=False))
    for reasons in decision.reasons:
        contributions = [r["contribution"] for r in reasons]
        assert len(reasons) <= 4 and all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert all(texts[r["code"]] == r["text"] for r in reasons)
    never = {"age", "time_hours", "merchant_category", "merchant_group"}
    assert not never & {f for reasons in decision.reasons for r in reasons for f in r["features"]}
    assert set(decision.grade) <= set(model.master_scale.names)


def test_never_named_age_still_counts_in_the_pd(trained_run, clean_application):
    model = trained_run.model
    young, old = (_decide(model, {**clean_application, "age": age})[0] for age in (18.0, 80.0))
    age_column = list(model.feature_names).index("age")
    contributions = np.vstack([young.explanation.contributions[0], old.explanation.contributions[0]])
    if np.all(contributions[:, age_column] == 0):
        pytest.skip("this small model uses no age split")
    assert young.pd[0] != old.pd[0]
    assert "age" not in {f for d in (young, old) for r in d.reasons[0] for f in r["features"]}


@pytest.fixture(scope="module")
def sample_rows(trained_run, small_sample_path):
    """A few hundred training-format rows (typed by the strict loader) to score."""
    from credit_pd.dataset import load_dataset

    frame = load_dataset(small_sample_path, trained_run.model.schema)
    return frame.iloc[:500]
