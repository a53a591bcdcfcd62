"""Batch-scoring defaults, each with its reason. The CLI (`batch_score.py --help`) overrides them."""

from __future__ import annotations

from dataclasses import dataclass

from credit_pd.config import DEFAULT_MODEL_TAG
from credit_pd.explanation import DEFAULT_TOP_K

# Rows per Arrow batch handed to the scoring function. TreeSHAP is vectorised over the batch, so
# larger batches amortise the per-call overhead; 10,000 (Spark's default) keeps a batch's
# contribution matrix (10,000 x 41 float64 = 3.3 MB) and its Arrow copies small per Python worker.
DEFAULT_ARROW_BATCH_SIZE = 10_000
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
