"""The Spark side of a batch run: session, input checks, the two mapInPandas passes, the summary.

Pass 1 validates and scores every row (`mapInPandas`, Arrow batches) and writes the scores;
pass 2 re-reads and re-validates the input and writes only the rejected rows with their reasons
(skipped, with an empty rejects output, when pass 1 scored every row).
Validation is cheap next to TreeSHAP, so reading twice costs less than caching a book-sized
intermediate; and every input row ends up in exactly one of the two outputs.

Accounting is exact and checked: a census before the passes counts the rows in and finds every id
that appears more than once in the whole book (one shuffle of the id column: a full-book check
cannot be done per partition); after the passes, rows in = scored + rejected or the job fails
(`BatchAccountingError`). Repeated ids are a documented choice: every row of such an id goes to
rejects with the count (which of them is right cannot be told), unless more than
`MAX_DUPLICATE_IDS` ids repeat, when the whole book is refused (it looks appended to itself).

CSV is read by the core's reading rule (`credit_pd.dataset`): UTF-8 with or without BOM, LF,
CRLF or CR line ends, quoted fields may hold line breaks. A local book is checked before Spark
starts (`check_before_spark`: encoding errors name the file line); a book with a quote
character anywhere is parsed in Spark's `multiLine` mode, which reads each file in one task, and
is then repartitioned into `split_count` pieces so the scoring still uses every core.
Paths that cannot work (input missing, output an existing file, a non-empty directory, an
unwritable parent) are refused before Spark starts, in one line.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from credit_pd.batch.scoring import BatchScorer, distinct_valued_columns, scores_ddl, top_k_count
from credit_pd.batch.settings import (
    CORRUPT_RECORD_COLUMN,
    INPUT_SPLIT_BYTES,
    JVM_JIT_OPTIONS,
    PARQUET_NO_DICTIONARY,
    REJECTS_DIR,
    SCORES_DIR,
    BatchJobConfig,
)
from credit_pd.batch.shipped import ShippedModel
from credit_pd.batch.validation import REJECT_REASON_COLUMN, validate_batch
from credit_pd.dataset import SAVE_AS_UTF8, check_text_file
from credit_pd.errors import CreditPDError, DatasetError
from credit_pd.schema import DatasetSchema, FeatureType

if TYPE_CHECKING:
    from pyspark.broadcast import Broadcast
    from pyspark.sql import DataFrame, SparkSession

# Ids repeated in one book beyond which the book is refused instead of rejecting their rows: the
# census collects the repeated ids to the driver and ships them to every task.
MAX_DUPLICATE_IDS = 10_000
MAX_PARTITION_BYTES_CONF = "spark.sql.files.maxPartitionBytes"
# Session settings every batch run needs, each with its reason.
SPARK_CONF = {
    # pandas <-> Spark through Arrow only. With pandas 3, PySpark 4's non-Arrow path turns a
    # missing value of a `str` or categorical column into the text "nan" (and fails on Arrow-backed
    # strings); tests/batch/test_pandas_arrow.py shows it. With the fallback off, an Arrow failure
    # is an error instead of a silent switch to that path.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # Input splits of at most INPUT_SPLIT_BYTES; each run sets its own size (`split_count`).
    MAX_PARTITION_BYTES_CONF: str(INPUT_SPLIT_BYTES),
    # Spark's own stage progress bar is the job's progress report.
    "spark.ui.showConsoleProgress": "true",
    # Parquet output compressed with zstd: smaller than snappy for these repetitive nested columns.
    "spark.sql.parquet.compression.codec": "zstd",
    # Python workers fork from a daemon that has the scoring code imported (credit_pd/batch/daemon.py).
    "spark.python.daemon.module": "credit_pd.batch.daemon",
    # Fewer, later C2 compilations (settings.JVM_JIT_OPTIONS). The driver's only takes effect when
    # this session starts the JVM (local mode, the CLI, the tests); under spark-submit set it there.
    # A --conf of either key replaces these options (it does not add to them).
    "spark.driver.extraJavaOptions": JVM_JIT_OPTIONS,
    "spark.executor.extraJavaOptions": JVM_JIT_OPTIONS,
    # Executors' Python workers: quiet PySpark's blanket pandas-3 FutureWarning (see environment.py).
    "spark.executorEnv.PYTHONWARNINGS": "ignore:PySpark does not yet fully support pandas:FutureWarning",
}
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


class BatchInputError(CreditPDError):
    """The input cannot be scored as a whole (missing columns, wrong types, no file, output exists)."""


class BatchAccountingError(CreditPDError):
    """Rows in != rows scored + rows rejected: the outputs are not to be used."""


@dataclass(frozen=True)
class InputCheck:
    """What the checks before Spark found: may the CSV book hold quoted line breaks (None: not looked, remote or Parquet)."""

    quoted: bool | None = None


@dataclass(frozen=True)
class Census:
    """Rows in the input and the ids that appear more than once (id -> rows with it)."""

    rows: int
    duplicates: Mapping[str, int]


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
    # Rows the census counted in the input (rows_scored + rows_rejected when the books balance).
    rows_in: int = 0
    # Wall time of the census (read + one shuffle of the id column), included in `seconds`.
    census_seconds: float = 0.0
    duplicate_ids: int = 0

    @property
    def balanced(self) -> bool:
        return self.rows_scored + self.rows_rejected == self.rows_in

    @property
    def rows_per_s(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        check = "=" if self.balanced else "!= (MISMATCH)"
        repeated = f", {self.duplicate_ids:,} repeated ids rejected" if self.duplicate_ids else ""
        return (
            f"batch_score: {self.rows_in:,} rows in {check} {self.rows_scored:,} scored + {self.rows_rejected:,} rejected "
            f"({self.rejects_path}){repeated}, {self.rows_per_s:,.0f} rows/s over {self.seconds:.1f} s, output {self.scores_path}"
        )


def check_accounting(summary: JobSummary) -> JobSummary:
    """The books must balance: every row in is scored or rejected, exactly once."""
    if not summary.balanced:
        raise BatchAccountingError(
            f"{summary.rows_in:,} rows in but {summary.rows_scored:,} scored + {summary.rows_rejected:,} rejected = "
            f"{summary.rows_scored + summary.rows_rejected:,}: rows were lost or counted twice; do not use "
            f"{summary.scores_path} or {summary.rejects_path}"
        )
    return summary


def build_session(
    master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "credit-pd-batch-score"
) -> SparkSession:
    """A SparkSession with SPARK_CONF; `master` None leaves it to spark-submit (or pyspark's local default)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def run_job(
    spark: SparkSession, shipped: ShippedModel, config: BatchJobConfig, checked: InputCheck | None = None
) -> JobSummary:
    """Validate, score and write; returns the counts once both outputs are committed and balance.

    `checked` is `check_before_spark`'s answer when the caller ran it already (the CLI does, before
    starting Spark); otherwise it runs here.
    """
    checked = checked or check_before_spark(config)
    scores_path, rejects_path = output_paths(config.output_path)
    _check_outputs(spark, (scores_path, rejects_path), config.overwrite)
    raw = read_input(spark, config, shipped.schema, multiline=checked.quoted is not False)
    spark.conf.set(ARROW_BATCH_CONF, str(config.arrow_batch_size))
    started = time.perf_counter()
    census = take_census(raw, shipped.schema)
    counted = time.perf_counter()
    write_scores(spark, raw, shipped, config, scores_path, census.duplicates)
    scored = time.perf_counter()
    rows_scored = spark.read.parquet(scores_path).count()  # the committed output's Parquet footers
    if rows_scored == census.rows:
        # Every row scored: validation is deterministic, so pass 2 would find no reject. Skipping it
        # saves a full read and validation of the book (~20% of a clean run's CPU).
        write_no_rejects(raw, config, rejects_path)
    else:
        write_rejects(raw, shipped, config, rejects_path, census.duplicates)
    finished = time.perf_counter()
    rows_rejected = spark.read.parquet(rejects_path).count()
    return check_accounting(
        JobSummary(
            rows_scored,
            rows_rejected,
            finished - started,
            scores_path,
            rejects_path,
            scores_seconds=scored - counted,
            rejects_seconds=finished - scored,
            rows_in=census.rows,
            census_seconds=counted - started,
            duplicate_ids=len(census.duplicates),
        )
    )


