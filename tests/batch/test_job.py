"""Batch scoring end to end on local[2]: exactness against train.py and the service, CSV and Parquet, rejects."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from credit_pd.batch.job import (
    BatchAccountingError,
    BatchInputError,
    InputCheck,
    JobSummary,
    check_accounting,
    read_input,
    run_job,
)
from credit_pd.batch.settings import BatchJobConfig
from credit_pd.client import requests_from_frame
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.model_store import load_from_store
from credit_pd.serving.contract import build_application_model
from credit_pd.serving.scorer import PDScorer
from credit_pd.serving.settings import ServingSettings

TOP_K = 10
# Rows of the sample compared field by field with the service's scorer (all rows are compared on PD).
SERVICE_ROWS = 300


def read_scores(path: str) -> pd.DataFrame:
    return pd.read_parquet(path).set_index("uuid")


@pytest.fixture(scope="module")
def csv_run(spark, shipped_model, small_sample_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch-csv")
    summary = run_job(
        spark,
        shipped_model,
        BatchJobConfig(
            str(small_sample_path), str(out), model_tag=shipped_model.model_tag, top_k=TOP_K, arrow_batch_size=2_000
        ),
    )
    return summary, read_scores(summary.scores_path)


@pytest.fixture(scope="module")
def sample_frame(small_sample_path, schema) -> pd.DataFrame:
    return load_dataset(small_sample_path, schema)


def test_every_row_of_the_sample_is_scored_once(csv_run, sample_frame):
    summary, scores = csv_run
    assert summary.rows_rejected == 0
    assert summary.rows_scored == len(sample_frame) == len(scores)
    assert scores.index.is_unique and set(scores.index) == set(sample_frame["uuid"])
    assert (scores["model_tag"] == summary_tag(scores)).all()


def summary_tag(scores: pd.DataFrame) -> str:
    (tag,) = scores["model_tag"].unique()
    assert tag.startswith("credit_pd_model:") and not tag.endswith(":latest")
    return tag


def test_pd_equals_train_py_predictions(csv_run, trained_run):
    _, scores = csv_run
    expected = pd.read_csv(trained_run.predictions_path, dtype={"uuid": str}).set_index("uuid")["pd"]
    assert len(expected) > 1_000
    assert set(expected.index) <= set(scores.index)
    np.testing.assert_allclose(scores.loc[expected.index, "pd"].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)


def test_pd_and_contributions_equal_the_service_scorer(csv_run, trained_run, sample_frame, schema):
    _, scores = csv_run
    rows = sample_frame[~labelled_mask(sample_frame, schema)].head(SERVICE_ROWS)
    model = load_from_store(trained_run.model_tag)
    application = build_application_model(model.schema, model.encoder, ServingSettings())
    service = PDScorer(model, trained_run.model_tag)
    answers = service.score(
        [application.model_validate(r | {"top_k": TOP_K}) for r in requests_from_frame(rows, schema)]
    )
    assert len(answers) == SERVICE_ROWS
    assert sum(len(answer.reasons) == 4 for answer in answers) > 0 and len({answer.grade for answer in answers}) > 1
    for answer in answers:
        row = scores.loc[answer.uuid]
        assert row["pd"] == pytest.approx(answer.pd, abs=1e-9)
        assert row["base_value"] == pytest.approx(answer.explanation.base_value, abs=1e-9)
        assert row["raw_score"] == pytest.approx(answer.explanation.raw_score, abs=1e-9)
        expected = answer.explanation.contributions
        assert [row[f"feature_{r}"] for r in range(1, TOP_K + 1)] == [c.feature for c in expected]
        np.testing.assert_allclose(
            [row[f"contribution_{r}"] for r in range(1, TOP_K + 1)],
            [c.contribution for c in expected],
            rtol=0,
            atol=1e-9,
        )
        assert [none_for_missing(row[f"value_{r}"]) for r in range(1, TOP_K + 1)] == [
            as_text(c.value) for c in expected
        ]
        assert list(row["warnings"]) == answer.warnings
        # Grade and principal reasons: the service's answer (default max_reasons 4), code for code.
        assert row["grade"] == answer.grade
        codes = [none_for_missing(row[f"reason_{r}"]) for r in range(1, 5)]
        assert codes == [reason.code for reason in answer.reasons] + [None] * (4 - len(answer.reasons))
        np.testing.assert_allclose(
            [row[f"reason_{r}_contribution"] for r in range(1, len(answer.reasons) + 1)],
            [reason.contribution for reason in answer.reasons],
            rtol=0,
            atol=1e-9,
        )
        assert all(pd.isna(row[f"reason_{r}_contribution"]) for r in range(len(answer.reasons) + 1, 5))


def none_for_missing(value):
    """pandas 3 reads a null Parquet string as NaN."""
    return None if pd.isna(value) else value


def as_text(value) -> str | None:
    """How the batch output writes an input value: Arrow's shortest round-trip text, true/false."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def test_parquet_input_with_pandas_3_dtypes_scores_the_same(
    spark, shipped_model, sample_frame, csv_run, tmp_path, schema
):
    """Typed Parquet as pandas 3 writes it: `str` ids, nullable categoricals, float features, bool flags."""
    frame = sample_frame.drop(columns=[schema.target_column]).copy()
    frame["uuid"] = frame["uuid"].astype("str")
    frame["merchant_group"] = frame["merchant_group"].astype("category")
    frame["account_status"] = frame["account_status"].astype("category")  # nullable: mostly missing
    frame["has_paid"] = frame["has_paid"].astype(bool)
    assert frame["account_status"].isna().any()
    path = tmp_path / "book.parquet"
    frame.to_parquet(path, index=False)
    summary = run_job(
        spark,
        shipped_model,
        BatchJobConfig(str(path), str(tmp_path / "out"), model_tag=shipped_model.model_tag, top_k=TOP_K),
    )
    assert (summary.rows_scored, summary.rows_rejected) == (len(frame), 0)
    scores, expected = read_scores(summary.scores_path), csv_run[1]
    np.testing.assert_allclose(
        scores.loc[expected.index, "pd"].to_numpy(), expected["pd"].to_numpy(), rtol=0, atol=1e-12
    )
    ranked = [f"{part}_{r}" for r in range(1, TOP_K + 1) for part in ("feature", "value")]
    pd.testing.assert_frame_equal(scores.loc[expected.index, ranked], expected[ranked])


