"""Row-level validation (no Spark): the loader's rules, applied per row, with a reason per rejected row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from credit_pd.batch.settings import CORRUPT_RECORD_COLUMN
from credit_pd.batch.validation import REJECT_REASON_COLUMN, validate_batch
from credit_pd.categories import CODE_SPELLING_MESSAGE
from credit_pd.dataset import load_dataset


def text_row(schema, **changes) -> dict:
    """The schema's example application as CSV text, with an id and the given changes."""
    row = {schema.id_column: "ok", schema.target_column: None}
    row |= {name: None if value is None else str(value) for name, value in schema.example.items()}
    return row | changes


def frame(schema, *rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=schema.columns, dtype="str")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"age": "12"}, "age: expected a value >= 18, got '12'"),
        ({"age": "abc"}, "age: expected a finite number, got 'abc'"),
        ({"time_hours": "inf"}, "time_hours: expected a finite number, got 'inf'"),
        ({"has_paid": "maybe"}, "has_paid: expected True or False, got 'maybe'"),
        ({"merchant_group": "NA"}, "merchant_group: a value is required (column is not nullable), got 'NA'"),
        ({"uuid": None}, "uuid: an id is required on every row, got nothing (missing)"),
    ],
)
def test_a_bad_value_rejects_its_row_with_column_and_expectation(schema, changes, reason):
    result = validate_batch(
        frame(schema, text_row(schema, uuid="good"), text_row(schema, uuid="bad") | changes), schema
    )
    assert result.typed["uuid"].tolist() == ["good"]
    assert result.rejects[REJECT_REASON_COLUMN].tolist() == [reason]


def test_every_failing_column_is_named_and_the_row_is_kept_as_text(schema):
    bad = text_row(schema, uuid="bad", age="200", has_paid="yes", num_active_inv="-1")
    rejects = validate_batch(frame(schema, bad), schema).rejects
    (reason,) = rejects[REJECT_REASON_COLUMN]
    assert reason.split("; ") == [
        "age: expected a value <= 120, got '200'",
        "has_paid: expected True or False, got 'yes'",
        "num_active_inv: expected a value >= 0, got '-1'",
    ]
    assert rejects.loc[0, "age"] == "200" and rejects.loc[0, "uuid"] == "bad"
    assert list(rejects.columns) == [*schema.columns, REJECT_REASON_COLUMN]


def test_a_malformed_line_is_rejected_with_the_line(schema):
    batch = frame(schema, text_row(schema, uuid="good"), text_row(schema, uuid="broken"))
    batch[CORRUPT_RECORD_COLUMN] = [None, "broken;1;2"]
    result = validate_batch(batch, schema)
    assert result.typed["uuid"].tolist() == ["good"]
    (reason,) = result.rejects[REJECT_REASON_COLUMN]
    assert (
        reason.startswith("malformed line: expected the header's fields separated by ';'") and "'broken;1;2'" in reason
    )
    assert CORRUPT_RECORD_COLUMN not in result.rejects


def test_typed_rows_equal_what_the_training_loader_reads(small_sample_path, schema):
    """Same text in, same typed values out, so the encoded matrix (and the PD) is train.py's."""
    raw = pd.read_csv(small_sample_path, sep=";", dtype="str", keep_default_na=False, na_values=[]).head(3_000)
    loaded = load_dataset(small_sample_path, schema).head(3_000)
    result = validate_batch(raw, schema)
    assert result.rejects.empty
    for name in schema.feature_names:
        ours, theirs = result.typed[name], loaded[name]
        if ours.dtype == np.float64:
            np.testing.assert_array_equal(ours.to_numpy(), theirs.to_numpy(dtype=np.float64), err_msg=name)
        else:
            assert [None if pd.isna(v) else v for v in ours] == [None if pd.isna(v) else v for v in theirs], name


def test_typed_parquet_columns_are_accepted(schema):
    typed = pd.DataFrame([text_row(schema)], columns=schema.columns)
    typed["age"] = 30.0
    typed["has_paid"] = True
    typed["status_last_archived_0_24m"] = 1.0  # a numeric code, canonical "1"
    result = validate_batch(typed, schema)
    assert result.rejects.empty
    assert result.typed.loc[0, "has_paid"] == 1.0 and result.typed.loc[0, "status_last_archived_0_24m"] == "1"


def test_unseen_categories_are_scored_as_missing_unless_rejected(schema):
    batch = frame(schema, text_row(schema, uuid="new-merchant", merchant_group="Space Tourism"))
    assert validate_batch(batch, schema).rejects.empty
    vocabularies = {"merchant_group": ("Entertainment", "Food & Beverage")}
    result = validate_batch(batch, schema, reject_unseen=vocabularies)
    assert result.typed.empty
    assert result.rejects[REJECT_REASON_COLUMN].tolist() == [
        "merchant_group: expected a value seen in training ('Entertainment', 'Food & Beverage'), got 'Space Tourism'"
    ]


CODES = {"account_status": ("1", "2", "3", "4")}


@pytest.mark.parametrize("spelling", ["01", "1e0", "+1", "1."])
def test_a_misspelt_numeric_code_is_rejected_with_the_core_rule(schema, spelling):
    batch = frame(
        schema,
        text_row(schema, uuid="good", account_status="1.0"),
        text_row(schema, uuid="bad", account_status=spelling),
    )
    result = validate_batch(batch, schema, vocabularies=CODES)
    assert result.typed["uuid"].tolist() == ["good"] and result.typed.loc[0, "account_status"] == "1"
    assert result.rejects[REJECT_REASON_COLUMN].tolist() == [
        f"account_status: {CODE_SPELLING_MESSAGE}, got {spelling!r}"
    ]


