"""The model as it travels to the executors: plain data, rebuilt into a `ScoringModel` per task.

Kept apart from `model.py` (which resolves tags in the BentoML store on the driver) so that the
executors' Python workers import LightGBM and the core only: BentoML costs seconds of start-up
and hundreds of MB per worker, and executors never touch the model store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb

from credit_pd.schema import DatasetSchema
from credit_pd.scoring_model import ScoringModel


@dataclass(frozen=True)
class ShippedModel:
    """Everything an executor needs to score: the booster as text and the stored scoring spec."""

    model_tag: str
    booster_text: str
    spec: Mapping[str, Any]

    def rebuild(self, num_threads: int = 1) -> ScoringModel:
        """The scoring model the service loads: same booster file, same spec (`ScoringModel.from_parts`)."""
        booster = lgb.Booster(model_str=self.booster_text)
        return ScoringModel.from_parts(booster, self.spec, num_threads=num_threads)

    @property
    def schema(self) -> DatasetSchema:
        return DatasetSchema.model_validate(self.spec["schema"])