def take_census(raw: DataFrame, schema: DatasetSchema) -> Census:
    """Rows in, and every id on more than one well-formed row, in one job (one shuffle of the id column).

    Missing ids (null, empty, the missing marker) are not repeats: validation rejects them anyway.
    A second job collects the repeated ids only when there are some.
    """
    from pyspark.sql import functions as F

    ident = F.col(schema.id_column).cast("string")
    well_formed = F.col(CORRUPT_RECORD_COLUMN).isNull() if CORRUPT_RECORD_COLUMN in raw.columns else F.lit(True)
    countable = well_formed & ident.isNotNull() & ~ident.isin("", schema.missing_marker)
    per_id = (
        raw.select(ident.alias("id"), F.when(countable, 1).otherwise(0).alias("countable"))
        .groupBy("id")
        .agg(F.count(F.lit(1)).alias("rows"), F.sum("countable").alias("repeats"))
    )
    totals = per_id.agg(
        F.sum("rows").alias("rows"), F.sum(F.when(F.col("repeats") > 1, 1).otherwise(0)).alias("repeated")
    ).first()
    assert totals is not None  # a global aggregate always answers one row, even over no input
    rows, repeated = int(totals["rows"] or 0), int(totals["repeated"] or 0)
    if repeated > MAX_DUPLICATE_IDS:
        example = per_id.where(F.col("repeats") > 1).first()
        assert example is not None  # repeated > 0 counts at least one such id
        raise BatchInputError(
            f"{repeated:,} ids appear more than once in the input (e.g. {example['id']!r}, {example['repeats']} times), "
            f"more than the {MAX_DUPLICATE_IDS:,} whose rows the job rejects: is the book appended to itself? "
            "Deduplicate it first"
        )
    duplicates = (
        {} if not repeated else {row["id"]: int(row["repeats"]) for row in per_id.where(F.col("repeats") > 1).collect()}
    )
    return Census(rows=rows, duplicates=duplicates)


