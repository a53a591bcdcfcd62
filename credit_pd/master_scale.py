"""The master scale: fixed PD bands ("grades") that credit policy, pricing and capital work with.

A lender's rating scale is policy, not a fitted quantity: the same PD gets the same grade under
every model, so grades stay comparable across model versions. The scale is data: the default is
the geometric scale below, a schema may carry its own (`master_scale:` key) and `train.py
--master-scale FILE` overrides both; training stores the scale it used inside the stored schema,
so the service, the batch job and replay grade with exactly the scale the model was published with.

Grade i holds the PDs in (max_pd[i-1], max_pd[i]]: the first grade starts at 0, the last ends at 1.

The per-grade backtest is the one-sided Jeffreys test of ECB/EBA PD back-testing (ECB "Instructions
for reporting the validation results of internal models", section on the PD back-test): with n
applications, d defaults and mean predicted PD `p` in a grade, the posterior of the grade's default
rate under the Jeffreys prior Beta(1/2, 1/2) is Beta(d + 1/2, n - d + 1/2), and

    p-value = BetaCDF(p; d + 1/2, n - d + 1/2)

is the posterior probability that the true default rate is at most the predicted PD. A small
p-value says the grade's PD is too low (the test is one-sided: it flags under-estimation, the
error that costs a lender money and capital; over-estimation is visible in the table but not a
test failure).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.stats import beta

from credit_pd.errors import SchemaError
from credit_pd.files import read_yaml

# Traffic-light thresholds of the one-sided Jeffreys p-value. 5% is the level the ECB's reporting
# instructions use for the PD back-test; below 1% the under-estimation is strong evidence rather
# than a warning. green: p >= 5%; amber: 1% <= p < 5%; red: p < 1%.
AMBER_BELOW = 0.05
RED_BELOW = 0.01
# The Jeffreys interval shown per grade: equal-tailed 95%.
INTERVAL_LEVEL = 0.95


class Grade(BaseModel):
    """One band of the scale: its name and the largest PD it holds (inclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    max_pd: float = Field(gt=0.0, le=1.0)


class MasterScale(BaseModel):
    """Grades from best (lowest PD) to worst; the last grade's `max_pd` is 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grades: tuple[Grade, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _bands_cover_zero_to_one(self) -> MasterScale:
        names = [g.name for g in self.grades]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"master_scale.grades: grade names must be unique; repeated: {repeated}")
        for before, after in zip(self.grades, self.grades[1:], strict=False):
            if not after.max_pd > before.max_pd:
                raise ValueError(
                    f"master_scale.grades: max_pd must increase from grade to grade; grade {after.name!r} "
                    f"has max_pd {after.max_pd} after grade {before.name!r} with {before.max_pd}"
                )
        if self.grades[-1].max_pd != 1.0:
            raise ValueError(
                f"master_scale.grades: the last grade ({self.grades[-1].name!r}) must end at max_pd 1.0, "
                f"got {self.grades[-1].max_pd}, so that every PD has a grade"
            )
        return self

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.grades]

    @property
    def edges(self) -> np.ndarray:
        """The inner band edges (every grade's max_pd but the last), for `np.searchsorted`."""
        return np.array([g.max_pd for g in self.grades[:-1]], dtype=np.float64)

    def grade_index(self, pds: np.ndarray) -> np.ndarray:
        """0-based grade of each PD: side="left" puts a PD equal to an edge in the lower grade."""
        return np.searchsorted(self.edges, np.asarray(pds, dtype=np.float64), side="left")

    def grade_names(self, pds: np.ndarray) -> list[str]:
        names = self.names
        return [names[i] for i in self.grade_index(pds).tolist()]


def geometric_scale(first_max_pd: float, ratio: float, n_grades: int) -> MasterScale:
    """Grades "1".."n": grade k ends at first_max_pd * ratio**(k-1), the last grade at 1."""
    bounds = [first_max_pd * ratio**k for k in range(n_grades - 1)] + [1.0]
    return MasterScale(grades=tuple(Grade(name=str(k + 1), max_pd=round(b, 10)) for k, b in enumerate(bounds)))


# The default scale: 10 grades, each band twice as wide in PD as the one before, from 0.125% to
# 32% (then up to 100%). Doubling bands are the usual shape of a master scale (the PD spans three
# orders of magnitude); the BNPL base rate of ~1.4% falls in grade 5 (1%-2%).
DEFAULT_MASTER_SCALE = geometric_scale(first_max_pd=0.00125, ratio=2.0, n_grades=10)


def load_master_scale(path: Path | str) -> MasterScale:
    """Read a lender's scale file: a mapping with `grades: [{name, max_pd}, ...]`."""
    path = Path(path)
    raw = read_yaml(path, "master scale file")
    try:
        return MasterScale.model_validate(raw)
    except ValidationError as exc:
        raise SchemaError(
            f"master scale file {path} is invalid (expected `grades: [{{name, max_pd}}, ...]`):\n{exc}"
        ) from exc


@dataclass(frozen=True)
class GradeBacktest:
    """One grade's back-test row: predicted against observed default rate, and the Jeffreys test."""

    grade: str
    min_pd: float  # exclusive lower bound of the band
    max_pd: float
    count: int
    defaults: int
    mean_pd: float | None  # None when the grade holds no application
    observed_rate: float | None
    interval_low: float | None
    interval_high: float | None
    p_value: float | None
    traffic_light: str  # green / amber / red; "none" when the grade is empty

    def as_dict(self) -> dict[str, Any]:
        """Plain values without the None fields of an empty grade (BentoML metadata holds no None)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def jeffreys_interval(defaults: int, count: int, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Equal-tailed Jeffreys interval of a default rate; 0 (1) at the ends when d = 0 (d = n), per Brown-Cai-DasGupta."""
    a, b = defaults + 0.5, count - defaults + 0.5
    tail = (1.0 - level) / 2.0
    low = 0.0 if defaults == 0 else float(beta.ppf(tail, a, b))
    high = 1.0 if defaults == count else float(beta.ppf(1.0 - tail, a, b))
    return low, high


def jeffreys_p_value(mean_pd: float, defaults: int, count: int) -> float:
    """One-sided p-value: posterior P(default rate <= mean_pd) under Beta(d + 1/2, n - d + 1/2)."""
    return float(beta.cdf(mean_pd, defaults + 0.5, count - defaults + 0.5))


def traffic_light(p_value: float) -> str:
    if p_value < RED_BELOW:
        return "red"
    if p_value < AMBER_BELOW:
        return "amber"
    return "green"


def backtest_grades(outcomes: np.ndarray, pds: np.ndarray, scale: MasterScale) -> list[GradeBacktest]:
    """The per-grade back-test of PDs against 0/1 outcomes, every grade of the scale in order."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    pds = np.asarray(pds, dtype=np.float64)
    if outcomes.shape != pds.shape:
        raise ValueError(f"outcomes and pds differ in shape: {outcomes.shape} vs {pds.shape}")
    index = scale.grade_index(pds)
    rows = []
    lower = 0.0
    for k, grade in enumerate(scale.grades):
        members = index == k
        n, d = int(members.sum()), int(outcomes[members].sum())
        if n == 0:
            rows.append(GradeBacktest(grade.name, lower, grade.max_pd, 0, 0, None, None, None, None, None, "none"))
        else:
            mean_pd = float(pds[members].mean())
            low, high = jeffreys_interval(d, n)
            p = jeffreys_p_value(mean_pd, d, n)
            rows.append(
                GradeBacktest(grade.name, lower, grade.max_pd, n, d, mean_pd, d / n, low, high, p, traffic_light(p))
            )
        lower = grade.max_pd
    return rows