def test_a_code_is_compared_as_an_exact_decimal_never_rounded_to_a_known_one(schema):
    batch = frame(schema, text_row(schema, uuid="near-one", account_status="1.00000000000000000001"))
    scored = validate_batch(batch, schema, vocabularies=CODES)
    assert (
        scored.typed.loc[0, "account_status"] == "1.00000000000000000001"
    )  # unseen: scored as missing, with a warning
    rejected = validate_batch(batch, schema, reject_unseen=CODES)
    (reason,) = rejected.rejects[REJECT_REASON_COLUMN]
    assert reason.startswith("account_status: expected a value seen in training (")


def test_every_row_of_a_repeated_id_is_rejected_with_the_count(schema):
    batch = frame(schema, text_row(schema, uuid="twice"), text_row(schema, uuid="once"), text_row(schema, uuid="twice"))
    result = validate_batch(batch, schema, duplicate_ids={"twice": 3})
    assert result.typed["uuid"].tolist() == ["once"]
    assert (
        result.rejects[REJECT_REASON_COLUMN].tolist()
        == ["uuid: 'twice' appears 3 times in the input; ids must be unique (no row of a repeated id is scored)"] * 2
    )


def test_a_replacement_character_from_a_non_utf8_book_is_rejected_naming_the_column(schema):
    batch = frame(schema, text_row(schema, uuid="latin-1", merchant_group="Caf\ufffd"), text_row(schema, uuid="good"))
    result = validate_batch(batch, schema)
    assert result.typed["uuid"].tolist() == ["good"]
    assert result.rejects[REJECT_REASON_COLUMN].tolist() == [
        "merchant_group: the input is not valid UTF-8 here (a byte was read as U+FFFD); not UTF-8: save as UTF-8, got 'Caf\ufffd'"
    ]


def test_a_malformed_record_over_several_lines_hints_at_an_open_quote(schema):
    batch = frame(schema, text_row(schema, uuid="broken"))
    batch[CORRUPT_RECORD_COLUMN] = ['broken;"Books\nrow2;1\nrow3;2']
    (reason,) = validate_batch(batch, schema).rejects[REJECT_REASON_COLUMN]
    assert reason.endswith("(the record spans 3 lines: is a quote left open on its first line?)")


# Spellings of one numeric column, each judged once per batch however often it repeats.
NUMBER_SPELLINGS = ["1", "1.0", "2.5", "0.1", "1e3", "12345678901234567890123", "3.0000000000000004", "-0", "0"]
BAD_NUMBERS = ["abc", "-1", "inf"]


def test_repeated_values_get_the_verdict_and_the_float_each_gets_alone(schema):
    """Text columns are judged per distinct value and spread back by row: every row must get what
    a batch of that row alone gets (and the float `pd.to_numeric` makes of its text)."""
    spellings = [*NUMBER_SPELLINGS, *BAD_NUMBERS, "", "NA", None]
    order = [spellings[i] for i in np.random.default_rng(7).permutation(len(spellings) * 4) % len(spellings)]
    rows = [text_row(schema, uuid=f"r{i}", num_active_inv=value) for i, value in enumerate(order)]
    together = validate_batch(frame(schema, *rows), schema)
    typed = together.typed.set_index("uuid")["num_active_inv"]
    reasons = dict(zip(together.rejects["uuid"], together.rejects[REJECT_REASON_COLUMN], strict=True))
    for row, value in zip(rows, order, strict=True):
        alone = validate_batch(frame(schema, row), schema)
        if value in BAD_NUMBERS or value in ("", "NA", None):
            assert reasons[row["uuid"]] == alone.rejects[REJECT_REASON_COLUMN].item()
            continue
        expected = pd.to_numeric(pd.Series([value], dtype="str")).astype("float64").item()
        assert typed[row["uuid"]] == alone.typed["num_active_inv"].item() == expected
        assert np.signbit(typed[row["uuid"]]) == (value == "-0")
    assert len(together.typed) + len(together.rejects) == len(rows)


def test_text_and_object_columns_get_the_same_answers(schema):
    """Factorised (`str`) and value-by-value (object) columns are two routes to one verdict."""
    rows = [
        text_row(schema, uuid="a", age="30", merchant_group="Entertainment", has_paid="True"),
        text_row(schema, uuid="b", age="30", merchant_group="", has_paid="false"),
        text_row(schema, uuid="c", age="abc", merchant_group="Entertainment", has_paid="yes"),
        text_row(schema, uuid="d", age="30", merchant_group="Entertainment", has_paid="True", account_status="01"),
    ]
    text = validate_batch(frame(schema, *rows), schema, vocabularies=CODES)
    objects = validate_batch(frame(schema, *rows).astype(object), schema, vocabularies=CODES)
    pd.testing.assert_frame_equal(text.typed, objects.typed)
    # Missing input text is null in both (None or NaN: Arrow writes either as a null string).
    pd.testing.assert_frame_equal(text.rejects.isna(), objects.rejects.isna())
    pd.testing.assert_frame_equal(text.rejects.fillna("-"), objects.rejects.fillna("-"))
    assert text.typed["uuid"].tolist() == ["a"] and len(text.rejects) == 3


def test_typed_float_columns_keep_negative_zero(schema):
    """Typed columns are not factorised: -0.0 and 0.0 hash alike and would be merged."""
    typed = pd.DataFrame([text_row(schema, uuid="zero"), text_row(schema, uuid="minus")], columns=schema.columns)
    typed["num_active_inv"] = [0.0, -0.0]
    result = validate_batch(typed, schema)
    assert np.signbit(result.typed["num_active_inv"].to_numpy()).tolist() == [False, True]
