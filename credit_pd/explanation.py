"""Turning exact TreeSHAP contributions into the per-application explanation a reviewer reads.

Contributions are in the booster's log-odds (raw score): base value + sum of contributions is
exactly the raw score that the calibrated PD is computed from. Ranking by absolute contribution
answers "what pushed this PD up or down most".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class FeatureContribution:
    feature: str
    value: Any
    contribution: float


def rank_contributions(
    contributions: np.ndarray,
    feature_names: Sequence[str],
    record: Mapping[str, Any],
    top_k: int | None,
) -> list[FeatureContribution]:
    """The `top_k` largest |contribution| features of one row (all of them when top_k is None)."""
    order = np.argsort(-np.abs(contributions), kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [
        FeatureContribution(feature=feature_names[i], value=record.get(feature_names[i]), contribution=float(contributions[i]))
        for i in order
    ]
