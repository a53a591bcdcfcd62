"""Batch-scoring defaults, each with its reason. The CLI (`batch_score.py --help`) overrides them."""

from __future__ import annotations

from dataclasses import dataclass

from credit_pd.config import DEFAULT_MODEL_TAG
from credit_pd.explanation import DEFAULT_TOP_K

# Rows per Arrow batch handed to the scoring function. Validation, encoding and TreeSHAP are
# vectorised over the batch, so larger batches amortise their per-call overhead: 20,000 costs ~7%
# less CPU per row than Spark's default 10,000 in the in-process path (31 vs 34 us/row; 50,000
# gains nothing more), and keeps a batch's contribution matrix (20,000 x 41 float64 = 6.6 MB)
# and its Arrow copies small per Python worker. A row's answer does not depend on its batch.
DEFAULT_ARROW_BATCH_SIZE = 20_000
# Parquet writer option (parquet-mr's per-column form) that turns dictionary encoding off for one
# column of the scores output. Dictionary encoding pays for low-cardinality text (feature names,
# grades, reason codes) but not for columns whose values are nearly all distinct (ids, PDs,
# contributions, input values as text): parquet-mr hashes every value into a dictionary until it
# overflows, which was ~40% of the JVM's task time in a profile of the 1M-row benchmark; without
# it, writing the scores costs ~30% less JVM CPU for ~20% more bytes (zstd still compresses them).
PARQUET_NO_DICTIONARY = "parquet.enable.dictionary#{column}"
# Largest input split (~70,000 CSV rows of the Klarna format). The job rounds the number of splits
# up to a whole number of waves over the cores (`job.split_count`), and pieces of this size keep a
# straggler short on a shared machine; a task's fixed cost (model rebuild ~5 ms, workers forked
# with the code imported) is small next to its ~5-10 s of scoring.
INPUT_SPLIT_BYTES = 16 * 1024 * 1024
# HotSpot options of the Spark JVMs (driver and executors; in local mode the driver runs the tasks):
# a method is compiled by C2, the optimising JIT, after 10x HotSpot's default invocations and
# loop iterations (Tier4*Threshold 5,000 / 15,000 / 40,000). Spark's generated code, its CSV,
# shuffle, Arrow and Parquet paths give C2 thousands of lukewarm methods: on the 1M-row benchmark
# book the JIT threads took ~23 CPU s (C2 ~19) beside ~36 s of task threads, on 2 cores. With
# these thresholds C2 took ~8 CPU s and the task threads no more time: the hot loops (parsing,
# encoding, Arrow copies) still pass them within a few seconds and get C2 code; the rest stays in
# C1's. Stopping at C1 altogether (-XX:TieredStopAtLevel=1) cut the JIT to ~2 s but nearly doubled
# the task time. HotSpot-only flags: other JVMs would refuse them; Spark 4 needs Java 17+ (HotSpot
# in the images this project builds).
JVM_JIT_OPTIONS = (
    "-XX:Tier4InvocationThreshold=50000 -XX:Tier4CompileThreshold=100000 -XX:Tier4BackEdgeThreshold=400000"
)
# Sub-directories of --output: the scored rows and the rejected ones, each a Parquet dataset.
SCORES_DIR = "scores"
REJECTS_DIR = "rejects"
# Java major version Spark 4 runs on (17 or 21), and the Debian package that provides it.
MIN_JAVA_MAJOR = 17
JAVA_PACKAGE = "openjdk-17-jre-headless"
# Column that Spark's CSV reader fills with the raw text of a line it cannot split into the header's fields.
CORRUPT_RECORD_COLUMN = "_corrupt_record"
# Longest piece of a malformed line quoted in its reject reason.
MAX_QUOTED_LINE = 200


@dataclass(frozen=True)
class BatchJobConfig:
    """One batch run: where to read, where to write, which model, how many contributions."""

    input_path: str
    output_path: str
    model_tag: str = DEFAULT_MODEL_TAG
    # None = every feature ("all" on the command line).
    top_k: int | None = DEFAULT_TOP_K
    arrow_batch_size: int = DEFAULT_ARROW_BATCH_SIZE
    # "csv" or "parquet"; None = from the path's extension (a directory of part files: parquet).
    input_format: str | None = None
    overwrite: bool = False
    # A category never seen in training: "score_as_missing" (scored down the missing-value branch,
    # listed in the row's warnings) or "reject" (the row goes to rejects), as the service's policy.
    unseen_categories: str = "score_as_missing"
