"""Strict loading of a dataset file against its schema (core: training and the drift report use it).

A credit model trained on silently mis-parsed data is worse than no model, so every departure
from the schema stops the run with a message that names the column, the file line and the
offending value. Nothing here writes anything.

One reading rule for every dataset file (training, the drift report, the batch job's pre-check:
`check_text_file`): UTF-8, with or without a byte-order mark; lines end in LF, CRLF or CR alone
(old Mac exports); a quoted field may hold separators and line breaks; any other encoding is one
error naming the file line and saying "not UTF-8: save as UTF-8".
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from credit_pd.categories import (
    CODE_SPELLING_MESSAGE,
    FALSE_SPELLINGS,
    TRUE_SPELLINGS,
    CategoryValueError,
    canonical_categories,
    file_category_rule,
)
from credit_pd.errors import DatasetError
from credit_pd.schema import DatasetSchema, FeatureType

TARGET_SPELLINGS = {"0": 0.0, "1": 1.0}
# How many offending rows one error message lists before summarising the rest.
MAX_EXAMPLES_IN_MESSAGE = 5
# The hint every encoding error ends with.
SAVE_AS_UTF8 = "not UTF-8: save as UTF-8"
# Byte-order marks of encodings that are not UTF-8 (UTF-32 first: its LE mark starts with UTF-16's).
FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
# Bytes read at a time when checking a file's encoding (a batch book can be larger than memory).
CHECK_CHUNK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class RawTable:
    """Every field as read: `text` as written, `values` with missing fields as NaN, file lines."""

    text: pd.DataFrame
    values: pd.DataFrame
    lines: np.ndarray


def load_dataset(path: Path | str, schema: DatasetSchema) -> pd.DataFrame:
    """Read and validate a dataset; returns typed columns in schema order.

    Numeric and boolean features become float64 (NaN = missing), categoricals become their
    canonical labels (`credit_pd.categories.canonical_category`; None = missing), the target is
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
            typed[spec.name] = _parse_categorical(raw, spec.name)
    return pd.DataFrame(typed, columns=schema.columns)


def check_text_file(path: Path | str) -> bool:
    """Apply the reading rule to a file without keeping it: the batch job's check of a local book.

    Streams the bytes (gzip-compressed files through `gzip`), so any size is fine; raises
    DatasetError with the file line of the first problem. Returns whether the file holds a
    double quote: only then can a field hold a line break, which a line-splitting reader breaks.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    quoted = False
    with opener(path, "rb") as handle:
        for text in _checked_chunks(_chunks(handle), str(path)):
            quoted = quoted or '"' in text
    return quoted


def decode_text(data: bytes, where: str) -> str:
    """The text of a dataset file by the reading rule: BOM dropped, CR-only line ends made LF."""
    text = "".join(_checked_chunks([data], where))
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")  # every CR is a line end in a CR-only file, inside quotes too
    return text


class SupportsRead(Protocol):
    """A binary file, plain or gzip: all `_chunks` needs of it."""

    def read(self, size: int = -1, /) -> bytes: ...


def _chunks(handle: SupportsRead) -> Iterator[bytes]:
    while chunk := handle.read(CHECK_CHUNK_BYTES):
        yield chunk


def _checked_chunks(chunks: Iterable[bytes], where: str) -> Iterator[str]:
    """Decoded text, chunk by chunk; raises naming the line of a foreign BOM, a NUL or a non-UTF-8 byte."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    lines_before = 0
    first = True
    for chunk in chunks:
        if first:
            _check_bom(chunk, where)
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
            first = False
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise DatasetError(
                f"{where}, line {lines_before + _line_in(chunk, nul)}: a NUL byte (UTF-16 without a "
                f"byte-order mark, or not a text file); {SAVE_AS_UTF8}"
            )
        try:
            yield decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            start = max(exc.start, 0)
            shown = " ".join(f"0x{b:02x}" for b in chunk[start : start + 2])
            raise DatasetError(
                f"{where}, line {lines_before + _line_in(chunk, start)}: bytes {shown} are not valid UTF-8 "
                f"(Latin-1 or Windows-1252?); {SAVE_AS_UTF8}"
            ) from None
        lines_before += _line_in(chunk, len(chunk)) - 1
    try:
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DatasetError(
            f"{where}, line {lines_before + 1}: the file ends inside a UTF-8 character; {SAVE_AS_UTF8}"
        ) from None


