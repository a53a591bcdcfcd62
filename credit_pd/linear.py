"""The GLM part of a scoring model: a documented design on the encoded matrix and its coefficients.

A model-risk validator's first alternative is a logistic regression, so the scoring model can
hold one (alone, as the offset the trees are boosted from, or as a blend member). Its design is
computed from the same numeric matrix the trees score (`FeatureEncoder.encode_frame` /
`encode_records`), so the service, the batch job and monitoring need nothing new:

- numeric and boolean columns: clipped to the training range (so an out-of-range value scores
  as the nearest value training saw, as the trees score it), missing values imputed with the
  training median plus a missing-indicator column (when training had missing values), log1p
  by rule (`log1p_rule`: every non-negative column that is not a 0/1 flag), then centred and scaled to unit training variance;
- categorical columns: one 0/1 column per level with at least `MIN_LEVEL_ROWS` training rows,
  one column for the rarer levels together, one for missing; an unseen label is encoded as
  missing by the encoder, so it scores as missing here too. Indicators stay 0/1: scaled to unit
  variance (glmnet's way), a level of 20 rows escapes the L2 penalty, and on the embedded sample
  that cost 1% of the GLM's inner-CV log loss (measured), besides a 4x slower fit.

Explanations are exact: each schema feature's contribution is coefficient x (design value -
training mean of that design column), summed over the feature's columns (value, indicator,
levels); base value = intercept + coefficients . training means; base + contributions = the
raw score exactly (up to floating-point rounding). Fitting lives in the training wing
(`credit_pd.training.glm`): this module is numpy only, so scikit-learn stays out of the bento.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from credit_pd.explanation import row_sums
from credit_pd.features import FeatureEncoder

# Levels of a categorical seen on fewer training rows share one "rare" column: a coefficient
# per handful of rows is noise, and 20 is scikit-learn's usual `min_frequency` for one-hot.
MIN_LEVEL_ROWS = 20
# Columns with fewer distinct training values than this (0/1 flags) stay linear under the rule.
LOG1P_MIN_DISTINCT = 3

VALUE, MISSING, LEVEL, RARE = "value", "missing", "level", "rare"


@dataclass(frozen=True)
class DesignColumn:
    """One column of the design: which schema feature it belongs to and how it is computed.

    kind `value`: transform(clip(x, low, high), median-imputed); `missing`: 1 where x is
    missing; `level`: 1 where the category code is in `codes`; `rare`: same, for the rare levels
    pooled. The column is then (that - center) / scale (0 and 1 for the indicators).
    """

    feature: int
    kind: str
    median: float = 0.0
    low: float = -np.inf
    high: float = np.inf
    log1p: bool = False
    center: float = 0.0
    scale: float = 1.0
    codes: tuple[int, ...] = ()

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The column before centring and scaling, from the feature's encoded values `x`."""
        if self.kind == VALUE:
            v = np.clip(np.where(np.isnan(x), self.median, x), self.low, self.high)
            return np.sign(v) * np.log1p(np.abs(v)) if self.log1p else v
        if self.kind == MISSING:
            return np.isnan(x).astype(np.float64)
        if self.kind == LEVEL:
            return (x == self.codes[0]).astype(np.float64)
        return np.isin(x, self.codes).astype(np.float64)

    def standardised(self, x: np.ndarray) -> DesignColumn:
        """This column with the training mean and standard deviation of `raw(x)` as center and scale."""
        v = self.raw(x)
        scale = float(v.std())
        return replace(self, center=float(v.mean()), scale=scale if scale > 0 else 1.0)

    def label(self, feature_names: Sequence[str]) -> str:
        name = feature_names[self.feature]
        if self.kind == VALUE:
            return f"{name}{' (log1p)' if self.log1p else ''}"
        if self.kind == LEVEL:
            return f"{name}={self.codes[0]}"
        return f"{name} [{self.kind}]"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"feature": self.feature, "kind": self.kind, "center": self.center, "scale": self.scale}
        if self.kind == VALUE:
            data.update(median=self.median, low=self.low, high=self.high, log1p=self.log1p)
        elif self.kind in (LEVEL, RARE):
            data["codes"] = list(self.codes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DesignColumn:
        kind = data["kind"]
        if kind not in (VALUE, MISSING, LEVEL, RARE):
            raise ValueError(f"design column of feature {data.get('feature')}: unknown kind {kind!r}")
        extra = {k: data[k] for k in ("median", "low", "high", "center", "scale") if k in data}
        return cls(
            feature=int(data["feature"]),
            kind=kind,
            log1p=bool(data.get("log1p", False)),
            codes=tuple(int(c) for c in data.get("codes", ())),
            **{k: float(v) for k, v in extra.items()},
        )


@dataclass(frozen=True)
class _DesignPlan:
    """A design's columns grouped by kind as index arrays, so a batch's design is a few numpy calls.

    A loop over the columns (`DesignColumn.raw` each) cost ~160 small numpy calls per batch: for a
    100-row request more than the trees' TreeSHAP. Each group below computes exactly what `raw`
    computes for its columns, element by element (the tests compare the bits).
    """

    n_columns: int
    value_pos: np.ndarray  # design positions of the value columns
    value_feature: np.ndarray
    value_median: np.ndarray
    value_low: np.ndarray
    value_high: np.ndarray
    value_log1p: np.ndarray  # positions within the value group that take log1p
    missing_pos: np.ndarray
    missing_feature: np.ndarray
    level_pos: np.ndarray
    level_feature: np.ndarray
    level_code: np.ndarray  # float64: `x == code` as `raw` compares it
    rare: tuple[tuple[int, int, tuple[int, ...]], ...]  # (position, feature, codes) per rare column
    # Per step j: (features that have a j-th column, that column's design position).
    sum_steps: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def of(cls, columns: Sequence[DesignColumn]) -> _DesignPlan:
        """Group `columns` (in design order) by kind and by feature."""

        def positions(kind: str) -> list[int]:
            return [i for i, c in enumerate(columns) if c.kind == kind]

        values, missing, levels = positions(VALUE), positions(MISSING), positions(LEVEL)
        return cls(
            n_columns=len(columns),
            value_pos=_ints(values),
            value_feature=_ints([columns[i].feature for i in values]),
            value_median=np.array([columns[i].median for i in values], dtype=np.float64),
            value_low=np.array([columns[i].low for i in values], dtype=np.float64),
            value_high=np.array([columns[i].high for i in values], dtype=np.float64),
            value_log1p=_ints([k for k, i in enumerate(values) if columns[i].log1p]),
            missing_pos=_ints(missing),
            missing_feature=_ints([columns[i].feature for i in missing]),
            level_pos=_ints(levels),
            level_feature=_ints([columns[i].feature for i in levels]),
            level_code=np.array([columns[i].codes[0] for i in levels], dtype=np.float64),
            rare=tuple((i, columns[i].feature, columns[i].codes) for i in positions(RARE)),
            sum_steps=_sum_steps(columns),
        )

    def raw(self, matrix: np.ndarray) -> np.ndarray:
        """(n_rows, n_columns): every column before centring and scaling (`DesignColumn.raw`)."""
        out = np.empty((len(matrix), self.n_columns), dtype=np.float64)
        if self.value_pos.size:
            x = matrix[:, self.value_feature]
            v = np.clip(np.where(np.isnan(x), self.value_median, x), self.value_low, self.value_high)
            if self.value_log1p.size:
                w = v[:, self.value_log1p]
                v[:, self.value_log1p] = np.sign(w) * np.log1p(np.abs(w))
            out[:, self.value_pos] = v
        if self.missing_pos.size:
            out[:, self.missing_pos] = np.isnan(matrix[:, self.missing_feature])
        if self.level_pos.size:
            out[:, self.level_pos] = matrix[:, self.level_feature] == self.level_code
        for position, feature, codes in self.rare:
            out[:, position] = np.isin(matrix[:, feature], codes)
        return out


def _ints(values: Sequence[int]) -> np.ndarray:
    return np.array(values, dtype=np.intp)


def _sum_steps(columns: Sequence[DesignColumn]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Step j: every feature with more than j columns, and its j-th column (design order)."""
    by_feature: dict[int, list[int]] = {}
    for position, column in enumerate(columns):
        by_feature.setdefault(column.feature, []).append(position)
    features = sorted(by_feature)
    width = max((len(p) for p in by_feature.values()), default=0)
    return tuple(
        (
            _ints([f for f in features if len(by_feature[f]) > j]),
            _ints([by_feature[f][j] for f in features if len(by_feature[f]) > j]),
        )
        for j in range(width)
    )


@dataclass(frozen=True)
class LinearDesign:
    """The design columns over an encoded matrix of `n_features` columns."""

    n_features: int
    columns: tuple[DesignColumn, ...]

    @classmethod
    def fit(
        cls, matrix: np.ndarray, encoder: FeatureEncoder, log1p: Mapping[str, bool | None] | None = None
    ) -> LinearDesign:
        """Learn medians, ranges, transforms, scales and frequent levels from the training matrix.

        `log1p` maps feature names to an override (True/False); None or absent: the rule. (Training
        uses the rule for every feature: the schema has no per-feature flag yet.)
        """
        categorical = set(encoder.categorical_indices)
        columns: list[DesignColumn] = []
        for j, name in enumerate(encoder.feature_names):
            x = matrix[:, j]
            found = _categorical_columns(j, x) if j in categorical else _numeric_columns(j, x, (log1p or {}).get(name))
            columns.extend(column.standardised(x) if column.kind == VALUE else column for column in found)
        return cls(n_features=len(encoder.feature_names), columns=tuple(columns))

    @property
    def feature_of_column(self) -> np.ndarray:
        return np.array([c.feature for c in self.columns], dtype=np.intp)

    def sum_per_feature(self, per_column: np.ndarray) -> np.ndarray:
        """(n_rows, n_features): each feature's design columns summed, row by row in a fixed order.

        Not a matrix product with a 0/1 grouping matrix: BLAS picks kernels and blocking by the number
        of rows, so the same row could get a last-bit different sum in another batch, and a decision
        record must replay to the identical PD whatever batch it was scored in. Every feature's sum is
        0 + its first column + its second ..., in design order (the bits `row_sums` gives), computed
        for all features at once: step j adds the j-th column of every feature that has one.
        """
        out = np.zeros((len(per_column), self.n_features))
        for features, columns in self._plan.sum_steps:
            out[:, features] += per_column[:, columns]
        return out

    @cached_property
    def _plan(self) -> _DesignPlan:
        return _DesignPlan.of(self.columns)

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        """The (n_rows, n_columns) design of an encoded matrix: one numpy call per kind of column.

        Element by element the same arithmetic as `DesignColumn.raw` (the reference, which `fit`
        uses), so a row's design has the same bits whatever the batch.
        """
        return (self._plan.raw(self.checked(matrix)) - self.centers) / self.scales

    def checked(self, matrix: np.ndarray) -> np.ndarray:
        """`matrix` as float64 of this design's width, or a ValueError saying what was expected."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"matrix of shape {matrix.shape} given; the design expects (n_rows, {self.n_features})")
        return matrix

    @cached_property
    def centers(self) -> np.ndarray:
        return np.array([c.center for c in self.columns], dtype=np.float64)

    @cached_property
    def scales(self) -> np.ndarray:
        return np.array([c.scale for c in self.columns], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearDesign:
        return cls(
            n_features=int(data["n_features"]), columns=tuple(DesignColumn.from_dict(c) for c in data["columns"])
        )


def _numeric_columns(j: int, x: np.ndarray, log1p_flag: bool | None) -> list[DesignColumn]:
    present = x[~np.isnan(x)]
    if len(present) == 0:
        return []  # never observed: nothing to learn, the feature contributes 0
    low, high = float(present.min()), float(present.max())
    take_log = log1p_rule(present) if log1p_flag is None else bool(log1p_flag)
    columns = [DesignColumn(j, VALUE, median=float(np.median(present)), low=low, high=high, log1p=take_log)]
    if len(present) < len(x):
        columns.append(DesignColumn(j, MISSING))
    return columns


def log1p_rule(present: np.ndarray) -> bool:
    """log1p for every non-negative column that is not a flag.

    Credit amounts, counts, days and ratios are non-negative with long right tails, where the
    log-odds move with orders of magnitude; for a bounded one (age, hour of day) log1p is close
    to linear over the range, so one rule serves all. Measured on the embedded sample's first
    fold: log1p of every non-negative column scored a lower log loss than log1p of the skewed
    ones only (skewness > 1). `LinearDesign.fit(log1p=...)` overrides it per feature.
    """
    return bool(present.min() >= 0 and len(np.unique(present)) >= LOG1P_MIN_DISTINCT)


def _categorical_columns(j: int, x: np.ndarray) -> list[DesignColumn]:
    codes, counts = np.unique(x[~np.isnan(x)].astype(np.int64), return_counts=True)
    frequent = [int(c) for c, n in zip(codes, counts, strict=False) if n >= MIN_LEVEL_ROWS]
    rare = tuple(int(c) for c, n in zip(codes, counts, strict=False) if n < MIN_LEVEL_ROWS)
    columns = [DesignColumn(j, LEVEL, codes=(code,)) for code in frequent]
    if rare:
        columns.append(DesignColumn(j, RARE, codes=rare))
    if np.isnan(x).any():
        columns.append(DesignColumn(j, MISSING))
    return columns


@dataclass(frozen=True)
class LinearModel:
    """A fitted logistic model on a `LinearDesign`: log-odds = intercept + design . coefficients.

    `means` are the design columns' training means (the reference point of the explanation);
    `constrained` names the monotone features whose fitted coefficient had the wrong sign and
    was fixed at 0 (credit policy wins over the data; the model card lists them).
    """

    design: LinearDesign
    coefficients: np.ndarray
    intercept: float
    means: np.ndarray
    constrained: tuple[str, ...] = ()
    penalty_c: float | None = None

    def __post_init__(self) -> None:
        n = len(self.design.columns)
        if self.coefficients.shape != (n,) or self.means.shape != (n,):
            raise ValueError(
                f"linear model: {n} design columns but {self.coefficients.shape} coefficients "
                f"and {self.means.shape} means"
            )

    def raw_score(self, matrix: np.ndarray) -> np.ndarray:
        """Log-odds of every row: a per-row sum in a fixed order, so a row's score does not depend on its batch."""
        return self.intercept + row_sums(self.design.transform(matrix) * self.coefficients)

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base value per row, contributions (n_rows, n_features)) with base + sum = raw score.

        The numeric features go through the design (`contributions_by_design`); a categorical
        feature's contribution depends on its code alone, so it is looked up in a table built from
        `contributions_by_design` itself (`_CodeTables`): the same bits, without the ~120 indicator
        columns and their sums per batch.
        """
        matrix = self.design.checked(matrix)
        contributions = self._numeric_part.contributions_by_design(matrix)
        self._code_tables.fill(matrix, contributions)
        base = self.intercept + float(self.means @ self.coefficients)
        return np.full(len(matrix), base), contributions

    def contributions_by_design(self, matrix: np.ndarray) -> np.ndarray:
        """(n_rows, n_features): coefficient x (design - training mean), summed per feature; the reference."""
        per_column = (self.design.transform(matrix) - self.means) * self.coefficients
        return self.design.sum_per_feature(per_column)

    def check_code_tables(self, matrix: np.ndarray) -> None:
        """Raise ValueError unless `explain` (code tables) gives `contributions_by_design`'s bits on `matrix`."""
        fast, reference = self.explain(matrix)[1], self.contributions_by_design(matrix)
        if not np.array_equal(fast, reference):
            raise ValueError(
                "GLM code tables differ from the design's sums by up to "
                f"{float(np.max(np.abs(fast - reference))):.3g}; the stored GLM part is inconsistent"
            )

    @cached_property
    def _numeric_part(self) -> LinearModel:
        """This model restricted to the columns of the features the code tables do not cover."""
        tabled = set(_tabled_features(self.design).tolist())
        keep = [i for i, c in enumerate(self.design.columns) if c.feature not in tabled]
        return replace(
            self,
            design=replace(self.design, columns=tuple(self.design.columns[i] for i in keep)),
            coefficients=self.coefficients[keep],
            means=self.means[keep],
        )

    @cached_property
    def _code_tables(self) -> _CodeTables:
        return _CodeTables.of(self, _tabled_features(self.design))

    def signed_value_coefficients(self) -> dict[int, float]:
        """Feature index -> coefficient of its value column (the monotone direction of the GLM)."""
        return {
            c.feature: float(b) for c, b in zip(self.design.columns, self.coefficients, strict=False) if c.kind == VALUE
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "design": self.design.to_dict(),
            "coefficients": [float(b) for b in self.coefficients],
            "intercept": float(self.intercept),
            "means": [float(m) for m in self.means],
            "constrained": list(self.constrained),
            "penalty_c": self.penalty_c,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearModel:
        return cls(
            design=LinearDesign.from_dict(data["design"]),
            coefficients=np.asarray(data["coefficients"], dtype=np.float64),
            intercept=float(data["intercept"]),
            means=np.asarray(data["means"], dtype=np.float64),
            constrained=tuple(data.get("constrained", ())),
            penalty_c=data.get("penalty_c"),
        )


# A categorical feature whose largest level code is below this gets a contribution table (8 bytes
# per code); larger or negative codes (no encoder writes them) go through the design instead.
MAX_TABLE_CODES = 1 << 16


def _tabled_features(design: LinearDesign) -> np.ndarray:
    """Features whose columns are all indicators of codes in [0, MAX_TABLE_CODES): the categorical ones."""
    by_feature: dict[int, list[DesignColumn]] = {}
    for column in design.columns:
        by_feature.setdefault(column.feature, []).append(column)
    return _ints(
        [
            feature
            for feature, columns in sorted(by_feature.items())
            if all(c.kind != VALUE and all(0 <= code < MAX_TABLE_CODES for code in c.codes) for c in columns)
        ]
    )


@dataclass(frozen=True)
class _CodeTables:
    """GLM contributions of categorical features by code, computed once through the design.

    A categorical feature's design columns (one indicator per level, the rare levels, missing)
    depend on its own encoded value only, so its contribution takes one of K + 2 values: a code
    0..K-1, any other number (no indicator set), or missing. Each is computed by
    `LinearModel.contributions_by_design` on a probe matrix, so a look-up gives the bits the
    design would give for that row, in any batch.
    """

    features: np.ndarray  # (T,) the tabled features
    sizes: np.ndarray  # (T,) float64: K, one above the feature's largest level code
    offsets: np.ndarray  # (T,) where the feature's K + 2 values start in `values`
    values: np.ndarray  # per feature: codes 0..K-1, then "no level", then missing

    @classmethod
    def of(cls, model: LinearModel, features: np.ndarray) -> _CodeTables:
        """Tables for `features` of `model` (see `_tabled_features`)."""
        columns = model.design.columns
        sizes = [1 + max((code for c in columns if c.feature == f for code in c.codes), default=-1) for f in features]
        probe = np.full((max(sizes, default=0) + 2, model.design.n_features), np.nan)
        for feature, size in zip(features, sizes, strict=True):
            probe[: size + 1, feature] = np.arange(size + 1)  # codes, then K (no level); NaN after
        by_design = model.contributions_by_design(probe)
        blocks = [by_design[: size + 2, feature] for feature, size in zip(features, sizes, strict=True)]
        return cls(
            features=features,
            sizes=np.array(sizes, dtype=np.float64),
            offsets=_ints(np.cumsum([0] + [size + 2 for size in sizes])[:-1].tolist()),
            values=np.concatenate(blocks) if blocks else np.zeros(0),
        )

    def fill(self, matrix: np.ndarray, out: np.ndarray) -> None:
        """Write the tabled features' contributions of `matrix`'s rows into `out`'s columns."""
        if not self.features.size:
            return
        x = matrix[:, self.features]
        code = np.where((x >= 0) & (x < self.sizes) & (x == np.floor(x)), x, self.sizes)
        code = np.where(np.isnan(x), self.sizes + 1, code)
        out[:, self.features] = self.values[code.astype(np.intp) + self.offsets]
