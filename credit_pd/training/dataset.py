"""Strict loading of a dataset file against its schema.

A credit model trained on silently mis-parsed data is worse than no model, so every departure
from the schema stops the run with a message that names the column, the file line and the
offending value. Nothing here writes anything.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from credit_pd.errors import DatasetError
from credit_pd.features import canonical_categories
from credit_pd.schema import DatasetSchema, FeatureType

# Spellings accepted for boolean features; the Klarna export writes True/False.
TRUE_SPELLINGS = frozenset({"True", "true", "TRUE", "1"})
FALSE_SPELLINGS = frozenset({"False", "false", "FALSE", "0"})
TARGET_SPELLINGS = {"0": 0.0, "1": 1.0}
# How many offending rows one error message lists before summarising the rest.
MAX_EXAMPLES_IN_MESSAGE = 5
# File line of the first data row: line 1 is the header.
FIRST_DATA_LINE = 2


def load_dataset(path: Path | str, schema: DatasetSchema) -> pd.DataFrame:
    """Read and validate a dataset; returns typed columns in schema order.

    Numeric and boolean features become float64 (NaN = missing), categoricals become their
    canonical labels (`credit_pd.features.canonical_category`; None = missing), the target is
    float64 with NaN for unlabelled rows.
    """
    raw = _read_raw(Path(path), schema)
    _check_ids(raw, schema)
    typed = {schema.id_column: raw[schema.id_column], schema.target_column: _parse_target(raw, schema)}
    for spec in schema.features:
        column = raw[spec.name]
        if not spec.nullable:
            _raise_for_rows(column.isna(), raw, spec.name, f"a value is required (column is not nullable), not {schema.missing_marker!r}")
        if spec.type is FeatureType.NUMERIC:
            typed[spec.name] = _parse_numeric(column, spec.name, spec.minimum, spec.maximum)
        elif spec.type is FeatureType.BOOLEAN:
            typed[spec.name] = _parse_boolean(column, spec.name)
        else:
            typed[spec.name] = canonical_categories(column)
    return pd.DataFrame(typed, columns=schema.columns)


def check_trainable(frame: pd.DataFrame, schema: DatasetSchema) -> None:
    """Training needs labelled rows of both classes; say so before any fitting starts."""
    labels = frame[schema.target_column].dropna()
    if labels.empty:
        raise DatasetError(
            f"no labelled rows: every value of target column {schema.target_column!r} is "
            f"{schema.missing_marker!r}; training needs rows with 0 or 1"
        )
    classes = sorted(labels.unique())
    if len(classes) < 2:
        raise DatasetError(
            f"target column {schema.target_column!r} has a single class ({int(classes[0])}) among "
            f"its {len(labels)} labelled rows; training needs both 0 and 1"
        )


def labelled_mask(frame: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """Rows whose target is set; the others are the ones to score."""
    return frame[schema.target_column].notna().to_numpy()


def _read_raw(path: Path, schema: DatasetSchema) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset file {path} is empty; expected a header line and data rows")
    header = _read_header(path, schema.separator)
    _check_columns(header, schema, path)
    raw = pd.read_csv(
        path,
        sep=schema.separator,
        dtype=str,
        # An empty field is missing, never a category `""` (nor a number).
        na_values=[schema.missing_marker, ""],
        keep_default_na=False,
        quoting=csv.QUOTE_MINIMAL,
    )
    if raw.empty:
        raise DatasetError(f"dataset file {path} has a header but no data rows")
    return raw[schema.columns]


def _read_header(path: Path, separator: str) -> list[str]:
    with path.open(newline="") as handle:
        first_line = handle.readline().rstrip("\r\n")
    if not first_line:
        raise DatasetError(f"dataset file {path} has an empty first line; expected the header")
    return next(csv.reader([first_line], delimiter=separator))


def _check_columns(header: list[str], schema: DatasetSchema, path: Path) -> None:
    repeated = sorted({name for name in header if header.count(name) > 1})
    missing = [name for name in schema.columns if name not in header]
    unknown = [name for name in header if name not in schema.columns]
    problems = []
    if repeated:
        problems.append(f"repeated columns {repeated}")
    if missing:
        problems.append(f"missing columns {missing}")
    if unknown:
        problems.append(f"unknown columns {unknown} (not in schema {schema.name!r})")
    if problems:
        hint = "" if len(header) > 1 else f" (is the separator {schema.separator!r}?)"
        raise DatasetError(f"dataset file {path}: {'; '.join(problems)}{hint}")


def _check_ids(raw: pd.DataFrame, schema: DatasetSchema) -> None:
    ids = raw[schema.id_column]
    _raise_for_rows(ids.isna(), raw, schema.id_column, "an id is required on every row")
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        lines = [_line(i) for i in np.flatnonzero((ids == first).to_numpy())]
        count = int(ids[duplicated].nunique())
        raise DatasetError(
            f"column {schema.id_column!r}: {count} duplicate id(s), e.g. {first!r} on lines {lines}; "
            "ids must be unique"
        )


def _parse_target(raw: pd.DataFrame, schema: DatasetSchema) -> pd.Series:
    column = raw[schema.target_column]
    parsed = column.map(TARGET_SPELLINGS)
    bad = column.notna() & parsed.isna()
    expected = f"0, 1 or {schema.missing_marker!r} (unlabelled)"
    _raise_for_rows(bad, raw, schema.target_column, f"expected {expected}")
    return parsed.astype("float64")


def _parse_numeric(column: pd.Series, name: str, minimum: float | None, maximum: float | None) -> pd.Series:
    parsed = pd.to_numeric(column, errors="coerce").astype("float64")
    not_a_number = column.notna() & (parsed.isna() | ~np.isfinite(parsed.fillna(0.0)))
    _raise_for_rows(not_a_number, column.to_frame(), name, "expected a finite number")
    if minimum is not None:
        _raise_for_rows(parsed < minimum, column.to_frame(), name, f"expected a value >= {minimum:g}")
    if maximum is not None:
        _raise_for_rows(parsed > maximum, column.to_frame(), name, f"expected a value <= {maximum:g}")
    return parsed


def _parse_boolean(column: pd.Series, name: str) -> pd.Series:
    parsed = pd.Series(np.nan, index=column.index, dtype="float64")
    parsed[column.isin(TRUE_SPELLINGS)] = 1.0
    parsed[column.isin(FALSE_SPELLINGS)] = 0.0
    bad = column.notna() & parsed.isna()
    _raise_for_rows(bad, column.to_frame(), name, "expected True or False")
    return parsed


def _raise_for_rows(bad: pd.Series, raw: pd.DataFrame, column: str, expectation: str) -> None:
    """One message per broken column: which lines, which values, what was expected."""
    if not bad.any():
        return
    positions = np.flatnonzero(bad.to_numpy())
    values = raw[column].to_numpy()
    examples = ", ".join(f"line {_line(i)}: {values[i]!r}" for i in positions[:MAX_EXAMPLES_IN_MESSAGE])
    more = len(positions) - MAX_EXAMPLES_IN_MESSAGE
    suffix = f" and {more} more row(s)" if more > 0 else ""
    raise DatasetError(f"column {column!r}: {expectation}; got {examples}{suffix}")


def _line(position: int) -> int:
    return int(position) + FIRST_DATA_LINE
