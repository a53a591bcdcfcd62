"""Reasons: a code's contribution is the sum of its features', only PD-raising codes count, ranked, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from credit_pd.explanation import ReasonCodes
from credit_pd.schema import DatasetSchema


def _schema(**extra) -> DatasetSchema:
    features = [
        {"name": "dc_12m", "type": "numeric", "reason_code": "DC", "description": "dc 12m"},
        {"name": "age", "type": "numeric", "never_a_reason": True},
        {"name": "dc_24m", "type": "numeric", "reason_code": "DC"},
        {"name": "late", "type": "numeric", "reason_code": "LATE"},
        {"name": "email", "type": "categorical", "reason_code": "EMAIL"},
    ]
    return DatasetSchema.model_validate(
        {
            "name": "t",
            "id_column": "id",
            "target_column": "y",
            "features": features,
            "reason_codes": {"DC": "Debt collection", "LATE": "Late payments", "EMAIL": "Email"},
            **extra,
        }
    )


@pytest.fixture()
def codes() -> ReasonCodes:
    return ReasonCodes.from_schema(_schema())


def test_code_contribution_is_the_sum_of_its_features(codes):
    rng = np.random.default_rng(0)
    contributions = rng.normal(size=(50, 5))
    by_code = codes.code_contributions(contributions)
    assert codes.codes == ("DC", "LATE", "EMAIL")
    assert codes.features == (("dc_12m", "dc_24m"), ("late",), ("email",))
    np.testing.assert_array_equal(by_code[:, 0], contributions[:, 0] + contributions[:, 2])
    np.testing.assert_array_equal(by_code[:, 1:], contributions[:, [3, 4]])


def test_only_codes_that_raise_the_pd_are_listed_largest_first(codes):
    # DC = 0.3 + 0.4 = 0.7, LATE = -0.2 (lowers the PD), EMAIL = 0.1; age (5.0) is never named.
    row = np.array([[0.3, 5.0, 0.4, -0.2, 0.1]])
    [reasons] = codes.reason_objects(row, max_reasons=4)
    assert [r.code for r in reasons] == ["DC", "EMAIL"]
    assert reasons[0].contribution == pytest.approx(0.7) and reasons[0].text == "Debt collection"
    assert reasons[0].features == ("dc_12m", "dc_24m")
    assert all(r.contribution > 0 for r in reasons)


def test_max_reasons_limits_the_list_and_zero_gives_none(codes):
    rows = np.array([[0.3, 0.0, 0.4, 0.2, 0.1]] * 3)
    lists = codes.reasons(rows, max_reasons=[0, 1, 4])
    assert [len(r) for r in lists] == [0, 1, 3]
    assert codes.reasons(rows, max_reasons=0) == [[], [], []]
    with pytest.raises(ValueError, match="max_reasons"):
        codes.reasons(rows, max_reasons=-1)


def test_ties_keep_the_order_of_the_codes(codes):
    [reasons] = codes.reasons(np.array([[0.25, 0.0, 0.0, 0.25, 0.25]]), max_reasons=4)
    assert [r["code"] for r in reasons] == ["DC", "LATE", "EMAIL"]


def test_zero_contributions_give_no_reasons(codes):
    assert codes.reasons(np.zeros((2, 5))) == [[], []]


def test_a_rows_reasons_do_not_depend_on_its_batch(codes):
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(257, 5)) * 10 ** rng.uniform(-8, 2, size=(257, 5))
    together = codes.reasons(batch, max_reasons=4)
    alone = [codes.reasons(batch[i : i + 1], max_reasons=4)[0] for i in range(len(batch))]
    assert together == alone


def test_contributions_of_the_wrong_width_are_refused(codes):
    with pytest.raises(ValueError, match="4 features, the reason codes 5"):
        codes.code_contributions(np.zeros((1, 4)))


def test_default_rule_each_feature_its_own_code_text_from_description():
    schema = DatasetSchema.model_validate(
        {
            "name": "t",
            "id_column": "id",
            "target_column": "y",
            "features": [
                {"name": "a", "type": "numeric", "description": "Amount owed"},
                {"name": "b", "type": "numeric"},
                {"name": "hour", "type": "numeric", "never_a_reason": True},
            ],
        }
    )
    codes = ReasonCodes.from_schema(schema)
    assert codes.codes == ("a", "b") and codes.texts == ("Amount owed", "b")
    [reasons] = codes.reasons(np.array([[0.1, 0.2, 9.0]]))
    assert [r["code"] for r in reasons] == ["b", "a"]


def test_a_limit_above_the_number_of_codes_means_every_code(codes):
    rows = np.array([[0.3, 0.0, 0.4, 0.2, 0.1]] * 2)
    assert codes.reasons(rows, max_reasons=[10**30, 3]) == [codes.reasons(rows[:1], 3)[0]] * 2