def _check_bom(head: bytes, where: str) -> None:
    for bom, name in FOREIGN_BOMS:
        if head.startswith(bom):
            raise DatasetError(f"{where} is {name} (it starts with a {name} byte-order mark), {SAVE_AS_UTF8}")


def _line_in(chunk: bytes, position: int) -> int:
    """1-based line of `position` in a chunk: LF counts lines, or CR in a file without LF."""
    newline = b"\n" if b"\n" in chunk or b"\r" not in chunk else b"\r"
    return chunk.count(newline, 0, position) + 1


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

    The file is read once and decoded by the reading rule (`decode_text`). Each row's field count
    is checked against the header first (`_row_lines`), because `pandas.read_csv` pads a short row
    with missing values and fails on a long one with a parser traceback: both are one-line errors
    naming the line here. A row's line is the line it starts on.
    """
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"dataset file {path} is empty; expected a header line and data rows")
    content = decode_text(path.read_bytes(), f"dataset file {path}")
    header = _read_header(content, schema.separator, path)
    _check_columns(header, schema, path)
    lines = _row_lines(content, schema.separator, len(header), path)
    if len(lines) == 0:
        raise DatasetError(f"dataset file {path} has a header but no data rows")
    try:
        text = pd.read_csv(
            io.StringIO(content),
            sep=schema.separator,
            dtype=str,
            na_filter=False,
            keep_default_na=False,
            quoting=csv.QUOTE_MINIMAL,
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as exc:
        raise DatasetError(f"dataset file {path} cannot be parsed: {str(exc).splitlines()[0]}") from None
    if len(text) != len(lines):  # cannot happen when both readers agree on the format; never guess
        raise DatasetError(f"dataset file {path}: {len(text)} rows parsed but {len(lines)} data lines found")
    text = text[schema.columns]
    values = text.mask(text.isin([schema.missing_marker, ""]))
    return RawTable(text=text, values=values, lines=lines)


def _read_header(content: str, separator: str, path: Path) -> list[str]:
    first_line = content.split("\n", 1)[0].rstrip("\r")
    if not first_line:
        raise DatasetError(f"dataset file {path} has an empty first line; expected the header")
    return next(csv.reader([first_line], delimiter=separator))


def _row_lines(content: str, separator: str, n_fields: int, path: Path) -> np.ndarray:
    """File line of every data row; any row with another field count than the header is an error.

    Without a quote character in the file a field count is a separator count per line (fast);
    otherwise the `csv` module reads the rows, so quoted separators and line breaks count right.
    Blank lines are skipped, as the CSV reader skips them.
    """
    if '"' not in content:
        physical = [line.rstrip("\r") for line in content.split("\n")]
        rows: Iterator[tuple[int, int]] = (
            (number, line.count(separator) + 1) for number, line in enumerate(physical[1:], start=2) if line
        )
    else:
        rows = _csv_row_lengths(content, separator, path)
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
        raise DatasetError(
            f"dataset file {path}: wrong number of fields, expected {n_fields} (as in the header); {examples}{suffix}"
        )
    return np.asarray(lines, dtype=np.int64)


def _csv_row_lengths(content: str, separator: str, path: Path) -> Iterator[tuple[int, int]]:
    """(first line, field count) of every row. Strict quoting: a quote left open is an error at its line.

    Without `strict` the reader would take everything after an unclosed quote as one field, and a
    row that happens to have the header's field count would load as garbage.
    """
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=separator, quoting=csv.QUOTE_MINIMAL, strict=True)
    next(reader, None)
    start = reader.line_num + 1
    try:
        for row in reader:
            if row:
                yield start, len(row)
            start = reader.line_num + 1
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise DatasetError(
                f"dataset file {path}, line {start}: a quoted field opens on this line and is never closed "
                f"(the file ends inside it, at line {reader.line_num})"
            ) from None
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
            f"column {schema.id_column!r}: {count} duplicate id(s), e.g. {first!r} on lines {lines}; ids must be unique"
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


def _parse_categorical(raw: RawTable, name: str) -> pd.Series:
    """Canonical labels; in a numeric-coded column a code spelled other than as a plain decimal is an error."""
    column = raw.values[name]
    rule = file_category_rule(name, column)
    misspelt = []
    for value in column.dropna().unique():
        try:
            rule.check(value, "score_as_missing")
        except CategoryValueError:
            misspelt.append(value)
    _raise_for_rows(column.isin(misspelt), raw, name, CODE_SPELLING_MESSAGE)
    return canonical_categories(column)


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