def sample_lines(path: Path, n: int) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = next(reader)
        return header, [next(reader) for _ in range(n)]


def changed(header: list[str], row: list[str], **changes: str) -> list[str]:
    out = list(row)
    for column, value in changes.items():
        out[header.index(column)] = value
    return out


def test_bad_rows_go_to_rejects_with_reasons_and_the_rest_is_scored(spark, shipped_model, small_sample_path, tmp_path):
    header, rows = sample_lines(small_sample_path, 30)
    good = rows[:24]
    bad = {
        "too-young": changed(header, rows[24], uuid="too-young", age="12"),
        "not-a-flag": changed(header, rows[25], uuid="not-a-flag", has_paid="maybe"),
        "no-group": changed(header, rows[26], uuid="no-group", merchant_group="NA"),
        "not-a-number": changed(header, rows[27], uuid="not-a-number", num_active_inv="three"),
        "extra-field": changed(header, rows[28], uuid="extra-field") + ["surplus"],
        "short-line": changed(header, rows[29], uuid="short-line")[:10],
    }
    lines = (
        [";".join(header)]
        + [";".join(r) for r in good]
        + [";".join(r) for r in bad.values()]
        + [";".join(changed(header, rows[0], uuid=""))]
    )
    book = tmp_path / "book.csv"
    book.write_text("\n".join(lines) + "\n")
    summary = run_job(
        spark, shipped_model, BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
    )
    assert (summary.rows_scored, summary.rows_rejected) == (len(good), len(bad) + 1)
    scores = pd.read_parquet(summary.scores_path)
    assert sorted(scores["uuid"]) == sorted(r[0] for r in good)
    rejects = pd.read_parquet(summary.rejects_path)
    reasons = dict(zip(rejects["uuid"].fillna("<no id>"), rejects["reject_reason"], strict=False))
    assert reasons["too-young"] == "age: expected a value >= 18, got '12'"
    assert reasons["not-a-flag"] == "has_paid: expected True or False, got 'maybe'"
    assert reasons["no-group"] == "merchant_group: a value is required (column is not nullable), got nothing (missing)"
    assert reasons["not-a-number"] == "num_active_inv: expected a finite number, got 'three'"
    for name in ("extra-field", "short-line"):
        assert reasons[name].startswith("malformed line: expected the header's fields separated by ';'"), reasons[name]
        assert name in reasons[name]
    assert reasons["<no id>"] == "uuid: an id is required on every row, got nothing (missing)"
    assert rejects.loc[rejects["uuid"] == "too-young", "age"].item() == "12"  # the row as it came in


