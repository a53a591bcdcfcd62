"""Enough defaults (and non-defaults) for the chosen cross-validation, checked before any fitting.

Nested CV splits each class twice: the outer stratified `n_folds` need one row of each class in
every validation fold (its metrics and its calibrator need both), and every outer training fold
is split again into `inner_folds` stratified inner folds, each of which needs both classes too.
With too few events scikit-learn fails deep inside the CV with a traceback (or warns and leaves a
fold without defaults); the training run instead says in one line how many it has and how many
it needs (`check_enough_events`).
"""

from __future__ import annotations

import math

import numpy as np

from credit_pd.config import TrainingConfig
from credit_pd.errors import DatasetError


def minimum_per_class(config: TrainingConfig) -> int:
    """Fewest rows of each class the nested CV can split: every outer and inner fold gets at least one.

    A stratified K-fold puts ceil(c / K) or floor(c / K) of a class's c rows in each validation
    fold, so the smallest outer training fold keeps c - ceil(c / n_folds) of them, which must be
    at least `inner_folds`; and c itself must be at least `n_folds`.
    """
    count = config.n_folds
    while count - math.ceil(count / config.n_folds) < config.inner_folds:
        count += 1
    return count


def check_enough_events(y: np.ndarray, config: TrainingConfig, target: str) -> None:
    """Raise DatasetError (one line: counts, minimum, what to change) when a class is too small."""
    needed = minimum_per_class(config)
    defaults = int(np.sum(y == 1))
    others = int(np.sum(y == 0))
    if min(defaults, others) >= needed:
        return
    scarce = "defaults" if defaults < needed else "non-defaults"
    raise DatasetError(
        f"too few {scarce} for {config.n_folds}-fold cross-validation with {config.inner_folds} inner folds: "
        f"{defaults} labelled row(s) have {target} = 1 and {others} have {target} = 0, and each class needs at least "
        f"{needed} (one in every outer validation fold, {config.inner_folds} in every outer training fold); "
        "add labelled rows or lower --folds"
    )
