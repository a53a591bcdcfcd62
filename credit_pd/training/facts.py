"""`ModelFacts`: what one training run established, typed, read by the model card and the store.

One object, built once per run from the run's own figures, so the card and `bentoml models get`
can never disagree and no figure is typed by hand.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from credit_pd.config import TrainingConfig
from credit_pd.schema import DatasetSchema, FeatureType
from credit_pd.scoring_model import ScoringModel
from credit_pd.training.fit import CrossValidationResult, ShapeChoice, explained_rows_per_s
from credit_pd.training.metrics import ForecastMetrics, grade_backtest

LIBRARIES = ("lightgbm", "scikit-learn", "shap", "bentoml", "pandas", "numpy")


@dataclass(frozen=True)
class DataFacts:
    """The training file, named by its file name (not a path of the machine that trained)."""

    file_name: str
    sha256: str
    n_rows: int
    n_labelled: int
    n_unlabelled: int
    n_positives: int
    default_rate: float


@dataclass(frozen=True)
class ShapeFacts:
    """The chosen shape, why, and what every candidate scored (mean over folds)."""

    name: str
    description: str
    num_leaves: int
    max_depth: int
    min_child_samples: int
    lambda_l2: float
    learning_rate: float
    reason: str
    chosen_per_fold: list[str]
    candidates_mean_inner_log_loss: dict[str, float]
    candidates_explained_rows_per_s: dict[str, float]


@dataclass(frozen=True)
class ModelFacts:
    model_tag: str
    schema_name: str
    id_column: str
    n_features: int
    feature_types: dict[str, int]
    monotone_features: list[str]
    data: DataFacts
    n_folds: int
    inner_share: float
    ece_bins: int
    shape: ShapeFacts
    final_rounds: int
    final_rounds_multiplier: float
    n_trees: int
    calibration: dict[str, Any]
    cv_pooled: ForecastMetrics
    cv_per_fold: list[ForecastMetrics]
    cv_summary: dict[str, dict[str, float]]
    cv_best_iterations: list[int]
    training_seconds: float
    explained_rows_per_s: float
    min_explained_rows_per_s: float
    explain_timing_rows: int
    num_threads: int
    library_versions: dict[str, str] = field(default_factory=dict)
    # The master-scale back-test of the out-of-fold PDs, one dict per grade (GradeBacktest.as_dict).
    grade_backtest: list[dict[str, Any]] = field(default_factory=list)

    def with_tag(self, tag: str) -> "ModelFacts":
        return replace(self, model_tag=tag)

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values for the store entry's metadata (the tag is the entry's own)."""
        facts = asdict(self)
        facts.pop("model_tag")
        return facts


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_run(schema: DatasetSchema, data_path: Path, frame: pd.DataFrame, labelled: np.ndarray, cv: CrossValidationResult,
                 choice: ShapeChoice, model: ScoringModel, matrix: np.ndarray, config: TrainingConfig, seconds: float) -> ModelFacts:
    """Collect the run's facts; `matrix` supplies rows for timing the final model's explanations."""
    y = frame.loc[labelled, schema.target_column]
    shape = choice.shape
    return ModelFacts(
        model_tag="unsaved",
        schema_name=schema.name,
        id_column=schema.id_column,
        n_features=len(schema.features),
        feature_types={t.value: len(schema.names_of(t)) for t in FeatureType},
        monotone_features=[f.name for f in schema.features if f.monotone is not None],
        data=DataFacts(file_name=data_path.name, sha256=file_sha256(data_path), n_rows=int(len(frame)), n_labelled=int(labelled.sum()),
                       n_unlabelled=int((~labelled).sum()), n_positives=int(y.sum()), default_rate=float(y.mean())),
        n_folds=config.n_folds,
        inner_share=config.inner_validation_share,
        ece_bins=config.ece_bins,
        shape=ShapeFacts(name=shape.name, description=shape.describe(), num_leaves=shape.num_leaves, max_depth=shape.max_depth,
                         min_child_samples=shape.min_child_samples, lambda_l2=shape.lambda_l2, learning_rate=shape.learning_rate,
                         reason=choice.reason, chosen_per_fold=[f.shape.name for f in cv.folds],
                         candidates_mean_inner_log_loss=choice.mean_inner_log_loss,
                         candidates_explained_rows_per_s=choice.explained_rows_per_s),
        final_rounds=choice.rounds,
        final_rounds_multiplier=config.final_rounds_multiplier,
        n_trees=model.booster.num_trees(),
        calibration=model.scoring_spec()["calibration"],
        cv_pooled=cv.pooled,
        cv_per_fold=[f.metrics for f in cv.folds],
        cv_summary=cv.summary,
        cv_best_iterations=cv.best_iterations,
        training_seconds=seconds,
        explained_rows_per_s=explained_rows_per_s(model.booster, matrix, config),
        min_explained_rows_per_s=config.min_explained_rows_per_s,
        explain_timing_rows=config.explain_timing_rows,
        num_threads=config.num_threads,
        library_versions={name: version(name) for name in LIBRARIES},
        grade_backtest=[row.as_dict() for row in grade_backtest(y.to_numpy(dtype=np.float64), cv.oof_pd, schema.resolved_master_scale())],
    )