def test_missing_columns_fail_before_scoring(spark, shipped_model, small_sample_path, tmp_path):
    header, rows = sample_lines(small_sample_path, 3)
    keep = [i for i, name in enumerate(header) if name != "age"]
    book = tmp_path / "no-age.csv"
    book.write_text("\n".join(";".join(r[i] for i in keep) for r in [header, *rows]) + "\n")
    with pytest.raises(BatchInputError, match=r"missing columns \['age'\] for the model's schema 'klarna_bnpl'"):
        run_job(
            spark, shipped_model, BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
        )
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_unless_overwriting(spark, shipped_model, csv_run, small_sample_path):
    summary, _ = csv_run
    output = str(Path(summary.scores_path).parent)
    with pytest.raises(
        BatchInputError,
        match=r"already exists and is not empty \(rejects, scores\); choose another --output or pass --overwrite",
    ):
        run_job(spark, shipped_model, BatchJobConfig(str(small_sample_path), output, model_tag=shipped_model.model_tag))


@pytest.mark.parametrize("policy", ["score_as_missing", "reject"])
def test_unseen_category_policy(spark, shipped_model, small_sample_path, tmp_path, policy):
    header, rows = sample_lines(small_sample_path, 3)
    lines = [header, rows[0], rows[1], changed(header, rows[2], uuid="new-group", merchant_group="Space Tourism")]
    book = tmp_path / "book.csv"
    book.write_text("\n".join(";".join(r) for r in lines) + "\n")
    summary = run_job(
        spark,
        shipped_model,
        BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag, unseen_categories=policy),
    )
    scores = read_scores(summary.scores_path)
    if policy == "reject":
        assert (summary.rows_scored, summary.rows_rejected) == (2, 1)
        reason = pd.read_parquet(summary.rejects_path)["reject_reason"].item()
        assert reason.startswith("merchant_group: expected a value seen in training (") and reason.endswith(
            "got 'Space Tourism'"
        )
    else:
        assert (summary.rows_scored, summary.rows_rejected) == (3, 0)
        assert list(scores.loc["new-group", "warnings"]) == [
            "merchant_group: value 'Space Tourism' was not seen in training; scored as missing"
        ]


# ---- exact accounting, quoted line breaks, repeated ids, encodings (issue 19, findings 3 and 9) ----


def write_book(path: Path, header: list[str], rows: list[list[str]], ending: str = "\n", bom: bool = False) -> Path:
    """Rows as the dataset's CSV (quoting fields that need it, as the loader reads them)."""
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as out:
        csv.writer(out, delimiter=";", lineterminator=ending).writerows([header, *rows])
    return path


def run_book(spark, shipped_model, book: Path, out: Path, **options) -> JobSummary:
    return run_job(
        spark, shipped_model, BatchJobConfig(str(book), str(out), model_tag=shipped_model.model_tag, **options)
    )


def test_quoted_line_breaks_parse_as_the_training_loader_and_the_books_balance(
    spark, shipped_model, small_sample_path, tmp_path, schema
):
    header, rows = sample_lines(small_sample_path, 300)
    rows[50] = changed(header, rows[50], merchant_group="Books &\nMagazines")  # a legal quoted line break
    book = write_book(tmp_path / "book.csv", header, rows)
    assert len(load_dataset(book, schema)) == 300
    summary = run_book(spark, shipped_model, book, tmp_path / "out", top_k=TOP_K)
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (300, 300, 0)
    scores = read_scores(summary.scores_path)
    assert len(scores) == 300 and 'Magazines"' not in scores.index
    assert summary.line().startswith("batch_score: 300 rows in = 300 scored + 0 rejected (")


def test_a_quoted_book_is_spread_over_every_core(spark, shipped_model, small_sample_path, tmp_path):
    header, rows = sample_lines(small_sample_path, 200)
    rows[3] = changed(header, rows[3], merchant_group="Books &\nMagazines")
    book = write_book(tmp_path / "book.csv", header, rows)
    config = BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
    frame = read_input(spark, config, shipped_model.schema, multiline=True)
    assert frame.rdd.getNumPartitions() >= spark.sparkContext.defaultParallelism and frame.count() == 200


def test_every_row_of_a_repeated_id_is_rejected_with_a_reason(spark, shipped_model, small_sample_path, tmp_path):
    header, rows = sample_lines(small_sample_path, 40)
    rows[30] = changed(header, rows[30], uuid=rows[3][0])  # rows 3 and 30 share an id
    rows[31] = changed(header, rows[31], uuid=rows[4][0])
    rows[32] = changed(header, rows[32], uuid=rows[4][0])  # three rows share another
    summary = run_book(spark, shipped_model, write_book(tmp_path / "book.csv", header, rows), tmp_path / "out")
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected, summary.duplicate_ids) == (40, 35, 5, 2)
    rejects = pd.read_parquet(summary.rejects_path)
    assert sorted(rejects["reject_reason"]) == sorted(
        [f"uuid: {rows[3][0]!r} appears 2 times in the input; ids must be unique (no row of a repeated id is scored)"]
        * 2
        + [f"uuid: {rows[4][0]!r} appears 3 times in the input; ids must be unique (no row of a repeated id is scored)"]
        * 3
    )
    assert rows[3][0] not in set(pd.read_parquet(summary.scores_path)["uuid"])


