"""Spark for the batch tests: one local[2] session per test module, the project's session settings.

Java 17 is part of the machine's base image and pyspark comes with the `spark` extra (`make
install`); when either is missing the session fixture errors with the message that says what to
install, instead of skipping, so CI cannot pass without ever running Spark.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Small shuffles and no UI: the tests' data is tiny and ports are shared with other test processes.
TEST_SPARK_CONF = {"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"}


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    from credit_pd.batch.environment import prepare_python_workers, require_java, require_pyspark

    require_pyspark()
    require_java()
    prepare_python_workers()
    from credit_pd.batch.job import build_session

    session = build_session("local[2]", TEST_SPARK_CONF, app_name="credit-pd-batch-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shipped_model(trained_run):
    from credit_pd.batch.model import ship_model

    return ship_model(trained_run.model_tag)
