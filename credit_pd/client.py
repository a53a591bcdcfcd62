"""Turning dataset rows into `/predict` requests: used by the example client, benchmarks and tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from credit_pd.schema import DatasetSchema, FeatureType


def requests_from_frame(frame: pd.DataFrame, schema: DatasetSchema) -> list[dict[str, Any]]:
    """Loaded dataset rows as `/predict` application objects (JSON-ready: None for missing).

    Used by the example client, the load benchmark and the tests, so all of them send exactly
    what a client holding the dataset file would send.
    """
    records = []
    booleans = set(schema.names_of(FeatureType.BOOLEAN))
    for row in frame[[schema.id_column, *schema.feature_names]].itertuples(index=False, name=None):
        record: dict[str, Any] = {"uuid": str(row[0])}
        for name, value in zip(schema.feature_names, row[1:], strict=False):
            if value is None or (isinstance(value, float) and np.isnan(value)):
                record[name] = None
            elif name in booleans:
                record[name] = bool(value)
            else:
                record[name] = value if isinstance(value, str) else float(value)
        records.append(record)
    return records
