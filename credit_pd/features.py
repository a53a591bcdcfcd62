"""Turning typed dataset columns into the numeric matrix LightGBM scores.

Categoricals become integer codes of a vocabulary learned once from the training file and stored
with the model, so training, batch scoring and the service encode a value identically and the
booster's native categorical splits see the same codes. Missing and unseen categories both become
NaN, which LightGBM routes down its learned missing-value branch.

Categories are spelled canonically first (`credit_pd.categories`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from credit_pd.categories import NUMERIC_CODE, canonical_categories, canonical_category
from credit_pd.schema import DatasetSchema, FeatureType, Monotone

MONOTONE_SIGN = {Monotone.INCREASING: 1, Monotone.DECREASING: -1}


@dataclass(frozen=True)
class FeatureEncoder:
    """Column order, category vocabularies and the numeric ranges seen in training."""

    feature_names: tuple[str, ...]
    categorical: Mapping[str, tuple[str, ...]]
    boolean: tuple[str, ...]
    numeric_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    monotone: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: DatasetSchema) -> FeatureEncoder:
        """Learn vocabularies (sorted, so codes do not depend on row order) and value ranges."""
        categorical = {
            name: tuple(sorted(canonical_categories(frame[name]).dropna().unique()))
            for name in schema.names_of(FeatureType.CATEGORICAL)
        }
        numeric_ranges = {
            name: (float(frame[name].min()), float(frame[name].max()))
            for name in schema.names_of(FeatureType.NUMERIC)
            if frame[name].notna().any()
        }
        return cls(
            feature_names=tuple(schema.feature_names),
            categorical=categorical,
            boolean=tuple(schema.names_of(FeatureType.BOOLEAN)),
            numeric_ranges=numeric_ranges,
            monotone={f.name: MONOTONE_SIGN[f.monotone] for f in schema.features if f.monotone is not None},
        )

    def numeric_coded(self, name: str) -> bool:
        """True when every training label of categorical `name` is a numeric code (e.g. status 1, 2)."""
        vocab = self.categorical[name]
        return bool(vocab) and all(NUMERIC_CODE.match(label) for label in vocab)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions LightGBM must treat as categorical."""
        return [i for i, name in enumerate(self.feature_names) if name in self.categorical]

    @property
    def monotone_constraints(self) -> list[int]:
        """LightGBM's per-feature constraint list: +1 increasing, -1 decreasing, 0 free."""
        return [self.monotone.get(name, 0) for name in self.feature_names]

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode a typed frame (as `load_dataset` returns it) into a float64 matrix."""
        columns = [self._encode_column(name, frame[name]) for name in self.feature_names]
        return np.column_stack(columns).astype(np.float64, copy=False)

    def encode_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode request records (dicts of feature -> value or None); the service's path.

        Rows are built as Python lists and converted to the matrix in one numpy call. A category
        already in canonical spelling (what the service's request model hands over) is found with
        one dict look-up; any other spelling goes through `canonical_category` first.
        """
        nan = math.nan
        columns = [(name, self._code_lookups.get(name)) for name in self.feature_names]
        rows = []
        for record in records:
            row = []
            for name, lookup in columns:
                value = record.get(name)
                if value is None:
                    row.append(nan)
                elif lookup is None:
                    row.append(value)
                elif value in lookup:
                    row.append(lookup[value])
                else:
                    row.append(lookup.get(canonical_category(value), nan))
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(records), len(self.feature_names))

    @cached_property
    def _code_lookups(self) -> dict[str, dict[Any, float]]:
        """Per categorical: canonical label -> code (as float, the matrix's type).

        Only labels that are their own canonical spelling are keys, so a direct hit can never
        differ from `lookup[canonical_category(value)]`; booleans are never keys (`True == 1`).
        """
        return {
            name: {label: float(code) for code, label in enumerate(vocab) if canonical_category(label) == label}
            for name, vocab in self.categorical.items()
        }

    def input_warnings(self, matrix: np.ndarray, value_at: Callable[[int, str], Any]) -> list[list[str]]:
        """Per row: categories never seen in training (encoded as missing though a value was sent) and
        numbers outside the training range (trees score them as the nearest seen value).

        `matrix` is what `encode_*` returned for the rows; `value_at(row, feature)` gives the value as
        the caller received it, for the message. One wording for the service and the batch job, found
        with two vectorised masks over the batch; only flagged rows build strings.
        """
        warnings: list[list[str]] = [[] for _ in range(len(matrix))]

        def received(row: int, name: str) -> Any:
            value = value_at(row, name)
            return value.item() if isinstance(value, np.generic) else value  # 99.0, not np.float64(99.0)

        for row, name in self._unseen_cells(matrix):
            value = received(row, name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                warnings[row].append(f"{name}: value {value!r} was not seen in training; scored as missing")
        columns, low, high = self._range_arrays
        if len(columns):
            with np.errstate(invalid="ignore"):
                outside = (matrix[:, columns] < low) | (matrix[:, columns] > high)
            for row, j in zip(*(axis.tolist() for axis in np.nonzero(outside)), strict=False):
                name = self.feature_names[columns[j]]
                warnings[row].append(
                    f"{name}: value {received(row, name)!r} is outside the training range "
                    f"[{low[j]:g}, {high[j]:g}]; scored as the nearest seen value"
                )
        return warnings

    def _unseen_cells(self, matrix: np.ndarray) -> list[tuple[int, str]]:
        """(row, feature) of every categorical cell encoded as missing, row by row."""
        columns = np.array(self.categorical_indices, dtype=np.intp)
        if not len(columns):
            return []
        rows, cols = np.nonzero(np.isnan(matrix[:, columns]))
        return [(row, self.feature_names[col]) for row, col in zip(rows.tolist(), columns[cols].tolist(), strict=False)]

    @cached_property
    def _range_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Matrix columns with a training range, and their lows and highs, for one vectorised check."""
        ranged = [(i, name) for i, name in enumerate(self.feature_names) if name in self.numeric_ranges]
        return (
            np.array([i for i, _ in ranged], dtype=np.intp),
            np.array([self.numeric_ranges[name][0] for _, name in ranged]),
            np.array([self.numeric_ranges[name][1] for _, name in ranged]),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able form, stored beside the booster so no pickled classes are needed."""
        return {
            "feature_names": list(self.feature_names),
            "categorical": {name: list(vocab) for name, vocab in self.categorical.items()},
            "boolean": list(self.boolean),
            "numeric_ranges": {name: list(bounds) for name, bounds in self.numeric_ranges.items()},
            "monotone": dict(self.monotone),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(
            feature_names=tuple(data["feature_names"]),
            categorical={name: tuple(vocab) for name, vocab in data["categorical"].items()},
            boolean=tuple(data["boolean"]),
            numeric_ranges={name: (float(lo), float(hi)) for name, (lo, hi) in data["numeric_ranges"].items()},
            monotone={name: int(sign) for name, sign in data.get("monotone", {}).items()},
        )

    def _encode_column(self, name: str, column: pd.Series) -> np.ndarray:
        vocab = self.categorical.get(name)
        if vocab is None:
            return column.to_numpy(dtype=np.float64, na_value=np.nan)
        codes = pd.Categorical(canonical_categories(column), categories=list(vocab)).codes.astype(np.float64)
        codes[codes < 0] = np.nan
        return codes
