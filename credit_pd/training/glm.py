"""Fitting the GLM part: L2-regularised logistic regression on `credit_pd.linear.LinearDesign`.

scikit-learn's `LogisticRegression` (lbfgs) fits the coefficients. Credit policy fixes the sign
of the monotone features' value columns: a coefficient of the wrong sign is constrained to 0 by
refitting without that column (an active-set loop: drop the wrong-signed columns, refit, repeat
until every monotone coefficient has the policy's sign), and the model records which features
were constrained so the model card can say so. Missing indicators and category levels are free.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from credit_pd.features import FeatureEncoder
from credit_pd.linear import VALUE, LinearDesign, LinearModel

# lbfgs iterations: the design is scaled, so a few hundred suffice; the cap only stops a runaway.
GLM_MAX_ITER = 1_000


def fit_glm(matrix: np.ndarray, y: np.ndarray, design: LinearDesign, encoder: FeatureEncoder, penalty_c: float,
            sample_weight: np.ndarray | None = None) -> LinearModel:
    """Logistic regression on `design.transform(matrix)` with the monotone signs enforced."""
    x = design.transform(matrix)
    means = x.mean(axis=0)
    required = _required_signs(design, encoder)
    free = np.ones(x.shape[1], dtype=bool)
    while True:
        # One BLAS thread: the matrix-vector products are small, and OpenBLAS threads spinning on
        # a shared 2-core machine made the fit ~3x slower than one thread (measured).
        with threadpool_limits(limits=1, user_api="blas"):
            model = LogisticRegression(C=penalty_c, max_iter=GLM_MAX_ITER).fit(x[:, free], y, sample_weight=sample_weight)
        coefficients = np.zeros(x.shape[1])
        coefficients[free] = model.coef_[0]
        wrong = (required * coefficients) < 0
        if not wrong.any():
            break
        free &= ~wrong
    constrained = tuple(encoder.feature_names[c.feature] for c, fixed in zip(design.columns, ~free) if fixed)
    return LinearModel(design=design, coefficients=coefficients, intercept=float(model.intercept_[0]), means=means,
                       constrained=constrained, penalty_c=penalty_c)


def _required_signs(design: LinearDesign, encoder: FeatureEncoder) -> np.ndarray:
    """Per design column: +1 / -1 for a monotone feature's value column, 0 for every other column."""
    signs = encoder.monotone_constraints
    return np.array([signs[c.feature] if c.kind == VALUE else 0 for c in design.columns], dtype=np.float64)
