"""Strict loading of a dataset file against its schema (core: training and the drift report use it).

A credit model trained on silently mis-parsed data is worse than no model, so every departure
from the schema stops the run with a message that names the column, the file line and the
offending value. Nothing here writes anything.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from credit_pd.errors import DatasetError
from credit_pd.categories import FALSE_SPELLINGS, TRUE_SPELLINGS, canonical_categories
from credit_pd.schema import DatasetSchema, FeatureType

TARGET_SPELLINGS = {"0": 0.0, "1": 1.0}
# How many offending rows one error message lists before summarising the rest.
MAX_EXAMPLES_IN_MESSAGE = 5


@dataclass(frozen=True)
class RawTable:
    """Every field as read: `text` as written, `values` with missing fields as NaN, file lines."""

    text: pd.DataFrame
    values: pd.DataFrame
    lines: np.ndarray


def load_dataset(path: Path | str, schema: DatasetSchema) -> pd.DataFrame:
    """Read and validate a dataset; returns typed columns in schema order.

    Numeric and boolean features become float64 (NaN = missing), categoricals become their
    canonical labels (`credit_pd.features.canonical_category`; None = missing), the target is
    float64 with NaN for unlabelled rows. A field is missing when it holds the schema's missing
    marker or nothing at all: an empty field is never a category `""` nor a number.
    """
    raw = _read_raw(Path(path), schema)
    _check_ids(raw, schema)
    typed = {schema.id_column: raw.values[schema.id_column], schema.target_column: _parse_target(raw, schema)}
    for spec in schema.features:
        column = raw.values[spec.name]
        if not spec.nullable:
            _raise_for_rows(column.isna(), raw, spec.name, "a value is required (column is not nullable)")
        if spec.type is FeatureType.NUMERIC:
            typed[spec.name] = _parse_numeric(raw, spec.name, spec.minimum, spec.maximum)
        elif spec.type is FeatureType.BOOLEAN:
            typed[spec.name] = _parse_boolean(raw, spec.name)
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


def _read_raw(path: Path, schema: DatasetSchema) -> RawTable:
    """Every field as text, in schema column order, with each row's real file line.

    Each row's field count is checked against the header first (`_row_lines`), because
    `pandas.read_csv` pads a short row with missing values and fails on a long one with a parser
    traceback: both are one-line errors naming the line here.
    """
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset file {path} is empty; expected a header line and data rows")
    header = _read_header(path, schema.separator)
    _check_columns(header, schema, path)
    lines = _row_lines(path, schema.separator, len(header))
    if len(lines) == 0:
        raise DatasetError(f"dataset file {path} has a header but no data rows")
    try:
        text = pd.read_csv(path, sep=schema.separator, dtype=str, na_filter=False, keep_default_na=False,
                           quoting=csv.QUOTE_MINIMAL, skip_blank_lines=True, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"dataset file {path} cannot be parsed: {str(exc).splitlines()[0]}") from None
    if len(text) != len(lines):  # cannot happen when both readers agree on the format; never guess
        raise DatasetError(f"dataset file {path}: {len(text)} rows parsed but {len(lines)} data lines found")
    text = text[schema.columns]
    values = text.mask(text.isin([schema.missing_marker, ""]))
    return RawTable(text=text, values=values, lines=lines)


def _read_header(path: Path, separator: str) -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        first_line = handle.readline().rstrip("\r\n")
    if not first_line:
        raise DatasetError(f"dataset file {path} has an empty first line; expected the header")
    return next(csv.reader([first_line], delimiter=separator))


def _row_lines(path: Path, separator: str, n_fields: int) -> np.ndarray:
    """File line of every data row; any row with another field count than the header is an error.

    Without a quote character in the file a field count is a separator count per line (fast);
    otherwise the `csv` module reads the rows, so quoted separators and line breaks count right.
    Blank lines are skipped, as the CSV reader skips them.
    """
    data = path.read_bytes()
    if b'"' not in data:
        sep = separator.encode()
        physical = [line.rstrip(b"\r") for line in data.split(b"\n")]
        rows = ((number, line.count(sep) + 1) for number, line in enumerate(physical[1:], start=2) if line)
    else:
        rows = _csv_row_lengths(path, separator)
    lines: list[int] = []
    wrong: list[tuple[int, int]] = []
    for line, count in rows:
        if count == n_fields:
            lines.append(line)
        else:
            wrong.append((line, count))
    if wrong:
        examples = ", ".join(f"line {line} has {count}" for line, count in wrong[:MAX_EXAMPLES_IN_MESSAGE])
        more = len(wrong) - MAX_EXAMPLES_IN_MESSAGE
        suffix = f" and {more} more row(s)" if more > 0 else ""
        raise DatasetError(f"dataset file {path}: wrong number of fields, expected {n_fields} (as in the header); "
                           f"{examples}{suffix}")
    return np.asarray(lines, dtype=np.int64)


def _csv_row_lengths(path: Path, separator: str) -> Iterator[tuple[int, int]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle, delimiter=separator, quoting=csv.QUOTE_MINIMAL)
        next(reader, None)
        try:
            for row in reader:
                if row:
                    yield reader.line_num, len(row)
        except csv.Error as exc:
            raise DatasetError(f"dataset file {path}, line {reader.line_num}: {exc}") from None


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


def _check_ids(raw: RawTable, schema: DatasetSchema) -> None:
    ids = raw.values[schema.id_column]
    _raise_for_rows(ids.isna(), raw, schema.id_column, "an id is required on every row")
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        first = ids[duplicated].iloc[0]
        lines = [int(raw.lines[i]) for i in np.flatnonzero((ids == first).to_numpy())]
        count = int(ids[duplicated].nunique())
        raise DatasetError(
            f"column {schema.id_column!r}: {count} duplicate id(s), e.g. {first!r} on lines {lines}; "
            "ids must be unique"
        )


def _parse_target(raw: RawTable, schema: DatasetSchema) -> pd.Series:
    column = raw.values[schema.target_column]
    parsed = column.map(TARGET_SPELLINGS)
    bad = column.notna() & parsed.isna()
    expected = f"0, 1 or {schema.missing_marker!r} (unlabelled)"
    _raise_for_rows(bad, raw, schema.target_column, f"expected {expected}")
    return parsed.astype("float64")


def _parse_numeric(raw: RawTable, name: str, minimum: float | None, maximum: float | None) -> pd.Series:
    column = raw.values[name]
    parsed = pd.to_numeric(column, errors="coerce").astype("float64")
    not_a_number = column.notna() & (parsed.isna() | ~np.isfinite(parsed.fillna(0.0)))
    _raise_for_rows(not_a_number, raw, name, "expected a finite number")
    if minimum is not None:
        _raise_for_rows(parsed < minimum, raw, name, f"expected a value >= {minimum:g}")
    if maximum is not None:
        _raise_for_rows(parsed > maximum, raw, name, f"expected a value <= {maximum:g}")
    return parsed


def _parse_boolean(raw: RawTable, name: str) -> pd.Series:
    column = raw.values[name]
    parsed = pd.Series(np.nan, index=column.index, dtype="float64")
    parsed[column.isin(TRUE_SPELLINGS)] = 1.0
    parsed[column.isin(FALSE_SPELLINGS)] = 0.0
    bad = column.notna() & parsed.isna()
    _raise_for_rows(bad, raw, name, "expected True or False")
    return parsed


def _raise_for_rows(bad: pd.Series, raw: RawTable, column: str, expectation: str) -> None:
    """One message per broken column: which lines, which values (as written), what was expected."""
    if not bad.any():
        return
    positions = np.flatnonzero(bad.to_numpy())
    values = raw.text[column].to_numpy()
    examples = ", ".join(f"line {int(raw.lines[i])}: {values[i]!r}" for i in positions[:MAX_EXAMPLES_IN_MESSAGE])
    more = len(positions) - MAX_EXAMPLES_IN_MESSAGE
    suffix = f" and {more} more row(s)" if more > 0 else ""
    raise DatasetError(f"column {column!r}: {expectation}; got {examples}{suffix}")
