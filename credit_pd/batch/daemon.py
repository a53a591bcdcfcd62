"""Spark's Python daemon with the scoring code imported once, before it forks the workers.

PySpark starts each Python worker by forking its daemon; every new worker then imported pandas,
pyarrow, LightGBM and the core on its first task (~1.7 CPU s each, seen as 8% of the workers'
samples in a py-spy profile of the batch benchmark). Importing them here makes every fork start
with them loaded (copy-on-write). Nothing runs at import beyond module definitions: no thread
pool or OpenMP region is started before the fork. Selected by `spark.python.daemon.module`
(`credit_pd.batch.job.SPARK_CONF`).
"""

from __future__ import annotations

from pyspark import daemon

import credit_pd.batch.job  # noqa: F401  (the import is the point: workers inherit it)

if __name__ == "__main__":
    daemon.manager()
