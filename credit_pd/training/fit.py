"""Honest validation and the final fit.

Stratified K-fold on the labelled rows. Inside each training fold a stratified inner split
chooses the model: every candidate shape of the grid (`TrainingConfig.shapes`) is fitted with
early stopping on it, its exact-TreeSHAP cost is measured, and the shape with the lowest inner
log loss among those within the explanation budget is kept, with its round count; the same split
fits that fold's Platt calibrator. The validation fold never influences any choice made for it,
so its scores are true out-of-fold forecasts of the whole procedure, shape choice included.
The final model takes the shape with the lowest mean inner log loss over the folds among those
within budget (fastest of its per-fold cost measurements), is refit on every labelled row with that shape's cross-validated
round count, and is calibrated on the pooled out-of-fold scores.

No class weights or resampling: the log-loss objective on the true class mix already targets
calibrated probabilities, which a lender needs for pricing and provisioning, not just ranking.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm.auto import tqdm

from credit_pd.config import TrainingConfig, TreeShape
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema
from credit_pd.training.metrics import ForecastMetrics, score_forecast, summarise_folds
from credit_pd.scoring_model import PlattCalibrator, ScoringModel


@dataclass(frozen=True)
class CandidateResult:
    """One shape fitted on a fold's inner split: its inner log loss, round count and cost."""

    shape: TreeShape
    inner_log_loss: float
    best_iteration: int
    explained_rows_per_s: float
    within_budget: bool


@dataclass(frozen=True)
class FoldResult:
    fold: int
    best_iteration: int
    calibrator: PlattCalibrator
    metrics: ForecastMetrics
    shape: TreeShape
    candidates: tuple[CandidateResult, ...]


@dataclass(frozen=True)
class ShapeChoice:
    """The final model's shape, and why: mean inner figures of every candidate over the folds."""

    shape: TreeShape
    rounds: int
    reason: str
    mean_inner_log_loss: dict[str, float]
    explained_rows_per_s: dict[str, float]


@dataclass(frozen=True)
class CrossValidationResult:
    """Out-of-fold forecasts for every labelled row, and per-fold figures."""

    folds: list[FoldResult]
    oof_raw: np.ndarray
    oof_pd: np.ndarray
    pooled: ForecastMetrics

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarise_folds([f.metrics for f in self.folds])

    @property
    def best_iterations(self) -> list[int]:
        return [f.best_iteration for f in self.folds]


@dataclass(frozen=True)
class FittedBooster:
    booster: lgb.Booster
    best_iteration: int
    inner_raw: np.ndarray
    inner_y: np.ndarray
    candidate: CandidateResult


