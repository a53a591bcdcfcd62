"""The training run end to end: load and validate, cross-validate, refit, store, predict, report.

Every check on the input happens before anything is written, and files are written atomically,
so a failed run leaves the previous predictions, report and store entries as they were.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from credit_pd.config import DEFAULT_DATASET_PATH, MODEL_NAME, SampleConfig, TrainingConfig
from credit_pd.errors import DatasetError
from credit_pd.features import FeatureEncoder
from credit_pd.training.dataset import check_trainable, labelled_mask, load_dataset
from credit_pd.model_store import save_to_store
from credit_pd.monitoring.reference import drift_reference_objects
from credit_pd.training.publish import publication
from credit_pd.training.report import REPORT_CARD, ReportInputs, write_report
from credit_pd.schema import DEFAULT_SCHEMA_PATH, DatasetSchema, FeatureType, load_schema
from credit_pd.scoring_model import ScoringModel
from credit_pd.training.fit import CrossValidationResult, cross_validate, final_round_count, fit_final_model

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("uuid", "pd")
LIBRARIES = ("lightgbm", "scikit-learn", "shap", "bentoml", "pandas", "numpy")
# Rows timed for the explained-rows/s figure in the card (the benchmark measures it properly).
EXPLAIN_TIMING_ROWS = 1_000


@dataclass(frozen=True)
class TrainingRun:
    """What a run produced, for the CLI's summary and for tests."""

    model_tag: str
    cv: CrossValidationResult
    model: ScoringModel
    predictions_path: Path
    report_path: Path
    n_scored: int


def ensure_dataset(data_path: Path, schema_path: Path, sample: SampleConfig) -> Path:
    """Use the given file; when the default one is absent, generate the embedded sample."""
    if data_path.exists():
        return data_path
    if data_path.resolve() != DEFAULT_DATASET_PATH.resolve() or schema_path.resolve() != DEFAULT_SCHEMA_PATH.resolve():
        raise DatasetError(f"dataset file {data_path} does not exist")
    from credit_pd.training.sample import write_sample

    print(f"{data_path} not found: generating the embedded sample dataset ({sample.n_rows:,} rows, seed {sample.seed}) there.")
    write_sample(data_path, sample)
    return data_path


def run_training(
    data_path: Path,
    schema_path: Path,
    predictions_path: Path,
    report_dir: Path,
    config: TrainingConfig = TrainingConfig(),
    sample: SampleConfig = SampleConfig(),
    progress: bool = True,
) -> TrainingRun:
    started = time.perf_counter()
    schema = load_schema(schema_path)
    data_path = ensure_dataset(data_path, schema_path, sample)
    frame = load_dataset(data_path, schema)
    check_trainable(frame, schema)

    encoder = FeatureEncoder.fit(frame, schema)
    matrix = encoder.encode_frame(frame)
    labelled = labelled_mask(frame, schema)
    y = frame.loc[labelled, schema.target_column].to_numpy(dtype=np.float64)
    if labelled.all():
        print(f"{data_path.name} has no unlabelled rows (every {schema.target_column!r} is set): nothing to score; "
              f"{predictions_path} will hold only its header, so it always belongs to the model this run publishes.")

    cv = cross_validate(matrix[labelled], y, encoder, config, progress=progress)
    model = fit_final_model(matrix[labelled], y, encoder, cv, config, schema)
    unlabelled_pd = model.predict_pd(matrix[~labelled])
    facts = describe_run(schema, data_path, frame, labelled, cv, model, config, time.perf_counter() - started)

    explain_rows = _summary_sample(labelled, config)
    publishing = publication(predictions_path, report_dir)
    try:
        stored = publishing.stage_model(
            lambda store_dir: save_to_store(model, metadata=store_metadata(facts, schema, cv), labels=store_labels(schema, facts),
                                            custom_objects=drift_reference_objects(model, matrix), store_dir=store_dir))
        facts["model_tag"] = str(stored.tag)
        ids = frame.loc[~labelled, schema.id_column]
        publishing.stage_predictions(lambda out: write_predictions(out, ids, unlabelled_pd))
        inputs = ReportInputs(y=y, cv=cv, model=model, explain_matrix=matrix[explain_rows], explain_frame=frame.iloc[explain_rows], facts=facts)
        publishing.stage_report(lambda folder: write_report(folder, inputs))
        publishing.commit()
    except BaseException:
        publishing.discard()
        raise
    return TrainingRun(str(stored.tag), cv, model, predictions_path, report_dir / REPORT_CARD, int((~labelled).sum()))


