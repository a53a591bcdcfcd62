"""pandas 3 through PySpark 4: what breaks with the project's pins, and that the job avoids it.

PySpark 4 warns that pandas >= 3 "is not fully supported". Probed with pandas 3.1, numpy 2.4,
pyarrow 26 and pyspark 4.3 (the `spark` extra), two things break:
  1. Without Arrow (PySpark's row-by-row fallback), a missing `str` or categorical value becomes
     the text "nan" and Arrow-backed strings fail. The job forces Arrow and disables the fallback
     (`credit_pd.batch.job.SPARK_CONF`); through Arrow, `str`, nullable categorical, nullable
     Float64/boolean and Arrow-backed strings cross intact (missing stays null).
  2. A mapInPandas function that returns a pandas 3 `str` column held as a multi-chunk Arrow array
     (what filtering or concatenating one gives) fails in PySpark's output conversion. The job
     hands text columns over as object arrays (`credit_pd.batch.job.for_arrow`).
Both are worked around rather than pinning pandas below 3, which the rest of the project (and the
bento) runs on. If PySpark fixes either, the test showing the breakage fails: the workaround may go.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from credit_pd.batch.job import SPARK_CONF, for_arrow
from credit_pd.batch.validation import validate_batch

PANDAS_3_COLUMNS = {
    "text": pd.Series(["a", None, "c"], dtype="str"),
    "arrow_text": pd.Series(["a", None, "c"], dtype=pd.ArrowDtype(pa.string())),
    "labels": pd.Series(pd.Categorical(["x", None, "y"])),
    "codes": pd.Series(pd.Categorical([1.0, np.nan, 2.0])),
    "amount": pd.Series(pd.array([1.5, None, 2.0], dtype="Float64")),
    "flag": pd.Series(pd.array([True, None, False], dtype="boolean")),
}


def test_the_job_forces_arrow_without_fallback():
    assert SPARK_CONF["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert SPARK_CONF["spark.sql.execution.arrow.pyspark.fallback.enabled"] == "false"


@pytest.mark.parametrize("name", sorted(PANDAS_3_COLUMNS))
def test_pandas_3_columns_keep_missing_as_null_through_arrow(spark, name):
    column = PANDAS_3_COLUMNS[name]
    values = [row[0] for row in spark.createDataFrame(pd.DataFrame({name: column})).collect()]
    assert values[1] is None
    assert values[0] == column.iloc[0] and values[2] == column.iloc[2]


def test_without_arrow_a_missing_string_becomes_the_text_nan(spark):
    """The breakage the workaround avoids. If PySpark fixes it this fails: the fallback ban may then go."""
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "false")
    try:
        values = [row[0] for row in spark.createDataFrame(pd.DataFrame({"text": PANDAS_3_COLUMNS["text"]})).collect()]
    finally:
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    assert values == ["a", "nan", "c"]


def test_map_in_pandas_hands_strings_as_pandas_3_str_with_nan_and_validation_reads_them(spark, schema):
    """Inside mapInPandas, CSV text arrives as `str` with NaN for null; NA, "" and null all mean missing."""
    rows = [("u1", "NA"), ("u2", ""), ("u3", None), ("u4", "1.0")]
    frame = spark.createDataFrame(rows, "uuid string, account_status string").coalesce(1)

    def probe(batches):
        for batch in batches:
            column = batch["account_status"]
            labels = validate_batch_labels(batch, schema)
            yield pd.DataFrame(
                {
                    "dtype": [str(column.dtype)],
                    "nan_for_null": [bool(pd.isna(column.iloc[2]))],
                    "labels": [repr(labels)],
                }
            )

    (result,) = frame.mapInPandas(probe, "dtype string, nan_for_null boolean, labels string").collect()
    assert result["dtype"] == "str" and result["nan_for_null"] is True
    assert result["labels"] == repr([None, None, None, "1"])


def validate_batch_labels(batch: pd.DataFrame, schema) -> list:
    """account_status as validation types it, with every other feature filled with a valid value."""
    full = pd.DataFrame({name: [value] * len(batch) for name, value in example_as_text(schema).items()})
    full["uuid"] = batch["uuid"].to_numpy()
    full["account_status"] = batch["account_status"].to_numpy()
    typed = validate_batch(full, schema).typed
    return [None if pd.isna(v) else v for v in typed["account_status"]]


def example_as_text(schema) -> dict:
    return {name: (None if value is None else str(value)) for name, value in schema.example.items()}


def two_chunk_text() -> pd.Series:
    return pd.concat([pd.Series(["x"], dtype="str"), pd.Series(["y", None], dtype="str")], ignore_index=True)


def test_multi_chunk_str_column_breaks_map_in_pandas_output(spark):
    """The breakage `for_arrow` avoids (PySpark 4.3 + pandas 3 + pyarrow)."""
    column = two_chunk_text()
    assert column.array._pa_array.num_chunks == 2
    frame = spark.createDataFrame([("a",)], "s string").coalesce(1)
    with pytest.raises(Exception, match="Cannot convert pyarrow.lib.ChunkedArray to pyarrow.lib.Array"):
        frame.mapInPandas(
            lambda batches: (pd.DataFrame({"s": two_chunk_text()}) for _ in batches), "s string"
        ).collect()


def test_for_arrow_hands_text_over_as_objects_and_keeps_nulls(spark):
    frame = spark.createDataFrame([("a",)], "s string").coalesce(1)
    rows = frame.mapInPandas(
        lambda batches: (for_arrow(pd.DataFrame({"s": two_chunk_text(), "n": [1.0, 2.0, 3.0]})) for _ in batches),
        "s string, n double",
    ).collect()
    assert [(r.s, r.n) for r in rows] == [("x", 1.0), ("y", 2.0), (None, 3.0)]
