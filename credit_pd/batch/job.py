"""The Spark side of a batch run: session, input checks, the two mapInPandas passes, the summary.

Pass 1 validates and scores every row (`mapInPandas`, Arrow batches) and writes the scores;
pass 2 re-reads and re-validates the input and writes only the rejected rows with their reasons.
Validation is cheap next to TreeSHAP, so reading twice costs less than caching a book-sized
intermediate; and every input row ends up in exactly one of the two outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import pandas as pd

from credit_pd.batch.shipped import ShippedModel
from credit_pd.batch.scoring import BatchScorer, scores_ddl, top_k_count
from credit_pd.batch.settings import CORRUPT_RECORD_COLUMN, REJECTS_DIR, SCORES_DIR, BatchJobConfig
from credit_pd.batch.validation import REJECT_REASON_COLUMN, validate_batch
from credit_pd.errors import CreditPDError
from credit_pd.schema import DatasetSchema, FeatureType

if TYPE_CHECKING:
    from pyspark.broadcast import Broadcast
    from pyspark.sql import DataFrame, SparkSession

# Session settings every batch run needs, each with its reason.
SPARK_CONF = {
    # pandas <-> Spark through Arrow only. With pandas 3, PySpark 4's non-Arrow path turns a
    # missing value of a `str` or categorical column into the text "nan" (and fails on Arrow-backed
    # strings); tests/batch/test_pandas_arrow.py shows it. With the fallback off, an Arrow failure
    # is an error instead of a silent switch to that path.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # Input splits of at most 32 MB (~140,000 CSV rows): tasks are TreeSHAP-bound for ~10-60 s
    # each, so several per core keep the cores evenly busy to the end (no straggler split).
    "spark.sql.files.maxPartitionBytes": "32m",
    # Spark's own stage progress bar is the job's progress report.
    "spark.ui.showConsoleProgress": "true",
    # Parquet output compressed with zstd: smaller than snappy for these repetitive nested columns.
    "spark.sql.parquet.compression.codec": "zstd",
    # Executors' Python workers: quiet PySpark's blanket pandas-3 FutureWarning (see environment.py).
    "spark.executorEnv.PYTHONWARNINGS": "ignore:PySpark does not yet fully support pandas:FutureWarning",
}
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


class BatchInputError(CreditPDError):
    """The input cannot be scored as a whole (missing columns, wrong types, no file, output exists)."""


@dataclass(frozen=True)
class JobSummary:
    """What a run did, for the one summary line and for callers (tests, the benchmark)."""

    rows_scored: int
    rows_rejected: int
    seconds: float
    scores_path: str
    rejects_path: str
    # Wall time of each pass (scores: read + validate + score + write; rejects: read + validate + write).
    scores_seconds: float = 0.0
    rejects_seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"batch_score: {self.rows_scored:,} rows scored, {self.rows_rejected:,} rejects "
                f"({self.rejects_path}), {self.rows_per_s:,.0f} rows/s over {self.seconds:.1f} s, output {self.scores_path}")


def build_session(master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "credit-pd-batch-score") -> "SparkSession":
    """A SparkSession with SPARK_CONF; `master` None leaves it to spark-submit (or pyspark's local default)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def run_job(spark: "SparkSession", shipped: ShippedModel, config: BatchJobConfig) -> JobSummary:
    """Validate, score and write; returns the counts once both outputs are committed."""
    scores_path, rejects_path = output_paths(config.output_path)
    _check_outputs(spark, (scores_path, rejects_path), config.overwrite)
    raw = read_input(spark, config, shipped.schema)
    spark.conf.set(ARROW_BATCH_CONF, str(config.arrow_batch_size))
    started = time.perf_counter()
    write_scores(spark, raw, shipped, config, scores_path)
    scored = time.perf_counter()
    write_rejects(raw, shipped, config, rejects_path)
    finished = time.perf_counter()
    counts = [spark.read.parquet(path).count() for path in (scores_path, rejects_path)]  # Parquet footers only
    return JobSummary(counts[0], counts[1], finished - started, scores_path, rejects_path,
                      scores_seconds=scored - started, rejects_seconds=finished - scored)


def write_scores(spark: "SparkSession", raw: "DataFrame", shipped: ShippedModel, config: BatchJobConfig, path: str) -> None:
    """Pass 1: the model broadcast once per executor, every valid row scored and written."""
    model = spark.sparkContext.broadcast(shipped)
    k = top_k_count(config.top_k, len(shipped.schema.features))
    function = partial(score_partition, model=model, top_k=config.top_k, reject_unseen=config.unseen_categories == "reject")
    raw.mapInPandas(function, scores_ddl(shipped.schema.id_column, k)).write.mode(_write_mode(config)).parquet(path)
    model.unpersist()


def write_rejects(raw: "DataFrame", shipped: ShippedModel, config: BatchJobConfig, path: str) -> None:
    """Pass 2: the rows pass 1 left out, as they came in, with their reasons."""
    vocabularies = shipped.spec["encoder"]["categorical"] if config.unseen_categories == "reject" else None
    function = partial(reject_partition, schema_spec=shipped.spec["schema"], reject_unseen=vocabularies)
    columns = [c for c in raw.columns if c != CORRUPT_RECORD_COLUMN]
    raw.mapInPandas(function, rejects_ddl(columns)).write.mode(_write_mode(config)).parquet(path)


def _write_mode(config: BatchJobConfig) -> str:
    return "overwrite" if config.overwrite else "errorifexists"


def output_paths(output: str) -> tuple[str, str]:
    base = output.rstrip("/")
    return f"{base}/{SCORES_DIR}", f"{base}/{REJECTS_DIR}"


def rejects_ddl(columns: list[str]) -> str:
    """Spark DDL of the rejects output: every input column as text, then the reason."""
    return ", ".join([*(f"`{c}` string" for c in columns), f"`{REJECT_REASON_COLUMN}` string"])


def score_partition(batches: Iterator[pd.DataFrame], model: "Broadcast[ShippedModel]", top_k: int | None,
                    reject_unseen: bool = False) -> Iterator[pd.DataFrame]:
    """mapInPandas function: rebuild the model once per task, then validate and score each Arrow batch."""
    shipped = model.value
    scoring_model = shipped.rebuild(num_threads=1)
    scorer = BatchScorer(scoring_model, shipped.model_tag, scoring_model.schema, top_k)
    vocabularies = scoring_model.encoder.categorical if reject_unseen else None
    for batch in batches:
        yield for_arrow(scorer.score(validate_batch(batch, scoring_model.schema, vocabularies).typed))


def reject_partition(batches: Iterator[pd.DataFrame], schema_spec: Mapping[str, Any],
                     reject_unseen: Mapping[str, Any] | None = None) -> Iterator[pd.DataFrame]:
    """mapInPandas function: the rows `score_partition` leaves out, with their reasons."""
    schema = DatasetSchema.model_validate(schema_spec)
    for batch in batches:
        yield for_arrow(validate_batch(batch, schema, reject_unseen).rejects)


def for_arrow(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as numpy object arrays before PySpark converts the frame to Arrow.

    pandas 3 stores text in Arrow-backed `str` columns (with pyarrow installed), and a filtered or
    concatenated one is a multi-chunk Arrow array; PySpark 4.3's mapInPandas output conversion
    (`pa.Array.from_pandas` then `RecordBatch.from_arrays`) fails on it with "Cannot convert
    pyarrow.lib.ChunkedArray to pyarrow.lib.Array" (tests/batch/test_pandas_arrow.py reproduces
    it). Object columns take PySpark's plain path; missing values stay null.
    """
    text = [name for name, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)]
    return frame.astype({name: object for name in text}) if text else frame


def detect_format(path: str, given: str | None) -> str:
    """csv or parquet: as given, else from the extension (a directory of part files is Parquet)."""
    if given:
        return given
    name = path.rstrip("/").lower()
    return "csv" if name.endswith((".csv", ".csv.gz", ".txt")) else "parquet"


def read_input(spark: "SparkSession", config: BatchJobConfig, schema: DatasetSchema) -> "DataFrame":
    """The input as a DataFrame of the columns validation needs, checked as a whole first."""
    _check_local_input(config.input_path)
    fmt = detect_format(config.input_path, config.input_format)
    if fmt == "csv":
        return _read_csv(spark, config.input_path, schema)
    if fmt == "parquet":
        frame = spark.read.parquet(config.input_path)
        columns = check_columns(frame.columns, schema, config.input_path)
        _check_parquet_types(frame, schema)
        return frame.select(*columns)
    raise BatchInputError(f"input format {fmt!r} is not supported; use csv or parquet")


def check_columns(columns: list[str], schema: DatasetSchema, where: str) -> list[str]:
    """The input's columns in model order (id, target when present, features); fails on missing or unknown ones."""
    required = [schema.id_column, *schema.feature_names]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    missing = [c for c in required if c not in columns]
    unknown = [c for c in columns if c not in (*required, schema.target_column)]
    problems = [f"{label} columns {names}" for label, names in (("repeated", repeated), ("missing", missing), ("unknown", unknown)) if names]
    if problems:
        hint = f" (is the separator {schema.separator!r}?)" if len(columns) == 1 else ""
        raise BatchInputError(f"input {where}: {'; '.join(problems)} for the model's schema {schema.name!r}{hint}")
    return [c for c in (schema.id_column, schema.target_column, *schema.feature_names) if c in columns]


def _read_csv(spark: "SparkSession", path: str, schema: DatasetSchema) -> "DataFrame":
    """Every column as text (parsing is validation's job), malformed lines kept for the rejects."""
    from pyspark.sql.types import StringType, StructField, StructType

    options = {"header": "true", "sep": schema.separator, "quote": '"', "escape": '"'}
    header = spark.read.options(**options).csv(path).columns
    columns = check_columns(header, schema, path)
    text_schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT_RECORD_COLUMN, StringType())])
    frame = (spark.read.schema(text_schema)
             .options(**options, nullValue=schema.missing_marker, mode="PERMISSIVE", enforceSchema="false",
                      columnNameOfCorruptRecord=CORRUPT_RECORD_COLUMN)
             .csv(path))
    return frame.select(*columns, CORRUPT_RECORD_COLUMN)


