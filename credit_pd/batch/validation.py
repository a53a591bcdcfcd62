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
    ids = _clean(batch[schema.id_column], schema.missing_marker)
    problems.add(ids.isna(), batch[schema.id_column], schema.id_column, "an id is required on every row")
    typed: dict[str, Any] = {schema.id_column: _as_text(ids)}
    if duplicate_ids:
        _reject_duplicates(typed[schema.id_column], duplicate_ids, schema.id_column, problems)
    _reject_replacement_characters(batch, problems)
    labels = vocabularies if vocabularies is not None else (reject_unseen or {})
    rules = {name: labels_rule(name, vocab) for name, vocab in labels.items()}
    for spec in schema.features:
        typed[spec.name] = _parse_feature(batch[spec.name], spec, schema.missing_marker, problems, rules.get(spec.name))
    for name, seen in (reject_unseen or {}).items():
        unseen = typed[name].notna() & ~typed[name].isin(seen)
        problems.add(unseen, batch[name], name, f"expected a value seen in training ({_allowed(seen)})")
    if CORRUPT_RECORD_COLUMN in batch:
        malformed = batch[CORRUPT_RECORD_COLUMN].notna().to_numpy()
        lines = batch[CORRUPT_RECORD_COLUMN].to_numpy(dtype=object)
        expected = len(schema.columns)
        problems.replace(
            malformed,
            lambda i: (
                f"malformed line: expected the header's fields separated by {schema.separator!r} "
                f"({expected} for {schema.name}), got {str(lines[i])[:MAX_QUOTED_LINE]!r}"
                f"{_spans_lines(str(lines[i]))}"
            ),
        )
    frame = pd.DataFrame(typed)
    good = ~problems.bad
    return ValidatedBatch(typed=frame[good].reset_index(drop=True), rejects=_rejects(batch, problems))


def _parse_feature(
    raw: pd.Series, spec: FeatureSpec, missing_marker: str, problems: _Problems, rule: CategoryRule | None = None
) -> pd.Series:
    column = _clean(raw, missing_marker)
    missing = column.isna()
    if not spec.nullable:
        problems.add(missing, raw, spec.name, "a value is required (column is not nullable)")
    if spec.type is FeatureType.NUMERIC:
        return _parse_numeric(raw, column, missing, spec, problems)
    if spec.type is FeatureType.BOOLEAN:
        return _parse_boolean(raw, column, missing, spec, problems)
    return _parse_categorical(raw, column, spec, problems, rule or file_category_rule(spec.name, column))


def _reject_duplicates(ids: pd.Series, duplicate_ids: Mapping[str, int], id_column: str, problems: _Problems) -> None:
    """Every row of a repeated id: which of its rows is the right one cannot be told, so none is scored."""
    repeated = ids.isin(list(duplicate_ids)).to_numpy()
    values = ids.to_numpy(dtype=object)
    problems.append(
        repeated,
        lambda i: (
            f"{id_column}: {values[i]!r} appears {duplicate_ids[values[i]]} times in the input; "
            "ids must be unique (no row of a repeated id is scored)"
        ),
    )


