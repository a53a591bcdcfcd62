"""Fitting the GLM part: L2-regularised logistic regression on `credit_pd.linear.LinearDesign`.

The penalised log-likelihood is scikit-learn's (`LogisticRegression(C)`: C x summed log loss +
||w||^2 / 2, intercept unpenalised), minimised by scipy's L-BFGS-B so that credit policy can fix
the sign of the monotone features' value columns as bounds: a coefficient of the wrong sign is
constrained to 0 (the bound is active), in one fit, at the exact constrained optimum. With no
bound active the result is scikit-learn's (the tests compare the two). Missing indicators and
category levels are free. The model records which monotone features sit at 0 so the model card
can say so.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from credit_pd.features import FeatureEncoder
from credit_pd.linear import VALUE, LinearDesign, LinearModel

# L-BFGS-B limits. The tolerance is on the projected gradient of the mean penalised loss: 1e-4
# (scikit-learn's default `tol`) took 1.1 s on 72,000 sample rows, 1e-5 took 5 s for 0.01% lower
# validation log loss (measured); the iteration cap only stops a runaway.
GLM_MAX_ITER = 1_000
GLM_GRADIENT_TOLERANCE = 1e-4


def fit_glm(
    matrix: np.ndarray, y: np.ndarray, design: LinearDesign, encoder: FeatureEncoder, penalty_c: float
) -> LinearModel:
    """Logistic regression on `design.transform(matrix)` with the monotone signs as bounds."""
    x = design.transform(matrix)
    y = np.asarray(y, dtype=np.float64)
    required = _required_signs(design, encoder)
    bounds = [(None, None)] + [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in required]
    # One BLAS thread: the products are small, and OpenBLAS threads spinning on a shared 2-core
    # machine made the fit ~3x slower than one thread (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            _penalised_loss,
            np.zeros(x.shape[1] + 1),
            args=(x, y, penalty_c),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            # scikit-learn's lbfgs stopping rule: the gradient, not a relative change of the loss.
            options={"maxiter": GLM_MAX_ITER, "gtol": GLM_GRADIENT_TOLERANCE, "ftol": 64 * np.finfo(float).eps},
        )
    intercept, coefficients = float(result.x[0]), result.x[1:]
    constrained = tuple(
        encoder.feature_names[c.feature]
        for c, b, s in zip(design.columns, coefficients, required, strict=False)
        if s != 0 and b == 0.0
    )
    return LinearModel(
        design=design,
        coefficients=coefficients,
        intercept=intercept,
        means=x.mean(axis=0),
        constrained=constrained,
        penalty_c=penalty_c,
    )


def _penalised_loss(theta: np.ndarray, x: np.ndarray, y: np.ndarray, penalty_c: float) -> tuple[float, np.ndarray]:
    """scikit-learn's objective scaled by 1 / (C n): mean log loss + ||w||^2 / (2 C n), and its gradient."""
    n = len(y)
    raw = theta[0] + x @ theta[1:]
    loss = np.mean(np.logaddexp(0.0, raw) - y * raw) + theta[1:] @ theta[1:] / (2.0 * penalty_c * n)
    residual = (0.5 * (1.0 + np.tanh(0.5 * raw)) - y) / n
    gradient = np.concatenate(([residual.sum()], x.T @ residual + theta[1:] / (penalty_c * n)))
    return float(loss), gradient


def _required_signs(design: LinearDesign, encoder: FeatureEncoder) -> np.ndarray:
    """Per design column: +1 / -1 for a monotone feature's value column, 0 for every other column."""
    signs = encoder.monotone_constraints
    return np.array([signs[c.feature] if c.kind == VALUE else 0 for c in design.columns], dtype=np.float64)
