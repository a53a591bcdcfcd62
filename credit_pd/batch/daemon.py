"""Spark's Python daemon with the scoring code imported once, before it forks the workers.

PySpark starts each Python worker by forking its daemon; every new worker then imported pandas,
pyarrow, LightGBM and the core on its first task (~1.7 CPU s each, seen as 8% of the workers'
samples in a py-spy profile of the batch benchmark). Importing them here makes every fork start
with them loaded (copy-on-write). Nothing runs at import beyond module definitions: no thread
pool or OpenMP region is started before the fork. Selected by `spark.python.daemon.module`
(`credit_pd.batch.job.SPARK_CONF`).

The imported objects are then frozen (`gc.freeze`): moved to the collector's permanent generation,
so no collection in a worker traverses them again. Without it every full collection in a worker
walked the ~160,000 objects of these imports: PySpark's daemon collects after each task, and the
collector's own full collections while scoring came every couple of batches (the 20,000 warning
lists of a batch survive its young collections); together ~15-25% of a worker's CPU time in the
in-process path. Frozen objects are also not written to by the collector, so the forked workers
keep sharing their pages with the daemon (copy-on-write).
"""

from __future__ import annotations

import gc

from pyspark import daemon

import credit_pd.batch.job  # noqa: F401  (the import is the point: workers inherit it)

gc.freeze()

if __name__ == "__main__":
    daemon.manager()
