"""Training benchmark: the project's model against baselines, on the embedded sample and real data.

    python -m benchmarks.training_benchmark [--rows 100000] [--datasets sample,german_credit,uci_credit_card_sample]

For each dataset, on the same stratified folds: the project's model (the exact nested
cross-validation `train.py` runs: GLM, tree, GLM-offset and blend candidates chosen per fold by
inner CV within the explanation budget), logistic regression with
standard preprocessing, LightGBM with default parameters, and a tuned LightGBM (a grid of larger
trees chosen on each training fold's inner split with early stopping; no explanation budget, no
monotone constraints). On the embedded sample also the oracle (the true PD). Prints out-of-fold
log loss, ROC AUC, PR AUC, Brier, ECE, training time and explained rows/s (model + TreeSHAP,
batch of 1,000), then whether the project meets "log loss no worse than the best baseline" and,
on the sample, the bars against the oracle. Real datasets are read from the files that the
packages in `benchmarks/requirements-data.txt` ship (installed by `make benchmark`).
Figures, not a timed test.
"""

from __future__ import annotations

import os

# LightGBM's OpenMP threads sleep instead of spinning while they wait: on a shared 2-core machine
# spinning threads of one process starve the other's (a 2-thread fit ran ~15x slower under load).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import shap
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from benchmarks.real_datasets import REAL_DATASETS
from benchmarks.results import command_line, recorded  # noqa: E402
from credit_pd.config import SampleConfig, TrainingConfig
from credit_pd.dataset import labelled_mask, load_dataset
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DEFAULT_SCHEMA_PATH, DatasetSchema, FeatureType, load_schema
from credit_pd.training.fit import (
    choose_shape,
    cross_validate,
    explained_rows_per_s,
    fit_final_model,
    model_explained_rows_per_s,
)
from credit_pd.training.metrics import ForecastMetrics, score_forecast
from credit_pd.training.sample import true_pd_path_for, write_sample

EXPLAIN_BATCH = 1_000
EXPLAIN_REPEATS = 5
# Bars from the training issue, relative to the oracle measured in the same run (embedded sample).
MAX_LOG_LOSS_EXCESS = 0.03
MAX_AUC_GAP = 0.01
MAX_ECE = 0.003
# `python train.py` on the embedded sample, end to end on this 2-core machine (the model issue's bar).
MAX_TRAIN_SECONDS = 120
REPO_ROOT = Path(__file__).resolve().parent.parent
# The tuned-LightGBM baseline's grid: larger trees than the project may afford, chosen per fold on
# the inner split with early stopping (num_leaves, min rows per leaf, L2).
TUNED_GRID = tuple((leaves, child, l2) for leaves in (8, 16, 31) for child, l2 in ((20, 0.0), (100, 10.0)))
TUNED_LEARNING_RATE = 0.05
# Share of each training fold the tuned baseline holds out for early stopping and its grid choice,
# and its early-stopping patience: its own, so a change of the project's patience cannot weaken it.
TUNED_INNER_SHARE = 0.2
TUNED_EARLY_STOPPING_ROUNDS = 150
SAMPLE = "sample"


@dataclass(frozen=True)
class Row:
    name: str
    metrics: ForecastMetrics
    train_seconds: float
    explained_rows_per_s: float | None
    note: str = ""


@dataclass(frozen=True)
class Labelled:
    """A dataset's labelled rows, loaded through its schema and encoded as training encodes them."""

    name: str
    schema: DatasetSchema
    frame: pd.DataFrame
    matrix: np.ndarray
    y: np.ndarray
    encoder: FeatureEncoder


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Fastest of a few runs: the least disturbed by other processes on a 2-core machine."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def folds_of(y: np.ndarray, config: TrainingConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The project's own outer folds (same splitter and seed as `cross_validate`)."""
    return list(StratifiedKFold(config.n_folds, shuffle=True, random_state=config.seed).split(np.zeros(len(y)), y))


def load_labelled(name: str, data_path: Path, schema: DatasetSchema) -> Labelled:
    frame = load_dataset(data_path, schema)
    mask = labelled_mask(frame, schema)
    labelled = frame[mask].reset_index(drop=True)
    encoder = FeatureEncoder.fit(frame, schema)
    return Labelled(
        name, schema, labelled, encoder.encode_frame(labelled), labelled[schema.target_column].to_numpy(), encoder
    )


