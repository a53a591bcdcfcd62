"""`python batch_score.py`: explained PD scoring of a CSV or Parquet book on Spark.

Everything that can be checked without Spark is checked first (model tag, local input and its
encoding, local output, Java, pyspark, options), so a wrong tag, a bad --output or a missing Java
fails in seconds with one clear line instead of after a cluster has spun up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from credit_pd.batch.environment import prepare_python_workers, require_java, require_pyspark
from credit_pd.batch.model import ship_model
from credit_pd.batch.settings import DEFAULT_ARROW_BATCH_SIZE, BatchJobConfig
from credit_pd.categories import UNSEEN_POLICIES
from credit_pd.config import DEFAULT_MODEL_TAG
from credit_pd.errors import CreditPDError
from credit_pd.explanation import DEFAULT_TOP_K

# Exit status of a run refused before or during Spark work for a reason the message names.
EXIT_USAGE = 2
# Exit status of a run whose outputs were written but do not balance (rows in != scored + rejected).
EXIT_ACCOUNTING = 3


def top_k_value(text: str) -> int | None:
    """A positive int, or "all" (None: every feature)."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def spark_setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="batch_score.py",
        description="Score a book of applications with PDs and top-k TreeSHAP contributions on Apache Spark. "
        "Writes OUTPUT/scores (Parquet) and OUTPUT/rejects (rows failing the model's schema, with the reason).",
    )
    parser.add_argument(
        "--input",
        required=True,
        help="CSV in the dataset's format or Parquet; a local path, file://, s3a:// or hdfs://",
    )
    parser.add_argument(
        "--output", required=True, help="output directory (local, s3a:// or hdfs://); gets scores/ and rejects/"
    )
    parser.add_argument(
        "--model-tag", default=DEFAULT_MODEL_TAG, help=f"BentoML model store tag (default {DEFAULT_MODEL_TAG})"
    )
    parser.add_argument(
        "--top-k",
        type=top_k_value,
        default=DEFAULT_TOP_K,
        help=f"contributions kept per row, or 'all' (default {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--master",
        default=None,
        help="Spark master, e.g. local[2]; default: spark-submit's, or local[*] when run with python",
    )
    parser.add_argument(
        "--arrow-batch-size",
        type=positive_int,
        default=DEFAULT_ARROW_BATCH_SIZE,
        help=f"rows per Arrow batch handed to the scoring function (default {DEFAULT_ARROW_BATCH_SIZE})",
    )
    parser.add_argument(
        "--input-format",
        choices=("csv", "parquet"),
        default=None,
        help="default: from the extension (.csv = CSV, else Parquet)",
    )
    parser.add_argument(
        "--unseen-categories",
        choices=UNSEEN_POLICIES,
        default="score_as_missing",
        help="a category never seen in training: scored as missing with a warning (default), or the row rejected",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing OUTPUT/scores and OUTPUT/rejects")
    parser.add_argument(
        "--conf",
        type=spark_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Spark setting, repeatable (e.g. spark.jars.packages=org.apache.hadoop:hadoop-aws:3.5.0 for s3a://)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = BatchJobConfig(
        input_path=args.input,
        output_path=args.output,
        model_tag=args.model_tag,
        top_k=args.top_k,
        arrow_batch_size=args.arrow_batch_size,
        input_format=args.input_format,
        overwrite=args.overwrite,
        unseen_categories=args.unseen_categories,
    )
    from credit_pd.batch.job import BatchAccountingError, build_session, check_before_spark, run_job

    try:
        shipped = ship_model(config.model_tag)
        checked = check_before_spark(config)
        require_pyspark()
        require_java()
        prepare_python_workers()
        spark = build_session(args.master, dict(args.conf))
        try:
            summary = run_job(spark, shipped, config, checked)
        finally:
            spark.stop()
    except CreditPDError as exc:
        print(f"batch_score: error: {exc}", file=sys.stderr)
        return EXIT_ACCOUNTING if isinstance(exc, BatchAccountingError) else EXIT_USAGE
    print(summary.line())
    return 0
