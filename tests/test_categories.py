"""credit_pd.categories: the one spelling rule for categories."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from credit_pd.categories import (
    CODE_SPELLING,
    CODE_SPELLING_MESSAGE,
    CategoryRule,
    CategoryValueError,
    canonical_category,
    file_category_rule,
)


def test_known_code_pattern_matches_exactly_the_spellings_of_known_codes():
    rule = CategoryRule(name="s", labels=("0", "1", "2.5", "-3"), numeric_coded=True)
    candidates = {
        f"{sign}{int_part}{frac}"
        for sign in ("", "-", "+")
        for int_part in ("0", "1", "2", "3", "10", "01", "")
        for frac in ("", ".", ".0", ".00", ".5", ".50", ".05", "e0")
    }
    for text in sorted(candidates):
        if not re.fullmatch(CODE_SPELLING, text):
            continue
        assert rule.is_known(text) == (canonical_category(text) in rule.label_set), text
    assert rule.is_known(2.5) and rule.is_known(-3) and rule.is_known(1.0) and not rule.is_known(4)


def test_codes_are_canonical_exact_decimals_never_rounded_through_a_float():
    assert [canonical_category(v) for v in ("1", "1.0", "1.000", "2.50", "-3.10", "0.0")] == [
        "1",
        "1",
        "1",
        "2.5",
        "-3.1",
        "0",
    ]
    assert canonical_category("1.00000000000000000001") == "1.00000000000000000001"
    assert canonical_category("123456789012345678901") == "123456789012345678901"
    # Anything not spelled as a plain decimal is a text label, kept as written.
    assert [canonical_category(v) for v in ("01", "1e0", "+1", ".5", "1.", "A")] == ["01", "1e0", "+1", ".5", "1.", "A"]


def test_a_number_and_its_decimal_string_have_one_spelling():
    for number in (1.0, 2.5, -3.0, 0.1, 1e-07, 1e20, 12345.678, -0.0, 7):
        text = canonical_category(number)
        assert re.fullmatch(CODE_SPELLING, text), (number, text)
        assert canonical_category(text) == text and float(text) == float(number)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("01", "category_code_spelling"),
        ("1e0", "category_code_spelling"),
        ("+1", "category_code_spelling"),
        ("7", "unseen_category"),
        ("1.00000000000000000001", "unseen_category"),
    ],
)
def test_check_refuses_misspelt_codes_always_and_unseen_values_under_reject(value, kind):
    rule = CategoryRule(name="s", labels=("0", "1", "2.5"), numeric_coded=True)
    with pytest.raises(CategoryValueError) as caught:
        rule.check(value, "reject")
    assert caught.value.kind == kind
    if kind == "unseen_category":
        assert rule.check(value, "score_as_missing") == canonical_category(value)
    else:
        with pytest.raises(CategoryValueError):
            rule.check(value, "score_as_missing")
    assert rule.check("1.0", "reject") == "1" and rule.check(2.5, "reject") == "2.5"


def test_a_text_field_takes_number_like_labels_as_written():
    rule = CategoryRule(name="group", labels=("A", "B"), numeric_coded=False)
    assert rule.check("01", "score_as_missing") == "01"
    with pytest.raises(CategoryValueError, match="expected a value seen in training"):
        rule.check("01", "reject")


def test_a_file_column_is_numeric_coded_when_every_value_looks_like_a_number():
    assert file_category_rule("s", pd.Series(["1", "2.0", "01", None])).numeric_coded
    assert not file_category_rule("g", pd.Series(["A", "01"])).numeric_coded
    assert not file_category_rule("e", pd.Series([None, None], dtype=object)).numeric_coded


# ---- one list of spellings through training, the batch job and the service (issue 19, finding 10) ----

CODED = "status_last_archived_0_24m"  # trained as 0/1/2/3: a numeric code
# Each spelling of status 1 and what every wing must make of it: its canonical label, or None (refused).
SPELLINGS = {
    "1": "1",
    "1.0": "1",
    "1.000": "1",
    "01": None,
    "1e0": None,
    "+1": None,
    "1.": None,
    ".5": None,
    "-0": None,
    "1.00000000000000000001": "1.00000000000000000001",  # a different decimal: never rounded to status 1
}


def training_outcome(lines: list[str], tmp_path, schema, spelling: str) -> str | None:
    from credit_pd.dataset import load_dataset
    from credit_pd.errors import DatasetError

    header = lines[0].split(";")
    cells = lines[5].split(";")
    cells[header.index(CODED)] = spelling
    path = tmp_path / "train.csv"
    path.write_text("\n".join([*lines[:5], ";".join(cells), *lines[6:]]) + "\n")
    try:
        return load_dataset(path, schema).loc[4, CODED]
    except DatasetError as exc:
        assert str(exc) == f"column {CODED!r}: {CODE_SPELLING_MESSAGE}; got line 6: {spelling!r}"
        return None


def batch_outcome(stored, spelling: str) -> str | None:
    from credit_pd.batch.validation import REJECT_REASON_COLUMN, validate_batch

    schema = stored.schema
    row = {schema.id_column: "x", schema.target_column: None} | {
        k: None if v is None else str(v) for k, v in schema.example.items()
    }
    batch = pd.DataFrame([row | {CODED: spelling}], columns=schema.columns, dtype="str")
    result = validate_batch(batch, schema, vocabularies=stored.encoder.categorical)
    if result.rejects.empty:
        return result.typed.loc[0, CODED]
    assert result.rejects[REJECT_REASON_COLUMN].tolist() == [f"{CODED}: {CODE_SPELLING_MESSAGE}, got {spelling!r}"]
    return None


def service_outcome(stored, spelling: str) -> str | None:
    from pydantic import ValidationError

    from credit_pd.serving.contract import build_application_model
    from credit_pd.serving.settings import ServingSettings

    model = build_application_model(
        stored.schema, stored.encoder, ServingSettings(unseen_categories="score_as_missing")
    )
    try:
        return getattr(model.model_validate(dict(stored.schema.example) | {CODED: spelling}), CODED)
    except ValidationError as exc:
        (error,) = exc.errors()
        assert error["type"] == "category_code_spelling" and error["loc"] == (CODED,)  # answered 400 naming the field
        return None


def test_one_list_of_spellings_gets_the_same_answer_from_training_batch_and_service(
    trained_run, small_sample_path, schema, tmp_path
):
    from credit_pd.model_store import load_from_store

    stored = load_from_store(trained_run.model_tag)
    assert stored.encoder.numeric_coded(CODED) and "1" in stored.encoder.categorical[CODED]
    lines = small_sample_path.read_text().splitlines()[:100]
    outcomes = {
        spelling: (
            training_outcome(lines, tmp_path, schema, spelling),
            batch_outcome(stored, spelling),
            service_outcome(stored, spelling),
        )
        for spelling in SPELLINGS
    }
    assert outcomes == {spelling: (label, label, label) for spelling, label in SPELLINGS.items()}