def project_model(data: Labelled, config: TrainingConfig) -> Row:
    started = time.perf_counter()
    cv = cross_validate(data.matrix, data.y, data.encoder, config, progress=True)
    seconds = time.perf_counter() - started
    choice = choose_shape(cv, config)
    model = fit_final_model(data.matrix, data.y, data.encoder, cv, config, data.schema, choice)
    rate = model_explained_rows_per_s(model, data.matrix, config, repeats=EXPLAIN_REPEATS)
    chosen = "; ".join(f.chosen.name for f in cv.folds)
    return Row(
        "project model",
        cv.pooled,
        seconds,
        rate,
        f"final: {model.describe()} ({choice.candidate.name}); folds: {chosen}; "
        f"inner CVs {cv.selection_seconds:.0f} s of {seconds:.0f} s",
    )


def lightgbm_defaults(data: Labelled, config: TrainingConfig) -> Row:
    """LightGBM as it comes: default parameters, 100 rounds, no early stopping, no calibration."""
    oof = np.zeros(len(data.y))
    started = time.perf_counter()
    for train_idx, valid_idx in folds_of(data.y, config):
        train_set = lgb.Dataset(
            data.matrix[train_idx], data.y[train_idx], categorical_feature=data.encoder.categorical_indices
        )
        booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": config.num_threads}, train_set)
        oof[valid_idx] = booster.predict(data.matrix[valid_idx])
    seconds = time.perf_counter() - started
    rate = explained_rows_per_s(booster, data.matrix, config, repeats=EXPLAIN_REPEATS)
    return Row("LightGBM defaults", score_forecast(data.y, oof, config.ece_bins), seconds, rate)


def tuned_lightgbm(data: Labelled, config: TrainingConfig) -> Row:
    """LightGBM tuned per fold on the inner split: grid of leaves/min rows/L2, early stopping."""
    oof = np.zeros(len(data.y))
    chosen: list[str] = []
    started = time.perf_counter()
    for fold, (train_idx, valid_idx) in enumerate(folds_of(data.y, config), start=1):
        x, y = data.matrix[train_idx], data.y[train_idx]
        fit_idx, stop_idx = train_test_split(
            np.arange(len(y)), test_size=TUNED_INNER_SHARE, stratify=y, random_state=config.seed + fold
        )
        cats = data.encoder.categorical_indices
        train_set = lgb.Dataset(
            x[fit_idx], y[fit_idx], categorical_feature=cats, free_raw_data=False, params={"feature_pre_filter": False}
        )
        stop_set = lgb.Dataset(
            x[stop_idx],
            y[stop_idx],
            categorical_feature=cats,
            reference=train_set,
            params={"feature_pre_filter": False},
        )
        best: tuple[float, lgb.Booster, int, str] | None = None
        for leaves, child, l2 in TUNED_GRID:
            params = {
                "objective": "binary",
                "metric": "binary_logloss",
                "learning_rate": TUNED_LEARNING_RATE,
                "num_leaves": leaves,
                "min_child_samples": child,
                "lambda_l2": l2,
                "feature_fraction": 0.8,
                "bagging_fraction": 0.8,
                "bagging_freq": 1,
                "seed": config.seed,
                "verbosity": -1,
                "num_threads": config.num_threads,
            }
            booster = lgb.train(
                params,
                train_set,
                num_boost_round=config.lightgbm.max_boost_rounds,
                valid_sets=[stop_set],
                callbacks=[lgb.early_stopping(TUNED_EARLY_STOPPING_ROUNDS, verbose=False)],
            )
            loss = booster.best_score["valid_0"]["binary_logloss"]
            if best is None or loss < best[0]:
                best = (loss, booster, booster.best_iteration, f"{leaves} leaves/min {child}/L2 {l2:g}")
        _, booster, rounds, label = best
        oof[valid_idx] = booster.predict(data.matrix[valid_idx], num_iteration=rounds)
        chosen.append(label)
    seconds = time.perf_counter() - started
    rate = explained_rows_per_s(booster, data.matrix, config, num_iteration=rounds, repeats=EXPLAIN_REPEATS)
    return Row(
        "tuned LightGBM", score_forecast(data.y, oof, config.ece_bins), seconds, rate, "folds: " + "; ".join(chosen)
    )