def fit_platt(raw_score: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Platt scaling (unpenalised logistic regression on the log-odds); see `PlattCalibrator`."""
    model = LogisticRegression(C=np.inf).fit(np.asarray(raw_score).reshape(-1, 1), np.asarray(y))
    return PlattCalibrator(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))


def booster_params(encoder: FeatureEncoder, config: TrainingConfig, shape: TreeShape, seed: int) -> dict:
    """LightGBM parameters of one shape plus the schema's monotone constraints."""
    params = config.lightgbm.as_lightgbm(shape, seed=seed, num_threads=config.num_threads)
    if any(encoder.monotone_constraints):
        params["monotone_constraints"] = encoder.monotone_constraints
    return params


def make_dataset(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, reference: lgb.Dataset | None = None) -> lgb.Dataset:
    """LightGBM dataset with the encoder's names and native categorical columns."""
    return lgb.Dataset(
        matrix,
        label=y,
        feature_name=list(encoder.feature_names),
        categorical_feature=encoder.categorical_indices,
        reference=reference,
        free_raw_data=False,
        # One binned dataset serves every candidate shape, whose minimum leaf sizes differ.
        params={"feature_pre_filter": False},
    )


def explained_rows_per_s(booster: lgb.Booster, matrix: np.ndarray, config: TrainingConfig, num_iteration: int | None = None,
                         repeats: int = 3) -> float:
    """Model + exact TreeSHAP throughput on `num_threads` cores for a batch of `explain_timing_rows` rows.

    Timed in CPU seconds of this process (best of a few runs) and divided by the thread count:
    wall-clock time on a shared machine depends on what else runs, and the shape chosen for the
    same data must not. TreeSHAP parallelises over rows, so CPU time / threads is the wall time
    the batch takes on that many free cores.
    """
    batch = np.resize(matrix, (config.explain_timing_rows, matrix.shape[1])) if len(matrix) else matrix
    fastest = np.inf
    for _ in range(repeats):
        started = time.process_time()
        booster.predict(batch, raw_score=True, num_iteration=num_iteration, num_threads=config.num_threads)
        booster.predict(batch, pred_contrib=True, num_iteration=num_iteration, num_threads=config.num_threads)
        fastest = min(fastest, (time.process_time() - started) / config.num_threads)
    return len(batch) / max(fastest, 1e-9)


def fit_candidates(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig,
                   seed: int) -> tuple[FittedBooster, list[CandidateResult]]:
    """Fit every shape on part of the rows; the inner held-out part picks the shape and round count."""
    fit_idx, stop_idx = train_test_split(
        np.arange(len(y)), test_size=config.inner_validation_share, stratify=y, random_state=seed
    )
    train_set = make_dataset(matrix[fit_idx], y[fit_idx], encoder)
    stop_set = make_dataset(matrix[stop_idx], y[stop_idx], encoder, reference=train_set)
    fitted: list[tuple[CandidateResult, lgb.Booster]] = []
    for shape in config.shapes:
        booster = lgb.train(
            booster_params(encoder, config, shape, seed),
            train_set,
            num_boost_round=config.lightgbm.max_boost_rounds,
            valid_sets=[stop_set],
            callbacks=[lgb.early_stopping(config.lightgbm.early_stopping_rounds, verbose=False)],
        )
        best = booster.best_iteration or config.lightgbm.max_boost_rounds
        loss = float(booster.best_score["valid_0"]["binary_logloss"])
        rate = explained_rows_per_s(booster, matrix[stop_idx], config, num_iteration=best)
        fitted.append((CandidateResult(shape, loss, best, rate, rate >= config.min_explained_rows_per_s), booster))
    chosen, booster = pick_candidate(fitted)
    inner_raw = booster.predict(matrix[stop_idx], raw_score=True, num_iteration=chosen.best_iteration)
    return FittedBooster(booster, chosen.best_iteration, inner_raw, y[stop_idx], chosen), [c for c, _ in fitted]


def pick_candidate(fitted: list[tuple[CandidateResult, lgb.Booster]]) -> tuple[CandidateResult, lgb.Booster]:
    """Lowest inner log loss within the budget; when none is within it, the cheapest."""
    affordable = [item for item in fitted if item[0].within_budget]
    if affordable:
        return min(affordable, key=lambda item: item[0].inner_log_loss)
    return max(fitted, key=lambda item: item[0].explained_rows_per_s)


def cross_validate(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig, progress: bool = True) -> CrossValidationResult:
    """Stratified K-fold with out-of-fold, calibrated forecasts for every labelled row."""
    splitter = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    oof_raw = np.zeros(len(y))
    oof_pd = np.zeros(len(y))
    folds: list[FoldResult] = []
    bar = tqdm(total=config.n_folds, desc="cross-validation", unit="fold", disable=not progress)
    for fold, (train_idx, valid_idx) in enumerate(splitter.split(matrix, y), start=1):
        fitted, candidates = fit_candidates(matrix[train_idx], y[train_idx], encoder, config, seed=config.seed + fold)
        calibrator = fit_platt(fitted.inner_raw, fitted.inner_y)
        oof_raw[valid_idx] = fitted.booster.predict(matrix[valid_idx], raw_score=True, num_iteration=fitted.best_iteration)
        oof_pd[valid_idx] = calibrator.apply(oof_raw[valid_idx])
        metrics = score_forecast(y[valid_idx], oof_pd[valid_idx], config.ece_bins)
        folds.append(FoldResult(fold, fitted.best_iteration, calibrator, metrics, fitted.candidate.shape, tuple(candidates)))
        bar.set_postfix(auc=f"{metrics.roc_auc:.4f}", logloss=f"{metrics.log_loss:.5f}", shape=fitted.candidate.shape.name,
                        rounds=fitted.best_iteration)
        bar.update()
    bar.close()
    return CrossValidationResult(folds=folds, oof_raw=oof_raw, oof_pd=oof_pd, pooled=score_forecast(y, oof_pd, config.ece_bins))


def choose_shape(cv: CrossValidationResult, config: TrainingConfig) -> ShapeChoice:
    """The final shape: lowest mean inner log loss over the folds among the shapes within budget.

    A shape's cost is the fastest of its per-fold measurements (CPU time, see `explained_rows_per_s`):
    each fold timed the same kind of model.
    """
    names = [shape.name for shape in config.shapes]
    per_shape = {name: [c for f in cv.folds for c in f.candidates if c.shape.name == name] for name in names}
    mean_loss = {name: float(np.mean([c.inner_log_loss for c in results])) for name, results in per_shape.items()}
    rate = {name: float(max(c.explained_rows_per_s for c in results)) for name, results in per_shape.items()}
    affordable = [name for name in names if rate[name] >= config.min_explained_rows_per_s]
    floor = f"{config.min_explained_rows_per_s:,.0f} explained rows/s"
    if affordable:
        name = min(affordable, key=mean_loss.get)
        over = [n for n in names if n not in affordable]
        beaten = sorted((n for n in over if mean_loss[n] < mean_loss[name]), key=mean_loss.get)
        reason = (f"lowest mean inner-split log loss ({mean_loss[name]:.5f}) among the shapes within the budget of {floor} "
                  f"({', '.join(affordable)})" + (f"; over budget: {', '.join(over)}" if over else "")
                  + (f"; of these, lower loss: {', '.join(beaten)}" if beaten else ""))
    else:
        name = max(names, key=rate.get)
        reason = f"no shape met the budget of {floor}; the cheapest was taken"
    chosen = per_shape[name]
    rounds = max(1, int(round(np.mean([c.best_iteration for c in chosen]) * config.final_rounds_multiplier)))
    shape = next(s for s in config.shapes if s.name == name)
    return ShapeChoice(shape=shape, rounds=rounds, reason=reason, mean_inner_log_loss=mean_loss, explained_rows_per_s=rate)


def fit_final_model(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, cv: CrossValidationResult, config: TrainingConfig,
                    schema: DatasetSchema, choice: ShapeChoice | None = None) -> ScoringModel:
    """Refit on every labelled row in the chosen shape; calibrate on the pooled out-of-fold log-odds."""
    choice = choice or choose_shape(cv, config)
    booster = lgb.train(booster_params(encoder, config, choice.shape, config.seed), make_dataset(matrix, y, encoder),
                        num_boost_round=choice.rounds)
    calibrator = fit_platt(cv.oof_raw, y)
    return ScoringModel(booster=booster, encoder=encoder, calibrator=calibrator, schema=schema, num_threads=config.num_threads)