def write_predictions(out: TextIO, ids: pd.Series, pd_values: np.ndarray) -> None:
    """`uuid,pd` for every unlabelled row (the caller stages the file and publishes it whole)."""
    table = pd.DataFrame({PREDICTION_COLUMNS[0]: ids.to_numpy(), PREDICTION_COLUMNS[1]: pd_values})
    table.to_csv(out, index=False)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_run(schema: DatasetSchema, data_path: Path, frame: pd.DataFrame, labelled: np.ndarray,
                 cv: CrossValidationResult, model: ScoringModel, config: TrainingConfig, seconds: float) -> dict:
    """Facts shared by the model card and the store metadata."""
    y = frame.loc[labelled, schema.target_column]
    counts = {t.value: len(schema.names_of(t)) for t in FeatureType}
    return {
        "model_tag": f"{MODEL_NAME}:unsaved",
        "schema_name": schema.name,
        "id_column": schema.id_column,
        "n_features": len(schema.features),
        "feature_types": ", ".join(f"{n} {t}" for t, n in counts.items()),
        "data_path": str(data_path),
        "data_sha256": file_sha256(data_path),
        "n_rows": int(len(frame)),
        "n_labelled": int(labelled.sum()),
        "n_unlabelled": int((~labelled).sum()),
        "n_positives": int(y.sum()),
        "default_rate": float(y.mean()),
        "n_folds": config.n_folds,
        "inner_share": config.inner_validation_share,
        "ece_bins": config.ece_bins,
        "final_rounds": final_round_count(cv, config),
        "final_rounds_multiplier": config.final_rounds_multiplier,
        "n_trees": model.booster.num_trees(),
        "num_leaves": config.lightgbm.num_leaves,
        "max_depth": config.lightgbm.max_depth,
        "monotone_features": ", ".join(f"`{f.name}`" for f in schema.features if f.monotone is not None) or "none",
        "calibration": model.scoring_spec()["calibration"],
        "training_seconds": seconds,
        "explained_rows_per_s": measure_explained_rows_per_s(model, frame, schema),
    }


def measure_explained_rows_per_s(model: ScoringModel, frame: pd.DataFrame, schema: DatasetSchema) -> float:
    """Model + exact TreeSHAP throughput on one batch, for the card's statement about cost."""
    batch = model.encoder.encode_frame(frame.head(EXPLAIN_TIMING_ROWS))
    started = time.perf_counter()
    model.explain(batch)
    return len(batch) / (time.perf_counter() - started)


def store_metadata(facts: dict, schema: DatasetSchema, cv: CrossValidationResult) -> dict:
    """Everything a reviewer needs from `bentoml models get`, as plain JSON-able values."""
    return {
        **{k: v for k, v in facts.items() if k != "model_tag"},
        "cv_metrics_per_fold": [f.metrics.as_dict() for f in cv.folds],
        "cv_metrics_summary": cv.summary,
        "cv_metrics_pooled": cv.pooled.as_dict(),
        "cv_best_iterations": cv.best_iterations,
        "schema": schema.model_dump(mode="json", exclude_none=True, exclude={"example"}),
        "library_versions": {name: version(name) for name in LIBRARIES},
    }


def store_labels(schema: DatasetSchema, facts: dict) -> dict[str, str]:
    return {"schema": schema.name, "data_sha256": facts["data_sha256"][:16], "stage": "trained"}


def _summary_sample(labelled: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Row positions explained for the SHAP summary plot (a seeded sample of labelled rows)."""
    positions = np.flatnonzero(labelled)
    rng = np.random.default_rng(config.seed)
    size = min(config.shap_summary_rows, len(positions))
    return np.sort(rng.choice(positions, size=size, replace=False))
