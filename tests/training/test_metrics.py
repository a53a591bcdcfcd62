"""Metric helpers: the ECE must detect miscalibration and vanish for calibrated forecasts."""

from __future__ import annotations

import numpy as np

from credit_pd.training.metrics import expected_calibration_error, score_forecast, summarise_folds


def test_ece_near_zero_for_calibrated_and_large_for_scaled_forecasts():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 30, size=200_000)
    y = (rng.random(p.size) < p).astype(float)
    assert expected_calibration_error(y, p, 10) < 0.002
    assert expected_calibration_error(y, np.minimum(p * 2, 1), 10) > 0.01


def test_score_forecast_matches_definitions():
    y = np.array([0, 0, 1, 1], dtype=float)
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = score_forecast(y, p, ece_bins=2)
    assert m.roc_auc == 0.75
    assert np.isclose(m.brier, np.mean((p - y) ** 2))
    assert np.isclose(m.log_loss, -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    # bins {0.1, 0.35} and {0.4, 0.8}: |0.225-0.5| and |0.6-0.5|
    assert np.isclose(m.ece, (0.275 * 2 + 0.1 * 2) / 4)


def test_summarise_folds_mean_and_sd():
    y = np.array([0, 1, 0, 1], dtype=float)
    a = score_forecast(y, np.array([0.2, 0.8, 0.3, 0.7]), 2)
    b = score_forecast(y, np.array([0.4, 0.6, 0.45, 0.55]), 2)
    summary = summarise_folds([a, b])
    assert np.isclose(summary["brier"]["mean"], (a.brier + b.brier) / 2)
    assert summary["brier"]["sd"] > 0


def test_grade_backtest_refuses_outcomes_that_are_not_0_1():
    import pytest

    from credit_pd.master_scale import DEFAULT_MASTER_SCALE
    from credit_pd.training.metrics import grade_backtest

    rows = grade_backtest(np.array([0.0, 1.0, 0.0]), np.array([0.001, 0.3, 0.3]), DEFAULT_MASTER_SCALE)
    assert [(r.grade, r.count, r.defaults) for r in rows if r.count] == [("1", 1, 0), ("9", 2, 1)]
    with pytest.raises(ValueError, match="0/1 outcomes"):
        grade_backtest(np.array([0.0, 2.0]), np.array([0.1, 0.1]), DEFAULT_MASTER_SCALE)