def logistic_pipeline(schema: DatasetSchema):
    """Median imputation with missing indicators, log1p of skewed amounts, scaling, one-hot."""
    numeric = schema.names_of(FeatureType.NUMERIC) + schema.names_of(FeatureType.BOOLEAN)
    categorical = schema.names_of(FeatureType.CATEGORICAL)
    numeric_steps = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FunctionTransformer(lambda x: np.sign(x) * np.log1p(np.abs(x))),
        StandardScaler(),
    )
    categorical_steps = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", min_frequency=20),
    )
    prep = ColumnTransformer([("num", numeric_steps, numeric), ("cat", categorical_steps, categorical)])
    return make_pipeline(prep, LogisticRegression(C=1.0, max_iter=2_000))


def logistic_regression(data: Labelled, config: TrainingConfig) -> Row:
    schema = data.schema
    features = data.frame[schema.feature_names].copy()
    for name in schema.names_of(FeatureType.CATEGORICAL):
        features[name] = features[name].astype(object).where(features[name].notna(), np.nan)
    oof = np.zeros(len(data.y))
    started = time.perf_counter()
    for train_idx, valid_idx in folds_of(data.y, config):
        model = logistic_pipeline(schema).fit(features.iloc[train_idx], data.y[train_idx])
        oof[valid_idx] = model.predict_proba(features.iloc[valid_idx])[:, 1]
    seconds = time.perf_counter() - started
    prep, lr = model[:-1], model[-1]
    batch = features.iloc[np.resize(np.arange(len(features)), EXPLAIN_BATCH)]
    explainer = shap.LinearExplainer(lr, prep.transform(batch))
    rate = EXPLAIN_BATCH / best_of(
        EXPLAIN_REPEATS, lambda: (lr.predict_proba(prep.transform(batch)), explainer.shap_values(prep.transform(batch)))
    )
    return Row("logistic regression", score_forecast(data.y, oof, config.ece_bins), seconds, rate)


def print_table(title: str, rows: list[Row]) -> None:
    header = f"{'model':<22}{'log loss':>10}{'ROC AUC':>9}{'PR AUC':>8}{'Brier':>10}{'ECE':>9}{'train s':>9}{'expl rows/s':>13}"
    print(f"\n{title}\n" + header + "\n" + "-" * len(header))
    for r in rows:
        rate = f"{r.explained_rows_per_s:,.0f}" if r.explained_rows_per_s else "-"
        m = r.metrics
        print(
            f"{r.name:<22}{m.log_loss:>10.5f}{m.roc_auc:>9.4f}{m.pr_auc:>8.4f}{m.brier:>10.6f}{m.ece:>9.5f}{r.train_seconds:>9.1f}{rate:>13}"
        )
    for r in rows:
        if r.note:
            print(f"  {r.name}: {r.note}")


def print_goal(project: Row, baselines: list[Row], config: TrainingConfig) -> bool:
    """The issue's goal: out-of-fold log loss no worse than the best baseline on the same folds."""
    best = min(baselines, key=lambda r: r.metrics.log_loss)
    ratio = project.metrics.log_loss / best.metrics.log_loss
    met = ratio <= 1.0
    print(
        f"  {'PASS' if met else 'MISS'}  log loss no worse than the best baseline ({best.name}): "
        f"ratio {ratio:.4f} ({(ratio - 1):+.2%})"
    )
    rate_ok = project.explained_rows_per_s >= config.min_explained_rows_per_s
    print(
        f"  {'PASS' if rate_ok else 'MISS'}  >= {config.min_explained_rows_per_s:,.0f} explained rows/s: "
        f"{project.explained_rows_per_s:,.0f}"
    )
    return met


def print_oracle_bars(project: Row, oracle_row: Row) -> None:
    excess = project.metrics.log_loss / oracle_row.metrics.log_loss - 1
    gap = oracle_row.metrics.roc_auc - project.metrics.roc_auc
    checks = [
        (f"log loss within {MAX_LOG_LOSS_EXCESS:.0%} of oracle", f"{excess:+.2%}", excess <= MAX_LOG_LOSS_EXCESS),
        (f"ROC AUC within {MAX_AUC_GAP} of oracle", f"{gap:+.4f}", gap <= MAX_AUC_GAP),
        (f"ECE below {MAX_ECE}", f"{project.metrics.ece:.5f}", project.metrics.ece < MAX_ECE),
    ]
    for name, value, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {name:<42} {value}")


