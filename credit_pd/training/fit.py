"""Honest validation and the final fit.

Stratified K-fold on the labelled rows. Inside each training fold a stratified inner split picks
the number of boosting rounds (early stopping) and fits that fold's Platt calibrator, so the
validation fold never influences any choice made for it: its scores are true out-of-fold
forecasts. The final model is refit on every labelled row with the cross-validated round count
and calibrated on the pooled out-of-fold scores.

No class weights or resampling: the log-loss objective on the true class mix already targets
calibrated probabilities, which a lender needs for pricing and provisioning, not just ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from tqdm.auto import tqdm

from credit_pd.config import TrainingConfig
from credit_pd.features import FeatureEncoder
from credit_pd.schema import DatasetSchema
from credit_pd.training.metrics import ForecastMetrics, score_forecast, summarise_folds
from credit_pd.scoring_model import PlattCalibrator, ScoringModel


@dataclass(frozen=True)
class FoldResult:
    fold: int
    best_iteration: int
    calibrator: PlattCalibrator
    metrics: ForecastMetrics


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


def fit_platt(raw_score: np.ndarray, y: np.ndarray) -> PlattCalibrator:
    """Platt scaling (unpenalised logistic regression on the log-odds); see `PlattCalibrator`."""
    model = LogisticRegression(C=np.inf).fit(np.asarray(raw_score).reshape(-1, 1), np.asarray(y))
    return PlattCalibrator(slope=float(model.coef_[0, 0]), intercept=float(model.intercept_[0]))


def booster_params(encoder: FeatureEncoder, config: TrainingConfig, seed: int) -> dict:
    """LightGBM parameters plus the schema's monotone constraints."""
    params = config.lightgbm.as_lightgbm(seed=seed, num_threads=config.num_threads)
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
    )


def fit_with_early_stopping(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig, seed: int) -> FittedBooster:
    """Fit on part of the given rows; the inner held-out part picks the round count."""
    fit_idx, stop_idx = train_test_split(
        np.arange(len(y)), test_size=config.inner_validation_share, stratify=y, random_state=seed
    )
    train_set = make_dataset(matrix[fit_idx], y[fit_idx], encoder)
    stop_set = make_dataset(matrix[stop_idx], y[stop_idx], encoder, reference=train_set)
    booster = lgb.train(
        booster_params(encoder, config, seed),
        train_set,
        num_boost_round=config.lightgbm.max_boost_rounds,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(config.lightgbm.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or config.lightgbm.max_boost_rounds
    inner_raw = booster.predict(matrix[stop_idx], raw_score=True, num_iteration=best)
    return FittedBooster(booster=booster, best_iteration=best, inner_raw=inner_raw, inner_y=y[stop_idx])


def cross_validate(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, config: TrainingConfig, progress: bool = True) -> CrossValidationResult:
    """Stratified K-fold with out-of-fold, calibrated forecasts for every labelled row."""
    splitter = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    oof_raw = np.zeros(len(y))
    oof_pd = np.zeros(len(y))
    folds: list[FoldResult] = []
    bar = tqdm(total=config.n_folds, desc="cross-validation", unit="fold", disable=not progress)
    for fold, (train_idx, valid_idx) in enumerate(splitter.split(matrix, y), start=1):
        fitted = fit_with_early_stopping(matrix[train_idx], y[train_idx], encoder, config, seed=config.seed + fold)
        calibrator = fit_platt(fitted.inner_raw, fitted.inner_y)
        oof_raw[valid_idx] = fitted.booster.predict(matrix[valid_idx], raw_score=True, num_iteration=fitted.best_iteration)
        oof_pd[valid_idx] = calibrator.apply(oof_raw[valid_idx])
        metrics = score_forecast(y[valid_idx], oof_pd[valid_idx], config.ece_bins)
        folds.append(FoldResult(fold, fitted.best_iteration, calibrator, metrics))
        bar.set_postfix(auc=f"{metrics.roc_auc:.4f}", logloss=f"{metrics.log_loss:.5f}", rounds=fitted.best_iteration)
        bar.update()
    bar.close()
    return CrossValidationResult(folds=folds, oof_raw=oof_raw, oof_pd=oof_pd, pooled=score_forecast(y, oof_pd, config.ece_bins))


def final_round_count(cv: CrossValidationResult, config: TrainingConfig) -> int:
    """Cross-validated round count, scaled up because the refit sees more rows than any fold."""
    return max(1, int(round(np.mean(cv.best_iterations) * config.final_rounds_multiplier)))


def fit_final_model(matrix: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, cv: CrossValidationResult, config: TrainingConfig,
                    schema: DatasetSchema) -> ScoringModel:
    """Refit on every labelled row; calibrate on the pooled out-of-fold log-odds."""
    booster = lgb.train(booster_params(encoder, config, config.seed), make_dataset(matrix, y, encoder), num_boost_round=final_round_count(cv, config))
    calibrator = fit_platt(cv.oof_raw, y)
    return ScoringModel(booster=booster, encoder=encoder, calibrator=calibrator, schema=schema, num_threads=config.num_threads)
