"""The data contract: every way a dataset can break the schema stops loading with a clear message."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_pd.dataset import check_trainable, labelled_mask, load_dataset
from credit_pd.errors import DatasetError


@pytest.fixture(scope="module")
def valid_lines(small_sample_path: Path) -> list[str]:
    return small_sample_path.read_text().splitlines()[:200]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "dataset.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def set_cell(lines: list[str], line_no: int, column: str, value: str, sep: str = ";") -> list[str]:
    """Copy of `lines` with one cell replaced (line_no is the 1-based file line)."""
    header = lines[0].split(sep)
    cells = lines[line_no - 1].split(sep)
    cells[header.index(column)] = value
    return [*lines[: line_no - 1], sep.join(cells), *lines[line_no:]]


def test_valid_file_loads_typed(schema, valid_lines, tmp_path):
    frame = load_dataset(write(tmp_path, valid_lines), schema)
    assert list(frame.columns) == schema.columns
    assert len(frame) == len(valid_lines) - 1
    assert frame["age"].dtype == np.float64
    assert set(frame["has_paid"].dropna().unique()) <= {0.0, 1.0}
    assert set(frame[schema.target_column].dropna().unique()) <= {0.0, 1.0}
    assert frame["merchant_group"].map(type).eq(str).all()


def test_missing_file(schema, tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv", schema)


def test_empty_file(schema, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="is empty"):
        load_dataset(path, schema)


def test_header_only(schema, valid_lines, tmp_path):
    with pytest.raises(DatasetError, match="no data rows"):
        load_dataset(write(tmp_path, valid_lines[:1]), schema)


def test_missing_column_is_named(schema, valid_lines, tmp_path):
    lines = [";".join(line.split(";")[:-1]) for line in valid_lines]
    with pytest.raises(DatasetError, match=r"missing columns \['worst_status_active_inv'\]"):
        load_dataset(write(tmp_path, lines), schema)


def test_unknown_column_is_named(schema, valid_lines, tmp_path):
    lines = [valid_lines[0] + ";shoe_size", *(line + ";42" for line in valid_lines[1:])]
    with pytest.raises(DatasetError, match=r"unknown columns \['shoe_size'\]"):
        load_dataset(write(tmp_path, lines), schema)


def test_wrong_separator_hints(schema, valid_lines, tmp_path):
    lines = [line.replace(";", ",") for line in valid_lines]
    with pytest.raises(DatasetError, match="is the separator ';'"):
        load_dataset(write(tmp_path, lines), schema)


def test_wrong_type_names_column_line_and_value(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 7, "age", "forty")
    with pytest.raises(DatasetError, match=r"column 'age': expected a finite number; got line 7: 'forty'"):
        load_dataset(write(tmp_path, lines), schema)


def test_infinite_number_rejected(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 3, "time_hours", "inf")
    with pytest.raises(DatasetError, match=r"column 'time_hours': expected a finite number; got line 3: 'inf'"):
        load_dataset(write(tmp_path, lines), schema)


def test_out_of_domain_value_rejected(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 4, "age", "-3")
    with pytest.raises(DatasetError, match=r"column 'age': expected a value >= 18; got line 4: '-3'"):
        load_dataset(write(tmp_path, lines), schema)


def test_bad_boolean_rejected(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 5, "has_paid", "maybe")
    with pytest.raises(DatasetError, match=r"column 'has_paid': expected True or False; got line 5: 'maybe'"):
        load_dataset(write(tmp_path, lines), schema)


def test_missing_value_in_required_column(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 6, "merchant_group", "NA")
    with pytest.raises(DatasetError, match=r"column 'merchant_group': a value is required .*line 6"):
        load_dataset(write(tmp_path, lines), schema)


def test_bad_target_value(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 9, "default", "2")
    with pytest.raises(DatasetError, match=r"column 'default': expected 0, 1 or 'NA' \(unlabelled\); got line 9: '2'"):
        load_dataset(write(tmp_path, lines), schema)


def test_duplicate_ids(schema, valid_lines, tmp_path):
    duplicate = valid_lines[1].split(";")[0]
    lines = set_cell(valid_lines, 10, "uuid", duplicate)
    with pytest.raises(DatasetError, match=rf"duplicate id\(s\), e.g. '{duplicate}' on lines \[2, 10\]"):
        load_dataset(write(tmp_path, lines), schema)


def test_many_bad_rows_are_summarised(schema, valid_lines, tmp_path):
    lines = valid_lines
    for line_no in range(2, 12):
        lines = set_cell(lines, line_no, "age", "x")
    with pytest.raises(DatasetError, match=r"and 5 more row\(s\)"):
        load_dataset(write(tmp_path, lines), schema)


def test_no_labelled_rows(schema, valid_lines, tmp_path):
    lines = valid_lines
    for line_no in range(2, len(lines) + 1):
        lines = set_cell(lines, line_no, "default", "NA")
    frame = load_dataset(write(tmp_path, lines), schema)
    assert not labelled_mask(frame, schema).any()
    with pytest.raises(DatasetError, match="no labelled rows"):
        check_trainable(frame, schema)


def test_single_class(schema, valid_lines, tmp_path):
    lines = valid_lines
    for line_no in range(2, len(lines) + 1):
        if lines[line_no - 1].split(";")[1] == "1":
            lines = set_cell(lines, line_no, "default", "0")
    frame = load_dataset(write(tmp_path, lines), schema)
    with pytest.raises(DatasetError, match=r"single class \(0\)"):
        check_trainable(frame, schema)


def test_every_real_row_loads(schema, real_rows_path):
    frame = load_dataset(real_rows_path, schema)
    assert len(frame) == 10_000
    assert frame[schema.target_column].isna().all()


def test_short_row_names_line_and_field_counts(schema, valid_lines, tmp_path):
    lines = list(valid_lines)
    lines[7] = ";".join(lines[7].split(";")[:-2])  # file line 8 loses its last two fields
    n_fields = len(valid_lines[0].split(";"))
    with pytest.raises(
        DatasetError, match=rf"wrong number of fields, expected {n_fields} .*line 8 has {n_fields - 2}$"
    ):
        load_dataset(write(tmp_path, lines), schema)


def test_extra_field_is_the_same_clean_error(schema, valid_lines, tmp_path):
    lines = list(valid_lines)
    lines[4] += ";surplus"
    n_fields = len(valid_lines[0].split(";"))
    with pytest.raises(DatasetError, match=rf"expected {n_fields} .*line 5 has {n_fields + 1}$"):
        load_dataset(write(tmp_path, lines), schema)


def test_extra_field_exits_2_with_one_line(valid_lines, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    lines = list(valid_lines)
    lines[4] += ";surplus"
    path = write(tmp_path, lines)
    done = subprocess.run(
        [
            sys.executable,
            "train.py",
            "--data",
            str(path),
            "--predictions",
            str(tmp_path / "p.csv"),
            "--report-dir",
            str(tmp_path / "r"),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "BENTOML_HOME": str(tmp_path / "home")},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "line 5 has" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "p.csv").exists()


def test_blank_lines_keep_real_line_numbers(schema, valid_lines, tmp_path):
    lines = [*valid_lines[:3], "", *valid_lines[3:]]
    lines = set_cell(lines, 8, "age", "old")  # file line 8, after the blank line 4
    with pytest.raises(DatasetError, match=r"column 'age': expected a finite number; got line 8: 'old'"):
        load_dataset(write(tmp_path, lines), schema)


def test_empty_field_is_missing_never_a_category(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 3, "account_status", "")
    lines = set_cell(lines, 4, "avg_payment_span_0_12m", "")
    frame = load_dataset(write(tmp_path, lines), schema)
    assert pd.isna(frame.loc[1, "account_status"])
    assert np.isnan(frame.loc[2, "avg_payment_span_0_12m"])
    assert "" not in set(frame["account_status"].dropna())


@pytest.mark.parametrize("column", ["merchant_group", "age", "has_paid"])
def test_empty_field_in_required_column_is_an_error(schema, valid_lines, tmp_path, column):
    lines = set_cell(valid_lines, 6, column, "")
    with pytest.raises(
        DatasetError, match=rf"column '{column}': a value is required \(column is not nullable\); got line 6: ''"
    ):
        load_dataset(write(tmp_path, lines), schema)


def test_quoted_separator_counts_as_one_field(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 3, "merchant_group", '"Food; drinks"')
    frame = load_dataset(write(tmp_path, lines), schema)
    assert frame.loc[1, "merchant_group"] == "Food; drinks"


# ---- the reading rule: encodings and line ends (issue 19, finding 9) ----


def write_bytes(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "dataset.csv"
    path.write_bytes(data)
    return path


def plain(valid_lines: list[str]) -> bytes:
    return ("\n".join(valid_lines) + "\n").encode()


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf", "cr"])
def test_bom_crlf_and_cr_only_line_ends_load_the_same_rows(schema, valid_lines, tmp_path, variant):
    expected = load_dataset(write_bytes(tmp_path, plain(valid_lines)), schema)
    ending = {"bom": "\n", "crlf": "\r\n", "bom+crlf": "\r\n", "cr": "\r"}[variant]
    data = (ending.join(valid_lines) + ending).encode()
    data = b"\xef\xbb\xbf" + data if variant.startswith("bom") else data
    pd.testing.assert_frame_equal(load_dataset(write_bytes(tmp_path, data), schema), expected)


def test_a_non_utf8_byte_names_its_line_and_says_save_as_utf8(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 9, "merchant_group", "Caf\u00e9")
    data = ("\n".join(lines) + "\n").encode("latin-1")
    with pytest.raises(
        DatasetError, match=r"dataset file .*, line 9: bytes 0xe9 .* not valid UTF-8 .*not UTF-8: save as UTF-8$"
    ):
        load_dataset(write_bytes(tmp_path, data), schema)


def test_a_non_utf8_error_after_a_quoted_line_break_counts_physical_lines(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 3, "merchant_group", '"Food\nand drink"')  # line 3 spans lines 3 and 4
    lines = set_cell(lines, 8, "merchant_group", "Caf\u00e9")  # list item 8 is file line 9
    with pytest.raises(DatasetError, match=r", line 9: bytes 0xe9"):
        load_dataset(write_bytes(tmp_path, ("\n".join(lines) + "\n").encode("latin-1")), schema)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf16_or_32_gets_an_encoding_hint_not_missing_columns(schema, valid_lines, tmp_path, encoding):
    data = ("\n".join(valid_lines[:20]) + "\n").encode(encoding)
    with pytest.raises(DatasetError, match="not UTF-8: save as UTF-8") as caught:
        load_dataset(write_bytes(tmp_path, data), schema)
    assert "missing columns" not in str(caught.value)
    if encoding == "utf-16":
        assert "is UTF-16 (it starts with a UTF-16 byte-order mark)" in str(caught.value)


def test_an_unclosed_quote_is_reported_where_it_opens(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 51, "merchant_group", '"Books & Magazines')  # never closed
    with pytest.raises(
        DatasetError,
        match=r"line 51: a quoted field opens on this line and is never closed "
        rf"\(the file ends inside it, at line {len(valid_lines)}\)",
    ):
        load_dataset(write(tmp_path, lines), schema)


def test_a_row_after_a_quoted_line_break_is_named_by_its_own_line(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 3, "merchant_group", '"Books &\nMagazines"')  # file lines 3-4
    frame = load_dataset(write(tmp_path, lines), schema)
    assert frame.loc[1, "merchant_group"] == "Books &\nMagazines" and len(frame) == len(valid_lines) - 1
    lines = set_cell(lines, 5, "age", "old")  # list item 5 is file line 6
    with pytest.raises(DatasetError, match=r"column 'age': expected a finite number; got line 6: 'old'"):
        load_dataset(write(tmp_path, lines), schema)
    lines = set_cell(lines, 3, "age", "young")  # the row itself is named by the line it starts on
    with pytest.raises(
        DatasetError, match=r"column 'age': expected a finite number; got line 3: 'young', line 6: 'old'"
    ):
        load_dataset(write(tmp_path, lines), schema)


def test_check_text_file_streams_the_same_rule(valid_lines, tmp_path):
    from credit_pd.dataset import check_text_file

    good = write_bytes(tmp_path, b"\xef\xbb\xbf" + plain(valid_lines))
    check_text_file(good)  # a BOM is fine
    bad = tmp_path / "bad.csv"
    bad.write_bytes(plain(valid_lines[:30]) + "x;Caf\u00e9\n".encode("cp1252"))
    with pytest.raises(DatasetError, match=r"bad.csv, line 31: bytes 0xe9 0x0a are not valid UTF-8"):
        check_text_file(bad)


# ---- one spelling rule for numeric codes (issue 19, finding 10) ----


@pytest.mark.parametrize("spelling", ["01", "1e0", "+1", "1."])
def test_a_misspelt_numeric_code_is_an_error_naming_column_and_line(schema, valid_lines, tmp_path, spelling):
    lines = set_cell(valid_lines, 12, "account_status", spelling)
    with pytest.raises(
        DatasetError,
        match=rf"column 'account_status': expected a numeric code: .*; got line 12: '{re.escape(spelling)}'",
    ):
        load_dataset(write(tmp_path, lines), schema)


def test_codes_compare_as_exact_decimals(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 12, "account_status", "1.00000000000000000001")
    lines = set_cell(lines, 13, "account_status", "1.000")
    frame = load_dataset(write(tmp_path, lines), schema)
    assert frame.loc[10, "account_status"] == "1.00000000000000000001"  # not code 1
    assert frame.loc[11, "account_status"] == "1"


def test_in_a_text_column_a_number_like_label_is_kept_as_written(schema, valid_lines, tmp_path):
    lines = set_cell(valid_lines, 12, "merchant_group", "01")
    frame = load_dataset(write(tmp_path, lines), schema)
    assert frame.loc[10, "merchant_group"] == "01"
