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
from credit_pd.training.fit import CrossValidationResult, ShapeChoice, model_explained_rows_per_s
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
    """The chosen candidate, why, and what every candidate scored in the final inner CV (all labelled rows).

    `description` is the model's own one-line summary ("GLM-offset, 180 trees") plus the tree
    shape(s) it uses; `glm_constrained` names the monotone features whose GLM coefficient was
    fixed at 0 (wrong sign); `selection_seconds` is the wall time of the nested CV (the price of
    the choice, its jobs side by side in `cv_processes` processes), `candidates_fit_seconds` each
    candidate's fit time summed over those jobs.
    """

    name: str
    family: str
    description: str
    tree_shapes: list[str]
    reason: str
    chosen_per_fold: list[str]
    candidates_inner_log_loss: dict[str, float]
    candidates_explained_rows_per_s: dict[str, float]
    candidates_fit_seconds: dict[str, float]
    glm_constrained: list[str]
    blend_weights: dict[str, Any]
    inner_folds: int
    selection_seconds: float


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
    budget_cores: int
    cv_processes: int
    library_versions: dict[str, str] = field(default_factory=dict)
    # The master-scale back-test of the out-of-fold PDs, one dict per grade (GradeBacktest.as_dict).
    grade_backtest: list[dict[str, Any]] = field(default_factory=list)

    def with_tag(self, tag: str) -> ModelFacts:
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


def describe_run(
    schema: DatasetSchema,
    data_path: Path,
    frame: pd.DataFrame,
    labelled: np.ndarray,
    cv: CrossValidationResult,
    choice: ShapeChoice,
    model: ScoringModel,
    matrix: np.ndarray,
    config: TrainingConfig,
    seconds: float,
) -> ModelFacts:
    """Collect the run's facts; `matrix` supplies rows for timing the final model's explanations."""
    y = frame.loc[labelled, schema.target_column]
    return ModelFacts(
        model_tag="unsaved",
        schema_name=schema.name,
        id_column=schema.id_column,
        n_features=len(schema.features),
        feature_types={t.value: len(schema.names_of(t)) for t in FeatureType},
        monotone_features=[f.name for f in schema.features if f.monotone is not None],
        data=DataFacts(
            file_name=data_path.name,
            sha256=file_sha256(data_path),
            n_rows=int(len(frame)),
            n_labelled=int(labelled.sum()),
            n_unlabelled=int((~labelled).sum()),
            n_positives=int(y.sum()),
            default_rate=float(y.mean()),
        ),
        n_folds=config.n_folds,
        ece_bins=config.ece_bins,
        shape=choice_facts(cv, choice, model, config),
        final_rounds=choice.rounds,
        final_rounds_multiplier=config.final_rounds_multiplier,
        n_trees=model.n_trees,
        calibration=model.scoring_spec()["calibration"],
        cv_pooled=cv.pooled,
        cv_per_fold=[f.metrics for f in cv.folds],
        cv_summary=cv.summary,
        cv_best_iterations=cv.best_iterations,
        training_seconds=seconds,
        explained_rows_per_s=model_explained_rows_per_s(model, matrix, config),
        min_explained_rows_per_s=config.min_explained_rows_per_s,
        explain_timing_rows=config.explain_timing_rows,
        num_threads=config.num_threads,
        budget_cores=config.budget_cores,
        cv_processes=config.cv_processes,
        library_versions={name: version(name) for name in LIBRARIES},
        grade_backtest=[
            row.as_dict()
            for row in grade_backtest(y.to_numpy(dtype=np.float64), cv.oof_pd, schema.resolved_master_scale())
        ],
    )


def choice_facts(
    cv: CrossValidationResult, choice: ShapeChoice, model: ScoringModel, config: TrainingConfig
) -> ShapeFacts:
    """What was chosen and why, from the final inner CV and the fitted model."""
    candidate = choice.candidate
    shapes = {shape.name: shape for shape in config.shapes}
    used = [candidate.name] if candidate.shape is not None and model.n_trees else list(candidate.members)
    tree_shapes = [shapes[name].describe() for name in used if name in shapes]
    description = model.describe() + "".join(f"; {text}" for text in tree_shapes)
    return ShapeFacts(
        name=candidate.name,
        family=model.family,
        description=description,
        tree_shapes=tree_shapes,
        reason=choice.reason,
        chosen_per_fold=[f.chosen.name for f in cv.folds],
        candidates_inner_log_loss=choice.mean_inner_log_loss,
        candidates_explained_rows_per_s=choice.explained_rows_per_s,
        candidates_fit_seconds=choice.fit_seconds,
        glm_constrained=list(model.linear.constrained) if model.linear is not None else [],
        blend_weights=model.weights.to_dict() if model.family == "blend" else {},
        inner_folds=config.inner_folds,
        selection_seconds=cv.selection_seconds,
    )
