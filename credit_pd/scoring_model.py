"""The trained artefact: booster + feature encoder + probability calibration.

One object scores for `train.py`, the benchmark and the service, so a PD computed anywhere is
the same number. Explanations are exact TreeSHAP in the booster's log-odds; the calibrated PD is
a monotone map of that log-odds, so the ranking of contributions carries over to the PD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import lightgbm as lgb
import numpy as np
from scipy.special import expit

from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema


@dataclass(frozen=True)
class PlattCalibrator:
    """PD = sigmoid(slope * raw_log_odds + intercept).

    Platt scaling on the booster's log-odds, fitted on out-of-fold scores: it corrects the small
    over-confidence a refit on all rows has, keeps the PD monotone in the SHAP-explained score,
    and with two parameters cannot overfit ~1,000 positives the way isotonic regression can.
    Fitting lives in the training wing (`credit_pd.training.fit.fit_platt`), so scikit-learn
    stays out of the bento.
    """

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, raw_score: np.ndarray) -> np.ndarray:
        return expit(self.slope * np.asarray(raw_score, dtype=np.float64) + self.intercept)


@dataclass(frozen=True)
class Explanation:
    """Exact TreeSHAP of a batch: raw log-odds = base_value + contributions.sum(axis=1)."""

    base_value: np.ndarray  # (n_rows,)
    contributions: np.ndarray  # (n_rows, n_features)

    @property
    def raw_score(self) -> np.ndarray:
        return self.base_value + self.contributions.sum(axis=1)


@dataclass(frozen=True)
class ScoringModel:
    """Everything needed to turn a feature matrix into calibrated PDs and their explanations.

    `schema` is the dataset schema the model was trained on (with its example application): the
    service builds its request contract from it, so a stored model always carries its own API.
    """

    booster: lgb.Booster
    encoder: FeatureEncoder
    calibrator: PlattCalibrator
    schema: DatasetSchema
    num_threads: int = 1

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.encoder.feature_names

    def raw_score(self, matrix: np.ndarray, num_threads: int | None = None) -> np.ndarray:
        """Uncalibrated log-odds; `num_threads` overrides the model's thread count for this call."""
        return self.booster.predict(matrix, raw_score=True, num_threads=num_threads or self.num_threads)

    def predict_pd(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated PD from the explained raw score, so PD and explanation always agree."""
        return self.calibrator.apply(self.raw_score(matrix))

    def explain(self, matrix: np.ndarray, num_threads: int | None = None) -> Explanation:
        """LightGBM's native exact TreeSHAP (last column is the expected value); `num_threads` as in `raw_score`."""
        contrib = self.booster.predict(matrix, pred_contrib=True, num_threads=num_threads or self.num_threads)
        return Explanation(base_value=contrib[:, -1], contributions=contrib[:, :-1])

    def scoring_spec(self) -> dict[str, Any]:
        """The non-booster parts as plain data, stored beside the booster in the model store."""
        return {
            "schema": self.schema.model_dump(mode="json", exclude_none=True),
            "encoder": self.encoder.to_dict(),
            "calibration": {"method": "platt", "slope": self.calibrator.slope, "intercept": self.calibrator.intercept},
        }

    @classmethod
    def from_parts(cls, booster: lgb.Booster, spec: Mapping[str, Any], num_threads: int = 1) -> "ScoringModel":
        """Rebuild from a booster and `scoring_spec()`; checks the two agree on the columns."""
        encoder = FeatureEncoder.from_dict(spec["encoder"])
        if tuple(booster.feature_name()) != encoder.feature_names:
            raise ValueError(
                "booster and encoder disagree on feature order: "
                f"{booster.feature_name()[:3]}... vs {list(encoder.feature_names)[:3]}..."
            )
        if "schema" not in spec:
            raise ValueError("stored model carries no schema: it predates the stored-contract format; retrain it")
        schema = DatasetSchema.model_validate(spec["schema"])
        if tuple(schema.feature_names) != encoder.feature_names:
            raise ValueError("stored schema and encoder disagree on the features; the model entry is inconsistent")
        calibration = spec["calibration"]
        calibrator = PlattCalibrator(slope=calibration["slope"], intercept=calibration["intercept"])
        return cls(booster=booster, encoder=encoder, calibrator=calibrator, schema=schema, num_threads=num_threads)