def write_scores(
    spark: SparkSession,
    raw: DataFrame,
    shipped: ShippedModel,
    config: BatchJobConfig,
    path: str,
    duplicates: Mapping[str, int] | None = None,
) -> None:
    """Pass 1: the model broadcast once per executor, every valid row scored and written."""
    model = spark.sparkContext.broadcast(shipped)
    k = top_k_count(config.top_k, len(shipped.schema.features))
    function = partial(
        score_partition,
        model=model,
        top_k=config.top_k,
        reject_unseen=config.unseen_categories == "reject",
        duplicates=dict(duplicates or {}),
    )
    plain = {
        PARQUET_NO_DICTIONARY.format(column=c): "false" for c in distinct_valued_columns(shipped.schema.id_column, k)
    }
    scores = raw.mapInPandas(function, scores_ddl(shipped.schema.id_column, k))
    scores.write.options(**plain).mode(_write_mode(config)).parquet(path)
    model.unpersist()


def write_rejects(
    raw: DataFrame,
    shipped: ShippedModel,
    config: BatchJobConfig,
    path: str,
    duplicates: Mapping[str, int] | None = None,
) -> None:
    """Pass 2: the rows pass 1 left out, as they came in, with their reasons."""
    vocabularies = shipped.spec["encoder"]["categorical"]
    function = partial(
        reject_partition,
        schema_spec=shipped.spec["schema"],
        vocabularies=vocabularies,
        reject_unseen=config.unseen_categories == "reject",
        duplicates=dict(duplicates or {}),
    )
    columns = [c for c in raw.columns if c != CORRUPT_RECORD_COLUMN]
    raw.mapInPandas(function, rejects_ddl(columns)).write.mode(_write_mode(config)).parquet(path)


def write_no_rejects(raw: DataFrame, config: BatchJobConfig, path: str) -> None:
    """The rejects output of a book without rejects: no rows, the same columns as `write_rejects`.

    Built from the input's plan under an always-false filter, which Spark's optimiser turns into an
    empty relation: nothing is read, and no driver-side Python data goes through Arrow (an empty
    `createDataFrame` cost up to ~15 s of a cold JVM's time in the benchmark).
    """
    from pyspark.sql import functions as F

    columns = [F.col(c).cast("string") for c in raw.columns if c != CORRUPT_RECORD_COLUMN]
    empty = raw.select(*columns, F.lit(None).cast("string").alias(REJECT_REASON_COLUMN)).where(F.lit(False))
    empty.write.mode(_write_mode(config)).parquet(path)


def _write_mode(config: BatchJobConfig) -> str:
    return "overwrite" if config.overwrite else "errorifexists"


def output_paths(output: str) -> tuple[str, str]:
    base = output.rstrip("/")
    return f"{base}/{SCORES_DIR}", f"{base}/{REJECTS_DIR}"


def rejects_ddl(columns: list[str]) -> str:
    """Spark DDL of the rejects output: every input column as text, then the reason."""
    return ", ".join([*(f"`{c}` string" for c in columns), f"`{REJECT_REASON_COLUMN}` string"])


