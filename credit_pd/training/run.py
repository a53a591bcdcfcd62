"""The training run end to end: load and validate, cross-validate and choose the shape, refit, publish.

Every check on the input happens before anything is written, and the outputs (model store
entry, predictions, report folder) are published all or nothing (`credit_pd.training.publish`),
so a failed or killed run leaves the previous outputs as they were.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from credit_pd.config import DEFAULT_DATASET_PATH, SampleConfig, TrainingConfig
from credit_pd.dataset import check_trainable, labelled_mask, load_dataset
from credit_pd.errors import DatasetError
from credit_pd.features import FeatureEncoder
from credit_pd.master_scale import MasterScale
from credit_pd.model_store import save_to_store
from credit_pd.monitoring.reference import drift_reference_objects
from credit_pd.schema import DEFAULT_SCHEMA_PATH, DatasetSchema, FeatureType, load_schema
from credit_pd.scoring_model import ScoringModel
from credit_pd.training.events import check_enough_events
from credit_pd.training.facts import ModelFacts, describe_run
from credit_pd.training.fit import CrossValidationResult, choose_shape, cross_validate, fit_final_model
from credit_pd.training.publish import publication
from credit_pd.training.report import REPORT_CARD, ReportInputs, write_report

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("uuid", "pd")


@dataclass(frozen=True)
class TrainingRun:
    """What a run produced, for the CLI's summary and for tests."""

    model_tag: str
    cv: CrossValidationResult
    model: ScoringModel
    facts: ModelFacts
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

    print(
        f"{data_path} not found: generating the embedded sample dataset ({sample.n_rows:,} rows, seed {sample.seed}) there."
    )
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
    master_scale: MasterScale | None = None,
) -> TrainingRun:
    """`master_scale` overrides the schema's (or the default) scale; the stored schema carries the one used."""
    started = time.perf_counter()
    # Reason codes and grades resolved now and stored with the model (policy travels with it).
    schema = load_schema(schema_path).with_decision_policy(master_scale)
    data_path = ensure_dataset(data_path, schema_path, sample)
    frame = load_dataset(data_path, schema)
    check_trainable(frame, schema)
    check_enough_events(frame[schema.target_column].dropna().to_numpy(), config, schema.target_column)

    encoder = FeatureEncoder.fit(frame, schema)
    matrix = encoder.encode_frame(frame)
    labelled = labelled_mask(frame, schema)
    y = frame.loc[labelled, schema.target_column].to_numpy(dtype=np.float64)
    if labelled.all():
        print(
            f"{data_path.name} has no unlabelled rows (every {schema.target_column!r} is set): nothing to score; "
            f"{predictions_path} will hold only its header, so it always belongs to the model this run publishes."
        )
    if schema.example is None:
        schema = schema.model_copy(update={"example": example_application(frame.loc[labelled].iloc[0], schema)})

    cv = cross_validate(matrix[labelled], y, encoder, config, progress=progress)
    choice = choose_shape(cv, config)
    model = fit_final_model(matrix[labelled], y, encoder, cv, config, schema, choice)
    model = with_verified_tables(model, matrix[labelled], config)
    unlabelled_pd = model.predict_pd(matrix[~labelled])
    facts = describe_run(
        schema, data_path, frame, labelled, cv, choice, model, matrix[labelled], config, time.perf_counter() - started
    )

    explain_rows = _summary_sample(labelled, config)
    publishing = publication(predictions_path, report_dir)
    try:
        stored = publishing.stage_model(
            lambda store_dir: save_to_store(
                model,
                metadata=store_metadata(facts, schema),
                labels=store_labels(schema, facts),
                custom_objects=drift_reference_objects(model, matrix),
                store_dir=store_dir,
            )
        )
        facts = facts.with_tag(str(stored.tag))
        ids = frame.loc[~labelled, schema.id_column]
        publishing.stage_predictions(lambda out: write_predictions(out, ids, unlabelled_pd))
        inputs = ReportInputs(
            y=y,
            cv=cv,
            model=model,
            explain_matrix=matrix[explain_rows],
            explain_frame=frame.iloc[explain_rows],
            facts=facts,
        )
        publishing.stage_report(lambda folder: write_report(folder, inputs))
        publishing.commit()
    except BaseException:
        publishing.discard()
        raise
    return TrainingRun(
        str(stored.tag), cv, model, facts, predictions_path, report_dir / REPORT_CARD, int((~labelled).sum())
    )


def with_verified_tables(model: ScoringModel, labelled_matrix: np.ndarray, config: TrainingConfig) -> ScoringModel:
    """The model with table TreeSHAP, checked against LightGBM's pred_contrib on every labelled row.

    Runs before anything is published: a model whose tables differ from pred_contrib by more than
    1e-9 (contributions, base value, or base + sum vs the raw score) raises
    `credit_pd.treeshap.TableMismatchError` and the run publishes nothing.
    """
    model = model.with_tree_tables()
    for check in model.verify_tree_tables(labelled_matrix, num_threads=config.num_threads):
        log.info(
            "TreeSHAP tables match pred_contrib on %d rows: max |diff| contributions %.2g, base %.2g, raw %.2g",
            check.rows,
            check.contributions,
            check.base_value,
            check.raw_score,
        )
    return model


def write_predictions(out: TextIO, ids: pd.Series, pd_values: np.ndarray) -> None:
    """`uuid,pd` for every unlabelled row (the caller stages the file and publishes it whole)."""
    table = pd.DataFrame({PREDICTION_COLUMNS[0]: ids.to_numpy(), PREDICTION_COLUMNS[1]: pd_values})
    table.to_csv(out, index=False)


def example_application(row: pd.Series, schema: DatasetSchema) -> dict[str, Any]:
    """A labelled training row as a JSON-ready application, for schemas that bring no example.

    Every stored model carries an example (the service's OpenAPI document shows it).
    """
    example: dict[str, Any] = {}
    for spec in schema.features:
        value = row[spec.name]
        if value is None or pd.isna(value):
            example[spec.name] = None
        elif spec.type is FeatureType.BOOLEAN:
            example[spec.name] = bool(value)
        elif spec.type is FeatureType.NUMERIC:
            example[spec.name] = float(value)
        else:
            example[spec.name] = str(value)
    return example


def store_metadata(facts: ModelFacts, schema: DatasetSchema) -> dict[str, Any]:
    """Everything a reviewer needs from `bentoml models get`, as plain JSON-able values."""
    return {**facts.as_metadata(), "schema": schema.model_dump(mode="json", exclude_none=True, exclude={"example"})}


def store_labels(schema: DatasetSchema, facts: ModelFacts) -> dict[str, str]:
    return {"schema": schema.name, "data_sha256": facts.data.sha256[:16], "stage": "trained"}


def _summary_sample(labelled: np.ndarray, config: TrainingConfig) -> np.ndarray:
    """Row positions explained for the SHAP summary plot (a seeded sample of labelled rows)."""
    positions = np.flatnonzero(labelled)
    rng = np.random.default_rng(config.seed)
    size = min(config.shap_summary_rows, len(positions))
    return np.sort(rng.choice(positions, size=size, replace=False))