def test_a_book_with_too_many_repeated_ids_is_refused(spark, shipped_model, small_sample_path, tmp_path, monkeypatch):
    import credit_pd.batch.job as job

    monkeypatch.setattr(job, "MAX_DUPLICATE_IDS", 1)
    header, rows = sample_lines(small_sample_path, 10)
    book = write_book(tmp_path / "book.csv", header, rows + rows[:2])
    with pytest.raises(
        BatchInputError, match=r"^2 ids appear more than once in the input \(e.g. '.+', 2 times\), more than the 1 "
    ):
        run_book(spark, shipped_model, book, tmp_path / "out")
    assert not (tmp_path / "out" / "scores").exists()


@pytest.mark.parametrize("variant", ["bom", "crlf", "cr", "bom+crlf, quoted line break"])
def test_bom_crlf_and_cr_only_books_score_like_the_plain_one(
    spark, shipped_model, small_sample_path, tmp_path, variant
):
    header, rows = sample_lines(small_sample_path, 50)
    if "quoted" in variant:  # read in multiLine mode, the plain book too
        rows[7] = changed(header, rows[7], merchant_group="Books &\nMagazines")
    plain = run_book(spark, shipped_model, write_book(tmp_path / "plain.csv", header, rows), tmp_path / "plain")
    ending = "\r\n" if "crlf" in variant else "\r" if variant == "cr" else "\n"
    book = write_book(tmp_path / "book.csv", header, rows, ending=ending, bom=variant.startswith("bom"))
    summary = run_book(spark, shipped_model, book, tmp_path / "out")
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (50, 50, 0)
    pd.testing.assert_frame_equal(
        read_scores(summary.scores_path).sort_index(), read_scores(plain.scores_path).sort_index()
    )


def test_a_remote_book_that_is_not_utf8_rejects_the_rows_naming_the_column(
    spark, shipped_model, small_sample_path, tmp_path
):
    """Without the local check (as for s3a://), Spark reads a non-UTF-8 byte as U+FFFD: that row is rejected, never scored."""
    header, rows = sample_lines(small_sample_path, 20)
    rows[5] = changed(header, rows[5], uuid="latin-1", merchant_group="Caf\u00e9")
    book = tmp_path / "book.csv"
    book.write_bytes(("\n".join(";".join(r) for r in [header, *rows]) + "\n").encode("latin-1"))
    config = BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
    summary = run_job(spark, shipped_model, config, InputCheck(quoted=None))
    assert (summary.rows_in, summary.rows_scored, summary.rows_rejected) == (20, 19, 1)
    (reason,) = pd.read_parquet(summary.rejects_path)["reject_reason"]
    assert reason.startswith(
        "merchant_group: the input is not valid UTF-8 here (a byte was read as U+FFFD); not UTF-8: save as UTF-8"
    )


def test_a_remote_utf16_book_gets_an_encoding_hint(spark, shipped_model, small_sample_path, tmp_path):
    header, rows = sample_lines(small_sample_path, 5)
    book = tmp_path / "book.csv"
    book.write_bytes(("\n".join(";".join(r) for r in [header, *rows]) + "\n").encode("utf-16-le"))
    config = BatchJobConfig(str(book), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
    with pytest.raises(BatchInputError, match=r"\(the header is not UTF-8 text: UTF-16\? not UTF-8: save as UTF-8\)$"):
        run_job(spark, shipped_model, config, InputCheck(quoted=None))


def test_books_that_do_not_balance_fail_loudly():
    summary = JobSummary(
        rows_scored=284, rows_rejected=17, seconds=1.0, scores_path="o/scores", rejects_path="o/rejects", rows_in=300
    )
    assert "!= (MISMATCH)" in summary.line()
    with pytest.raises(
        BatchAccountingError,
        match=r"^300 rows in but 284 scored \+ 17 rejected = 301: rows were lost or counted twice; "
        r"do not use o/scores or o/rejects$",
    ):
        check_accounting(summary)
    balanced = JobSummary(283, 17, 1.0, "o/scores", "o/rejects", rows_in=300)
    assert check_accounting(balanced) is balanced and "300 rows in = 283 scored + 17 rejected" in balanced.line()