def _check_parquet_types(frame: "DataFrame", schema: DatasetSchema) -> None:
    """Parquet columns must be text or of the feature's kind; validation then checks each value."""
    from pyspark.sql.types import BooleanType, NumericType, StringType

    accepted = {
        FeatureType.NUMERIC: (NumericType, StringType),
        FeatureType.BOOLEAN: (BooleanType, NumericType, StringType),
        FeatureType.CATEGORICAL: (StringType, NumericType),
    }
    types = {field.name: field.dataType for field in frame.schema.fields}
    wrong = [f"{spec.name} is {types[spec.name].simpleString()} (expected {spec.type.value}: "
             f"{' or '.join(t.__name__.removesuffix('Type').lower() for t in accepted[spec.type])})"
             for spec in schema.features if not isinstance(types[spec.name], accepted[spec.type])]
    if not isinstance(types[schema.id_column], (StringType, NumericType)):
        wrong.append(f"{schema.id_column} is {types[schema.id_column].simpleString()} (expected string)")
    if wrong:
        raise BatchInputError(f"input columns of the wrong type: {'; '.join(wrong)}")


def _check_local_input(path: str) -> None:
    if "://" not in path or path.startswith("file://"):
        local = Path(path.removeprefix("file://"))
        if not local.exists():
            raise BatchInputError(f"input {path} does not exist")


def _check_outputs(spark: "SparkSession", paths: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to start when an output exists (unless overwriting), before any work is done."""
    if overwrite:
        return
    jvm = spark.sparkContext._jvm  # Hadoop's FileSystem answers for local paths, s3a:// and hdfs:// alike
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for path in paths:
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        if hadoop_path.getFileSystem(hadoop_conf).exists(hadoop_path):
            raise BatchInputError(f"output {path} already exists; choose another --output or pass --overwrite")