def score_partition(
    batches: Iterator[pd.DataFrame],
    model: Broadcast[ShippedModel],
    top_k: int | None,
    reject_unseen: bool = False,
    duplicates: Mapping[str, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """mapInPandas function: rebuild the model once per task, then validate and score each Arrow batch."""
    shipped = model.value
    scoring_model = shipped.rebuild(num_threads=1)
    scorer = BatchScorer(scoring_model, shipped.model_tag, scoring_model.schema, top_k)
    vocabularies = scoring_model.encoder.categorical
    for batch in batches:
        valid = validate_batch(
            batch,
            scoring_model.schema,
            vocabularies if reject_unseen else None,
            vocabularies=vocabularies,
            duplicate_ids=duplicates,
        )
        yield for_arrow(scorer.score(valid.typed))


def reject_partition(
    batches: Iterator[pd.DataFrame],
    schema_spec: Mapping[str, Any],
    vocabularies: Mapping[str, Any],
    reject_unseen: bool = False,
    duplicates: Mapping[str, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """mapInPandas function: the rows `score_partition` leaves out, with their reasons."""
    schema = DatasetSchema.model_validate(schema_spec)
    for batch in batches:
        yield for_arrow(
            validate_batch(
                batch,
                schema,
                vocabularies if reject_unseen else None,
                vocabularies=vocabularies,
                duplicate_ids=duplicates,
            ).rejects
        )


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


def read_input(spark: SparkSession, config: BatchJobConfig, schema: DatasetSchema, multiline: bool = True) -> DataFrame:
    """The input as a DataFrame of the columns validation needs, checked as a whole first.

    `multiline`: parse CSV in Spark's multiLine mode (quoted line breaks), repartitioned to keep
    every core busy; False only when the book is known to hold no quote character.
    """
    _check_local_input(config.input_path)
    _set_split_size(spark, config.input_path)
    fmt = detect_format(config.input_path, config.input_format)
    if fmt == "csv":
        frame = _read_csv(spark, config.input_path, schema, multiline)
        return _spread(spark, frame, config.input_path) if multiline else frame
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
    problems = [
        f"{label} columns {names}"
        for label, names in (("repeated", repeated), ("missing", missing), ("unknown", unknown))
        if names
    ]
    if problems:
        hint = f" (is the separator {schema.separator!r}?)" if len(columns) == 1 else ""
        if any("\x00" in c or "\ufffd" in c for c in columns):
            hint = f" (the header is not UTF-8 text: UTF-16? {SAVE_AS_UTF8})"
        raise BatchInputError(f"input {where}: {'; '.join(problems)} for the model's schema {schema.name!r}{hint}")
    return [c for c in (schema.id_column, schema.target_column, *schema.feature_names) if c in columns]


def _read_csv(spark: SparkSession, path: str, schema: DatasetSchema, multiline: bool = True) -> DataFrame:
    """Every column as text (parsing is validation's job), malformed lines kept for the rejects."""
    from pyspark.sql.types import StringType, StructField, StructType

    options = {
        "header": "true",
        "sep": schema.separator,
        "quote": '"',
        "escape": '"',
        "encoding": "UTF-8",
        "multiLine": "true" if multiline else "false",
    }
    header = spark.read.options(**options).csv(path).columns
    columns = check_columns(header, schema, path)
    text_schema = StructType(
        [StructField(c, StringType()) for c in header] + [StructField(CORRUPT_RECORD_COLUMN, StringType())]
    )
    frame = (
        spark.read.schema(text_schema)
        .options(
            **options,
            nullValue=schema.missing_marker,
            mode="PERMISSIVE",
            enforceSchema="false",
            columnNameOfCorruptRecord=CORRUPT_RECORD_COLUMN,
        )
        .csv(path)
    )
    return frame.select(*columns, CORRUPT_RECORD_COLUMN)


def split_count(size: int, parallelism: int) -> int:
    """How many input splits a book of `size` bytes is read in: pieces of at most INPUT_SPLIT_BYTES,
    as many as a whole number of waves of `parallelism` tasks, so no wave ends with idle cores
    (7 splits on 2 cores left one core idle for the whole last task)."""
    pieces = max(1, math.ceil(size / INPUT_SPLIT_BYTES))
    return math.ceil(pieces / parallelism) * parallelism


def _set_split_size(spark: SparkSession, path: str) -> None:
    """The session's split size for this input: `split_count` pieces of equal size (read when the passes run)."""
    size = _input_bytes(spark, path)
    splits = split_count(size, spark.sparkContext.defaultParallelism)
    spark.conf.set(MAX_PARTITION_BYTES_CONF, str(max(1, math.ceil(size / splits))))


def _input_bytes(spark: SparkSession, path: str) -> int:
    """Bytes under an input path (a file or a directory), local or remote, as Hadoop counts them."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set while the session's context is running, as it is here
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    summary = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).getContentSummary(hadoop_path)
    return int(summary.getLength())


def _spread(spark: SparkSession, frame: DataFrame, path: str) -> DataFrame:
    """A multiLine CSV is one task per file: repartition it into `split_count` pieces."""
    wanted = split_count(_input_bytes(spark, path), spark.sparkContext.defaultParallelism)
    return frame.repartition(wanted) if frame.rdd.getNumPartitions() < wanted else frame


def check_before_spark(config: BatchJobConfig) -> InputCheck:
    """Every check of the paths that needs no Spark, so a wrong path fails in seconds with one line.

    Local CSV books are read once through the core's reading rule (`check_text_file`): an encoding
    problem names the file and line, and a book with no quote character is read line by line.
    """
    _check_local_input(config.input_path)
    check_local_output(config.output_path, config.overwrite)
    if detect_format(config.input_path, config.input_format) != "csv" or not _is_local(config.input_path):
        return InputCheck(quoted=None)
    try:
        quoted = [check_text_file(file) for file in _data_files(Path(config.input_path.removeprefix("file://")))]
    except DatasetError as exc:
        raise BatchInputError(f"input {exc}") from None
    return InputCheck(quoted=any(quoted))


def check_local_output(output: str, overwrite: bool) -> None:
    """A local --output must be a new or empty directory (or a previous run's, with --overwrite) under a writable parent."""
    if not _is_local(output):
        return  # s3a:// and hdfs:// are checked through Hadoop once Spark runs (_check_outputs)
    path = Path(output.removeprefix("file://"))
    if path.exists() and not path.is_dir():
        raise BatchInputError(
            f"output {output} is an existing file; --output names a directory (it gets {SCORES_DIR}/ and {REJECTS_DIR}/)"
        )
    if path.is_dir():
        entries = sorted(entry.name for entry in path.iterdir())
        others = [name for name in entries if name not in (SCORES_DIR, REJECTS_DIR)]
        if entries and not overwrite:
            raise BatchInputError(
                f"output {output} already exists and is not empty ({', '.join(entries[:5])}); "
                "choose another --output or pass --overwrite"
            )
        if others:
            raise BatchInputError(
                f"output {output} holds more than a previous run's {SCORES_DIR}/ and {REJECTS_DIR}/ "
                f"({', '.join(others[:5])}); --overwrite replaces only those: choose another --output"
            )
    parent = next(p for p in [path, *path.parents] if p.exists())
    if not parent.is_dir():
        raise BatchInputError(f"output {output} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BatchInputError(f"output {output} cannot be created: {parent} is not writable by this user")


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _data_files(path: Path) -> list[Path]:
    """The files Spark reads for a path: the file, or a directory's files except hidden and _ ones."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    )


def _check_parquet_types(frame: DataFrame, schema: DatasetSchema) -> None:
    """Parquet columns must be text or of the feature's kind; validation then checks each value."""
    from pyspark.sql.types import BooleanType, NumericType, StringType

    accepted = {
        FeatureType.NUMERIC: (NumericType, StringType),
        FeatureType.BOOLEAN: (BooleanType, NumericType, StringType),
        FeatureType.CATEGORICAL: (StringType, NumericType),
    }
    types = {field.name: field.dataType for field in frame.schema.fields}
    wrong = [
        f"{spec.name} is {types[spec.name].simpleString()} (expected {spec.type.value}: "
        f"{' or '.join(t.__name__.removesuffix('Type').lower() for t in accepted[spec.type])})"
        for spec in schema.features
        if not isinstance(types[spec.name], accepted[spec.type])
    ]
    if not isinstance(types[schema.id_column], (StringType, NumericType)):
        wrong.append(f"{schema.id_column} is {types[schema.id_column].simpleString()} (expected string)")
    if wrong:
        raise BatchInputError(f"input columns of the wrong type: {'; '.join(wrong)}")


def _check_local_input(path: str) -> None:
    if "://" not in path or path.startswith("file://"):
        local = Path(path.removeprefix("file://"))
        if not local.exists():
            raise BatchInputError(f"input {path} does not exist")


def _check_outputs(spark: SparkSession, paths: tuple[str, ...], overwrite: bool) -> None:
    """Refuse to start when an output exists (unless overwriting), before any work is done."""
    if overwrite:
        return
    jvm = spark.sparkContext._jvm  # Hadoop's FileSystem answers for local paths, s3a:// and hdfs:// alike
    assert jvm is not None  # set while the session's context is running, as it is here
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for path in paths:
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        if hadoop_path.getFileSystem(hadoop_conf).exists(hadoop_path):
            raise BatchInputError(f"output {path} already exists; choose another --output or pass --overwrite")