def _reject_replacement_characters(batch: pd.DataFrame, problems: _Problems) -> None:
    """U+FFFD in a text field: the input was not UTF-8 and Spark's reader replaced the byte."""
    for name in batch.columns:
        column = batch[name]
        if name == CORRUPT_RECORD_COLUMN or not (column.dtype == object or isinstance(column.dtype, pd.StringDtype)):
            continue
        try:  # vectorised (Arrow-backed `str` columns: one pyarrow kernel); mixed objects fall back per value
            found = column.str.contains("\ufffd", regex=False, na=False).to_numpy(dtype=bool)
        except (AttributeError, TypeError):
            found = column.map(lambda v: isinstance(v, str) and "\ufffd" in v).to_numpy(dtype=bool)
        problems.add(
            found, column, name, f"the input is not valid UTF-8 here (a byte was read as U+FFFD); {SAVE_AS_UTF8}"
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


def _clean(raw: pd.Series, missing_marker: str) -> pd.Series:
    """NaN/None, the empty string and the dataset's missing marker (`NA`) all mean missing."""
    return raw.mask(raw.isna() | raw.isin(["", missing_marker]))


def _parse_numeric(
    raw: pd.Series, column: pd.Series, missing: pd.Series, spec: FeatureSpec, problems: _Problems
) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw.dtype):
        problems.add(~missing, raw, spec.name, "expected a finite number, not a boolean")
        return pd.Series(np.nan, index=column.index)
    parsed = pd.to_numeric(column, errors="coerce").astype("float64")
    not_finite = ~missing & (parsed.isna() | ~np.isfinite(parsed.fillna(0.0)))
    problems.add(not_finite, raw, spec.name, "expected a finite number")
    parsed = parsed.mask(not_finite)
    if spec.minimum is not None:
        problems.add(parsed < spec.minimum, raw, spec.name, f"expected a value >= {spec.minimum:g}")
    if spec.maximum is not None:
        problems.add(parsed > spec.maximum, raw, spec.name, f"expected a value <= {spec.maximum:g}")
    return parsed


def _parse_boolean(
    raw: pd.Series, column: pd.Series, missing: pd.Series, spec: FeatureSpec, problems: _Problems
) -> pd.Series:
    values = column.astype(object)
    parsed = pd.Series(np.nan, index=column.index, dtype="float64")
    if pd.api.types.is_bool_dtype(raw.dtype) or pd.api.types.is_numeric_dtype(raw.dtype):
        parsed[values.isin([True, 1])] = 1.0
        parsed[values.isin([False, 0])] = 0.0
    else:
        parsed[values.isin(TRUE_SPELLINGS)] = 1.0
        parsed[values.isin(FALSE_SPELLINGS)] = 0.0
    problems.add(~missing & parsed.isna(), raw, spec.name, "expected True or False")
    return parsed


def _parse_categorical(
    raw: pd.Series, column: pd.Series, spec: FeatureSpec, problems: _Problems, rule: CategoryRule
) -> pd.Series:
    """Canonical labels by the core rule, computed once per distinct value; a misspelt code or a value
    with no label spelling is rejected (unseen values are judged after, on the canonical labels)."""
    present = column.dropna()
    mapping: dict[Any, str | None] = {}
    invalid, misspelt = [], []
    for value in present.unique():
        try:
            mapping[value] = rule.check(value, "score_as_missing")
        except CategoryValueError:
            misspelt.append(value)
        except (TypeError, ValueError):
            invalid.append(value)
    if misspelt:
        problems.add(column.isin(misspelt), raw, spec.name, CODE_SPELLING_MESSAGE)
    problems.add(
        column.isin(invalid) if invalid else np.zeros(len(column), bool), raw, spec.name, "expected a category label"
    )
    labels = (
        column.map(mapping)
        if not (invalid or misspelt)
        else column.map(mapping).where(~column.isin(invalid + misspelt))
    )
    return labels.astype(object).where(labels.notna(), None)


def _as_text(column: pd.Series) -> pd.Series:
    """Values as the text a reviewer would type back into the file (None for missing)."""
    values = column.astype(object)
    return values.map(lambda v: v if isinstance(v, str) else str(v)).where(column.notna(), None)


def _rejects(batch: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    """The rejected rows as they came in (every input column as text) plus the reason."""
    bad = problems.bad
    columns = [c for c in batch.columns if c != CORRUPT_RECORD_COLUMN]
    text = {c: _as_text(batch.loc[bad, c]).to_numpy(dtype=object) for c in columns}
    # Explicit object dtype: an empty list would otherwise become a float64 column.
    text[REJECT_REASON_COLUMN] = np.array(problems.joined(), dtype=object)
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in text.items()})
