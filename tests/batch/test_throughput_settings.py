"""What the batch job does for throughput on local[2]: splits, Parquet encodings, the preloaded, frozen daemon, the JIT options."""

from __future__ import annotations

import gc
import glob
import os
import sys

import pyarrow.parquet as pq
import pytest

from credit_pd.batch.job import SPARK_CONF, read_input, run_job, split_count
from credit_pd.batch.scoring import distinct_valued_columns
from credit_pd.batch.settings import INPUT_SPLIT_BYTES, JVM_JIT_OPTIONS, BatchJobConfig

DICTIONARY_ENCODINGS = {"PLAIN_DICTIONARY", "RLE_DICTIONARY"}


@pytest.mark.parametrize(
    ("size", "parallelism", "splits"),
    [
        (0, 2, 2),  # an empty book: still a whole wave
        (INPUT_SPLIT_BYTES, 2, 2),
        (7 * INPUT_SPLIT_BYTES, 2, 8),  # 7 pieces would leave a core idle for the last one
        (229_515_661, 2, 14),  # the benchmark's 1,000,000-row book
        (INPUT_SPLIT_BYTES + 1, 4, 4),
    ],
)
def test_splits_are_a_whole_number_of_waves_over_the_cores(size, parallelism, splits):
    assert split_count(size, parallelism) == splits
    assert size / splits <= INPUT_SPLIT_BYTES


def test_a_csv_book_is_read_in_a_whole_number_of_waves(spark, shipped_model, small_sample_path, tmp_path):
    config = BatchJobConfig(str(small_sample_path), str(tmp_path / "out"), model_tag=shipped_model.model_tag)
    frame = read_input(spark, config, shipped_model.schema, multiline=False)
    parallelism = spark.sparkContext.defaultParallelism
    assert frame.rdd.getNumPartitions() == split_count(small_sample_path.stat().st_size, parallelism)


@pytest.fixture(scope="module")
def scores_files(spark, shipped_model, small_sample_path, tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("batch-encodings")
    summary = run_job(
        spark,
        shipped_model,
        BatchJobConfig(str(small_sample_path), str(out), model_tag=shipped_model.model_tag, arrow_batch_size=2_000),
    )
    files = sorted(glob.glob(os.path.join(summary.scores_path, "*.parquet")))
    assert files and summary.rows_scored > 1_000
    return files


def column_encodings(path: str, name: str) -> set[str]:
    metadata = pq.ParquetFile(path).metadata
    index = metadata.schema.names.index(name)
    return {e for g in range(metadata.num_row_groups) for e in metadata.row_group(g).column(index).encodings}


def test_distinct_valued_columns_are_written_without_a_dictionary(scores_files, shipped_model):
    plain = distinct_valued_columns(shipped_model.schema.id_column, 10)
    assert {"pd", "raw_score", "contribution_1", "value_10", "reason_4_contribution"} <= set(plain)
    for path in scores_files:
        for name in plain:
            assert not column_encodings(path, name) & DICTIONARY_ENCODINGS, name


def test_low_cardinality_text_keeps_its_dictionary(scores_files):
    for path in scores_files:
        for name in ("feature_1", "grade", "model_tag", "reason_1"):
            assert column_encodings(path, name) & DICTIONARY_ENCODINGS, name


def test_python_workers_fork_from_the_daemon_that_imported_the_scoring_code(spark):
    def probe(batches):
        import pandas as pd

        with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
            parent = handle.read().replace(b"\0", b" ").decode()
        for _ in batches:
            yield pd.DataFrame(
                {
                    "parent": [parent],
                    "preloaded": ["credit_pd.batch.job" in sys.modules],
                    "frozen": [gc.get_freeze_count()],
                }
            )

    rows = spark.range(4).repartition(2).mapInPandas(probe, "parent string, preloaded boolean, frozen long").collect()
    assert rows and all("-m credit_pd.batch.daemon" in row["parent"] and row["preloaded"] for row in rows)
    # The daemon's imports sit in the collector's permanent generation: no collection in a worker walks them.
    assert all(row["frozen"] > 50_000 for row in rows)


def test_driver_and_executor_jvms_get_the_jit_options():
    assert (
        SPARK_CONF["spark.driver.extraJavaOptions"] == SPARK_CONF["spark.executor.extraJavaOptions"] == JVM_JIT_OPTIONS
    )
    assert all(option.startswith("-XX:Tier4") for option in JVM_JIT_OPTIONS.split())


def test_the_sessions_jvm_runs_with_the_jit_options(spark):
    jvm = spark.sparkContext._jvm
    arguments = set(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert set(JVM_JIT_OPTIONS.split()) <= arguments
    flag = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    ).getVMOption("Tier4InvocationThreshold")
    assert flag.getValue() == "50000"