def benchmark_dataset(data: Labelled, config: TrainingConfig, truth: np.ndarray | None = None) -> bool:
    positives = int(data.y.sum())
    print(
        f"\n=== {data.name}: {len(data.y):,} labelled rows, {positives:,} defaults ({data.y.mean():.3%}), "
        f"{len(data.schema.features)} features; {config.n_folds}-fold CV, same folds for every model"
    )
    project = project_model(data, config)
    baselines = [logistic_regression(data, config), lightgbm_defaults(data, config), tuned_lightgbm(data, config)]
    rows = [project, *baselines]
    if truth is not None:
        rows.append(Row("oracle (true PD)", score_forecast(data.y, truth, config.ece_bins), 0.0, None))
    print_table(f"{data.name} (out-of-fold)", rows)
    met = print_goal(project, baselines, config)
    if truth is not None:
        print_oracle_bars(project, rows[-1])
    return met


def time_train_py(data_path: Path, tmp: Path, generate_seconds: float) -> bool:
    """`python train.py` end to end on the embedded sample, as a user runs it, into a scratch model
    store and output folder: wall and CPU seconds against the issue's 120 s on this machine."""
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "train.py", "--data", str(data_path), "--predictions", str(tmp / "predictions.csv")]
    command += ["--report-dir", str(tmp / "reports"), "--quiet"]
    env = os.environ | {"BENTOML_HOME": str(tmp / "bentoml")}
    subprocess.run(command, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    met = wall + generate_seconds <= MAX_TRAIN_SECONDS
    print(
        f"\n`python train.py` on the embedded sample: {wall:.0f} s wall, {cpu:.0f} s CPU "
        f"({TrainingConfig.cv_processes} nested-CV processes), + {generate_seconds:.0f} s generating the sample on a "
        f"first run; load average (1 min) before {load_before:.1f}, after {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  {'PASS' if met else 'MISS'}  train.py within {MAX_TRAIN_SECONDS} s on {os.cpu_count()} cores "
        f"(sample included)  {wall + generate_seconds:.0f} s"
    )
    return met


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=int, default=SampleConfig.n_rows, help="embedded sample size (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=SampleConfig.seed, help="embedded sample seed (default: %(default)s)"
    )
    names = [SAMPLE, *(d.name for d in REAL_DATASETS)]
    parser.add_argument("--datasets", default=",".join(names), help="comma-separated subset of: " + ", ".join(names))
    args = parser.parse_args(argv)
    wanted = args.datasets.split(",")
    config = TrainingConfig()
    outcome: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if SAMPLE in wanted:
            data_path = Path(tmp) / "dataset.csv"
            generating = time.perf_counter()
            write_sample(data_path, SampleConfig(n_rows=args.rows, seed=args.seed))
            generate_seconds = time.perf_counter() - generating
            data = load_labelled(SAMPLE, data_path, load_schema(DEFAULT_SCHEMA_PATH))
            truth = pd.read_csv(true_pd_path_for(data_path), dtype={"uuid": str}).set_index("uuid")["true_pd"]
            outcome[SAMPLE] = benchmark_dataset(data, config, truth.loc[data.frame[data.schema.id_column]].to_numpy())
            if args.rows == SampleConfig.n_rows:
                outcome["train.py time"] = time_train_py(data_path, Path(tmp), generate_seconds)
        for dataset in REAL_DATASETS:
            if dataset.name in wanted:
                data = load_labelled(dataset.name, dataset.write_csv(Path(tmp)), load_schema(dataset.schema_path))
                outcome[dataset.name] = benchmark_dataset(data, config)
    print(
        "\ngoals (log loss no worse than the best baseline; train.py time): "
        + ", ".join(f"{n} {'PASS' if ok else 'MISS'}" for n, ok in outcome.items())
    )


if __name__ == "__main__":
    with recorded("training", command_line("make benchmark")):
        main()
