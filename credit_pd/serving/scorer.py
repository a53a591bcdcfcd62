"""Scoring a merged batch: one vectorised LightGBM + TreeSHAP call for every row that asks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel

from credit_pd.explanation import rank_contributions
from credit_pd.monitoring.live import LiveMonitor, NullMonitor
from credit_pd.scoring_model import ScoringModel
from credit_pd.serving.contract import ExplanationOut, FeatureContributionOut, PredictionOut


class PDScorer:
    """Scores a merged batch: one vectorised LightGBM + TreeSHAP call for all rows that ask."""

    def __init__(self, model: ScoringModel, model_tag: str, monitor: LiveMonitor | NullMonitor = NullMonitor()) -> None:
        self.model = model
        self.model_tag = model_tag
        self.monitor = monitor  # live drift metrics (credit_pd.monitoring.live); observes each scored batch
        self.feature_names = list(model.feature_names)

    def score(self, applications: Sequence[BaseModel]) -> list[PredictionOut]:
        records = [app.model_dump(include=set(self.feature_names)) for app in applications]
        matrix = self.model.encoder.encode_records(records)
        explained = np.array([app.explain for app in applications], dtype=bool)
        raw = np.empty(len(records))
        contributions = base = None
        if explained.any():
            explanation = self.model.explain(matrix[explained])
            raw[explained] = explanation.raw_score
            contributions, base = explanation.contributions, explanation.base_value
        if (~explained).any():
            raw[~explained] = self.model.raw_score(matrix[~explained])
        pds = self.model.calibrator.apply(raw)
        self.monitor.observe(records, matrix, pds)
        explained_rank = np.cumsum(explained) - 1
        # model_construct: every value below is produced here with the declared type, so
        # re-validating ~12 response objects per row would only cost latency in the hot path.
        return [
            PredictionOut.model_construct(
                uuid=app.uuid,
                pd=float(pds[i]),
                model_tag=self.model_tag,
                explanation=self._explanation(app, records[i], contributions[explained_rank[i]], base[explained_rank[i]], raw[i])
                if explained[i] else None,
                warnings=self._warnings(records[i]),
            )
            for i, app in enumerate(applications)
        ]

    def _explanation(self, app: BaseModel, record: dict, contributions: np.ndarray, base: float, raw: float) -> ExplanationOut:
        top_k = None if app.top_k == "all" else app.top_k
        ranked = rank_contributions(contributions, self.feature_names, record, top_k)
        return ExplanationOut.model_construct(
            base_value=float(base),
            raw_score=float(raw),
            contributions=[FeatureContributionOut.model_construct(feature=c.feature, value=c.value, contribution=c.contribution) for c in ranked],
        )

    def _warnings(self, record: dict) -> list[str]:
        encoder = self.model.encoder
        unseen = [
            f"{name}: value {value!r} was not seen in training; scored as missing"
            for name, value in encoder.unseen_categories(record).items()
        ]
        outside = [
            f"{name}: value {record[name]!r} is outside the training range [{low:g}, {high:g}]; scored as the nearest seen value"
            for name, (low, high) in encoder.out_of_training_range(record).items()
        ]
        return unseen + outside


