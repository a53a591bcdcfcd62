"""Row-level validation of an input batch against the stored model's schema.

The same rules as the training loader (`credit_pd.dataset.load_dataset`): numbers must be
finite and inside the schema's bounds, booleans one of the loader's spellings, required columns
present, categories in their canonical spelling, `NA` and the empty string mean missing. The
difference is what happens to a bad row: the loader stops a training run, while a batch of a
hundred million rows must not die for one of them, so each bad row is set aside with a reason
naming every failing column and what was expected, and the rest are scored.

Categories follow the core's one rule (`credit_pd.categories.CategoryRule.check`, with the stored
vocabularies): a numeric code spelled "01" or "1e0" is rejected, as the service answers 400 and
the loader stops. A text field holding U+FFFD (what Spark's reader makes of a byte that is not
UTF-8) is rejected naming the column: a local book is refused before Spark starts
(`credit_pd.dataset.check_text_file`), a remote one is checked here, row by row. Rows whose id
appears more than once in the whole input (`duplicate_ids`, found by the job) are all rejected.

Typed output matches `load_dataset`'s (numeric and boolean float64 with NaN, categoricals as
canonical labels with None), so `FeatureEncoder.encode_frame` builds the very matrix `train.py` does.

Every check runs once per distinct value of a column, not once per row (`_Column`): a text column
is factorised (one hash pass in Arrow), the loader's own functions (`pd.to_numeric`, the spelling
sets, `CategoryRule.check`) judge its distinct values, and the answers are spread back to the rows
by their codes. A 10,000-row batch of a credit book holds a few dozen distinct values in most
columns, so this is the same verdict and the same float for every row at a fraction of the cost
(per-row pandas work was about half of a Spark task's Python time). Typed (Parquet) columns are
judged value by value as before: factorising floats would merge -0.0 with 0.0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from credit_pd.batch.settings import CORRUPT_RECORD_COLUMN, MAX_QUOTED_LINE
from credit_pd.categories import (
    CODE_SPELLING_MESSAGE,
    FALSE_SPELLINGS,
    TRUE_SPELLINGS,
    CategoryRule,
    CategoryValueError,
    file_category_rule,
    labels_rule,
)
from credit_pd.dataset import SAVE_AS_UTF8
from credit_pd.schema import DatasetSchema, FeatureSpec, FeatureType

REJECT_REASON_COLUMN = "reject_reason"
# Training labels quoted in an unseen-category reason before "and N more".
MAX_LISTED_LABELS = 10


@dataclass(frozen=True)
class ValidatedBatch:
    """A batch split in two: typed rows to score and rejected rows with their reasons."""

    typed: pd.DataFrame
    rejects: pd.DataFrame


class _Problems:
    """Per-row reasons, collected column by column (a row can fail several columns)."""

    def __init__(self, n_rows: int) -> None:
        # Only failing rows get an entry: nearly every row of a real book is valid.
        self.reasons: dict[int, list[str]] = {}
        self.bad = np.zeros(n_rows, dtype=bool)

    def add(self, mask: np.ndarray | pd.Series, raw: pd.Series, column: str, expectation: str) -> None:
        positions = np.flatnonzero(np.asarray(mask, dtype=bool))
        if positions.size == 0:
            return
        values = raw.to_numpy(dtype=object)
        for i in positions:
            got = "nothing (missing)" if _is_missing(values[i]) else repr(values[i])
            self.reasons.setdefault(int(i), []).append(f"{column}: {expectation}, got {got}")
        self.bad[positions] = True

    def append(self, mask: np.ndarray, reason_of: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            self.reasons.setdefault(int(i), []).append(reason_of(int(i)))
        self.bad |= mask

    def replace(self, mask: np.ndarray, reason_of: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            self.reasons[int(i)] = [reason_of(int(i))]
        self.bad |= mask

    def joined(self) -> list[str]:
        return ["; ".join(self.reasons[int(i)]) for i in np.flatnonzero(self.bad)]


def validate_batch(
    batch: pd.DataFrame,
    schema: DatasetSchema,
    reject_unseen: Mapping[str, Sequence[str]] | None = None,
    *,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    duplicate_ids: Mapping[str, int] | None = None,
) -> ValidatedBatch:
    """Split a raw batch (strings from CSV, or typed Parquet columns) into typed rows and rejects.

    `reject_unseen` (categorical feature -> training labels) rejects rows holding a category the
    model never saw, the service's `reject` policy; without it they are scored as missing.
    `vocabularies` (the same mapping, always given by the job) decides which fields are numeric
    codes, as the service decides; without either, each column is judged as the loader judges a
    file's. `duplicate_ids` (id -> times it appears in the whole input) rejects those rows.
    """
    batch = batch.reset_index(drop=True)
    problems = _Problems(len(batch))
    columns = {
        name: _Column.of(batch[name], schema.missing_marker) for name in batch.columns if name != CORRUPT_RECORD_COLUMN
    }
    typed: dict[str, Any] = {schema.id_column: _parse_ids(columns[schema.id_column], schema, duplicate_ids, problems)}
    _reject_replacement_characters(columns, problems)
    labels = vocabularies if vocabularies is not None else (reject_unseen or {})
    rules = {name: labels_rule(name, vocab) for name, vocab in labels.items()}
    for spec in schema.features:
        typed[spec.name] = _parse_feature(columns[spec.name], spec, problems, rules.get(spec.name))
    for name, seen in (reject_unseen or {}).items():
        allowed = frozenset(seen)
        unseen = np.array([label is not None and label not in allowed for label in typed[name]], dtype=bool)
        problems.add(unseen, batch[name], name, f"expected a value seen in training ({_allowed(seen)})")
    if CORRUPT_RECORD_COLUMN in batch:
        _reject_malformed(batch[CORRUPT_RECORD_COLUMN], schema, problems)
    return ValidatedBatch(typed=_typed_frame(typed, ~problems.bad), rejects=_rejects(batch, problems))


@dataclass(frozen=True)
class _Column:
    """A raw column as its distinct values and, per row, which one it holds.

    `values` are the distinct non-null values (a Series in the raw column's dtype), `codes` the
    row -> value index (-1 where the row holds null), `missing` per value: the empty string or the
    missing marker. Text columns are factorised; any other column keeps one value per row (`codes`
    = row number), so typed values are never merged (-0.0 and 0.0 hash alike).
    """

    raw: pd.Series
    values: pd.Series
    codes: np.ndarray
    missing: np.ndarray

    @classmethod
    def of(cls, raw: pd.Series, missing_marker: str) -> _Column:
        if isinstance(raw.dtype, pd.StringDtype):
            codes, uniques = pd.factorize(raw, use_na_sentinel=True)
            values = pd.Series(uniques, dtype=raw.dtype)
        else:
            values = raw
            codes = np.where(raw.isna().to_numpy(), -1, np.arange(len(raw)))
        return cls(raw, values, codes, values.isin(["", missing_marker]).to_numpy(dtype=bool))

    def rows(self, per_value: np.ndarray | pd.Series, null: Any) -> np.ndarray:
        """A per-value answer spread to the rows; `null` for rows holding null (code -1: the last slot)."""
        answers = np.asarray(per_value)
        return np.append(answers, np.asarray([null], dtype=answers.dtype))[self.codes]

    def mask(self, per_value: np.ndarray | pd.Series) -> np.ndarray:
        """A per-value condition as a row mask (rows holding null never meet it)."""
        return self.rows(np.asarray(per_value, dtype=bool), False)

    @property
    def missing_rows(self) -> np.ndarray:
        """Rows with no value: null, the empty string or the missing marker."""
        return self.rows(self.missing, True)

    @property
    def present(self) -> pd.Series:
        """The distinct values that are not missing, as the loader's `column.dropna().unique()` sees them."""
        return self.values[~self.missing & self.values.notna().to_numpy()]


def _parse_ids(
    column: _Column, schema: DatasetSchema, duplicate_ids: Mapping[str, int] | None, problems: _Problems
) -> np.ndarray:
    """Ids as text (None where missing); a missing or repeated id rejects its row."""
    problems.add(column.missing_rows, column.raw, schema.id_column, "an id is required on every row")
    text = column.rows(_as_text(column.values.mask(column.missing)).to_numpy(dtype=object), None)
    if duplicate_ids:
        _reject_duplicates(text, duplicate_ids, schema.id_column, problems)
    return text


def _parse_feature(column: _Column, spec: FeatureSpec, problems: _Problems, rule: CategoryRule | None = None) -> Any:
    if not spec.nullable:
        problems.add(column.missing_rows, column.raw, spec.name, "a value is required (column is not nullable)")
    if spec.type is FeatureType.NUMERIC:
        return _parse_numeric(column, spec, problems)
    if spec.type is FeatureType.BOOLEAN:
        return _parse_boolean(column, spec, problems)
    return _parse_categorical(column, spec, problems, rule or file_category_rule(spec.name, column.present))


def _reject_duplicates(ids: np.ndarray, duplicate_ids: Mapping[str, int], id_column: str, problems: _Problems) -> None:
    """Every row of a repeated id: which of its rows is the right one cannot be told, so none is scored."""
    repeated = np.array([value in duplicate_ids for value in ids], dtype=bool)
    problems.append(
        repeated,
        lambda i: (
            f"{id_column}: {ids[i]!r} appears {duplicate_ids[ids[i]]} times in the input; "
            "ids must be unique (no row of a repeated id is scored)"
        ),
    )


def _reject_replacement_characters(columns: Mapping[str, _Column], problems: _Problems) -> None:
    """U+FFFD in a text field: the input was not UTF-8 and Spark's reader replaced the byte."""
    for name, column in columns.items():
        values = column.values
        if not (values.dtype == object or isinstance(values.dtype, pd.StringDtype)):
            continue
        try:  # vectorised (Arrow-backed `str` columns: one pyarrow kernel); mixed objects fall back per value
            found = values.str.contains("\ufffd", regex=False, na=False).to_numpy(dtype=bool)
        except (AttributeError, TypeError):
            found = values.map(lambda v: isinstance(v, str) and "\ufffd" in v).to_numpy(dtype=bool)
        problems.add(
            column.mask(found),
            column.raw,
            name,
            f"the input is not valid UTF-8 here (a byte was read as U+FFFD); {SAVE_AS_UTF8}",
        )


def _reject_malformed(records: pd.Series, schema: DatasetSchema, problems: _Problems) -> None:
    """A line Spark could not split into the header's fields: its reason replaces any other."""
    malformed = records.notna().to_numpy()
    lines = records.to_numpy(dtype=object)
    expected = len(schema.columns)
    problems.replace(
        malformed,
        lambda i: (
            f"malformed line: expected the header's fields separated by {schema.separator!r} "
            f"({expected} for {schema.name}), got {str(lines[i])[:MAX_QUOTED_LINE]!r}"
            f"{_spans_lines(str(lines[i]))}"
        ),
    )


def _spans_lines(record: str) -> str:
    """A malformed record over several lines is most often a quote left open on its first line."""
    lines = record.rstrip("\r\n").count("\n") + 1
    return f" (the record spans {lines} lines: is a quote left open on its first line?)" if lines > 1 else ""


def _allowed(labels: Sequence[str]) -> str:
    shown = ", ".join(repr(label) for label in labels[:MAX_LISTED_LABELS])
    return shown + (f" and {len(labels) - MAX_LISTED_LABELS} more" if len(labels) > MAX_LISTED_LABELS else "")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def _parse_numeric(column: _Column, spec: FeatureSpec, problems: _Problems) -> np.ndarray:
    """float64 per row (NaN where missing): `pd.to_numeric` on the distinct values, as the loader parses."""
    if pd.api.types.is_bool_dtype(column.raw.dtype):
        problems.add(~column.missing_rows, column.raw, spec.name, "expected a finite number, not a boolean")
        return np.full(len(column.raw), np.nan)
    parsed = pd.to_numeric(column.values.mask(column.missing), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan, copy=True
    )
    with np.errstate(invalid="ignore"):
        not_finite = ~column.missing & ~np.isfinite(parsed)
        problems.add(column.mask(not_finite), column.raw, spec.name, "expected a finite number")
        parsed[not_finite] = np.nan
        if spec.minimum is not None:
            problems.add(
                column.mask(parsed < spec.minimum), column.raw, spec.name, f"expected a value >= {spec.minimum:g}"
            )
        if spec.maximum is not None:
            problems.add(
                column.mask(parsed > spec.maximum), column.raw, spec.name, f"expected a value <= {spec.maximum:g}"
            )
    return column.rows(parsed, np.nan)


def _parse_boolean(column: _Column, spec: FeatureSpec, problems: _Problems) -> np.ndarray:
    """1.0 / 0.0 per row (NaN where missing) by the loader's spellings (or True/1, False/0 when typed)."""
    values = column.values.mask(column.missing).astype(object)
    parsed = np.full(len(values), np.nan)
    typed = pd.api.types.is_bool_dtype(column.raw.dtype) or pd.api.types.is_numeric_dtype(column.raw.dtype)
    true, false = ([True, 1], [False, 0]) if typed else (TRUE_SPELLINGS, FALSE_SPELLINGS)
    parsed[values.isin(true).to_numpy()] = 1.0
    parsed[values.isin(false).to_numpy()] = 0.0
    problems.add(column.mask(~column.missing & np.isnan(parsed)), column.raw, spec.name, "expected True or False")
    return column.rows(parsed, np.nan)


def _parse_categorical(column: _Column, spec: FeatureSpec, problems: _Problems, rule: CategoryRule) -> np.ndarray:
    """Canonical labels per row (None where missing) by the core rule; a misspelt code or a value with
    no label spelling is rejected (unseen values are judged after, on the canonical labels)."""
    labels = np.full(len(column.values), None, dtype=object)
    misspelt = np.zeros(len(column.values), dtype=bool)
    invalid = np.zeros(len(column.values), dtype=bool)
    values = column.values.to_numpy()  # elements as `Series.unique()` hands them to the loader's rule
    for position in np.flatnonzero(~column.missing & column.values.notna().to_numpy()):
        try:
            labels[position] = rule.check(values[position], "score_as_missing")
        except CategoryValueError:
            misspelt[position] = True
        except (TypeError, ValueError):
            invalid[position] = True
    if misspelt.any():
        problems.add(column.mask(misspelt), column.raw, spec.name, CODE_SPELLING_MESSAGE)
    problems.add(column.mask(invalid), column.raw, spec.name, "expected a category label")
    return column.rows(labels, None)


def _as_text(column: pd.Series) -> pd.Series:
    """Values as the text a reviewer would type back into the file (None for missing)."""
    values = column.astype(object)
    if isinstance(column.dtype, pd.StringDtype):  # text already: no per-value conversion
        return values.where(column.notna(), None)
    return values.map(lambda v: v if isinstance(v, str) else str(v)).where(column.notna(), None)


def _typed_frame(typed: Mapping[str, Any], good: np.ndarray) -> pd.DataFrame:
    """The rows to score, typed as `load_dataset` types them: float64 numbers, object text with None."""
    frame = pd.DataFrame(
        {
            name: pd.Series(values, dtype=np.float64 if values.dtype == np.float64 else object)
            for name, values in typed.items()
        }
    )
    return frame if good.all() else frame[good].reset_index(drop=True)


def _rejects(batch: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    """The rejected rows as they came in (every input column as text) plus the reason."""
    bad = problems.bad
    columns = [c for c in batch.columns if c != CORRUPT_RECORD_COLUMN]
    if not bad.any():  # the common batch: skip selecting nothing from every column
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in [*columns, REJECT_REASON_COLUMN]})
    text = {c: _as_text(batch.loc[bad, c]).to_numpy(dtype=object) for c in columns}
    # Explicit object dtype: an empty list would otherwise become a float64 column.
    text[REJECT_REASON_COLUMN] = np.array(problems.joined(), dtype=object)
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in text.items()})
