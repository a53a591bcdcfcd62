"""Scores for probability forecasts: ranking (ROC/PR AUC) and calibration (log loss, Brier, ECE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from credit_pd.master_scale import GradeBacktest, MasterScale, backtest_grades


@dataclass(frozen=True)
class ForecastMetrics:
    """The figures the model card, the store metadata and the benchmark all report."""

    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float


def expected_calibration_error(y_true: np.ndarray, pd_hat: np.ndarray, n_bins: int) -> float:
    """Count-weighted |mean forecast - observed rate| over equal-count bins of the forecast.

    Equal-count bins because with ~1.4% defaults almost every forecast is below 0.1: equal-width
    bins would lump nearly all rows together and hide miscalibration in the tail that matters.
    """
    order = np.argsort(pd_hat, kind="stable")
    bins = np.array_split(order, n_bins)
    gaps = [abs(pd_hat[b].mean() - y_true[b].mean()) * len(b) for b in bins if len(b)]
    return float(np.sum(gaps) / len(pd_hat))


def score_forecast(y_true: np.ndarray, pd_hat: np.ndarray, ece_bins: int) -> ForecastMetrics:
    """All metrics of one forecast against 0/1 outcomes."""
    y_true = np.asarray(y_true, dtype=np.float64)
    pd_hat = np.asarray(pd_hat, dtype=np.float64)
    return ForecastMetrics(
        roc_auc=float(roc_auc_score(y_true, pd_hat)),
        pr_auc=float(average_precision_score(y_true, pd_hat)),
        log_loss=float(log_loss(y_true, pd_hat, labels=[0, 1])),
        brier=float(brier_score_loss(y_true, pd_hat)),
        ece=expected_calibration_error(y_true, pd_hat, ece_bins),
    )


def summarise_folds(per_fold: list[ForecastMetrics]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each metric across folds."""
    table = {name: np.array([getattr(m, name) for m in per_fold]) for name in ForecastMetrics.__dataclass_fields__}
    return {
        name: {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        for name, values in table.items()
    }


def grade_backtest(y_true: np.ndarray, pd_hat: np.ndarray, scale: MasterScale) -> list[GradeBacktest]:
    """Per-grade Jeffreys back-test of out-of-fold PDs: the first table a PD validator asks for.

    Out-of-fold PDs, because a grade's observed default rate must come from rows its PD never saw.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    if not np.isin(y_true, (0.0, 1.0)).all():
        raise ValueError("grade_backtest needs 0/1 outcomes")
    return backtest_grades(y_true, pd_hat, scale)
