"""Turning typed dataset columns into the numeric matrix LightGBM scores.

Categoricals become integer codes of a vocabulary learned once from the training file and stored
with the model, so training, batch scoring and the service encode a value identically and the
booster's native categorical splits see the same codes. Missing and unseen categories both become
NaN, which LightGBM routes down its learned missing-value branch.

Categories are spelled canonically first (`credit_pd.categories`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, repeat
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

        Records that carry every feature (the service's validated applications: the request model
        fills absent optional fields with None) are encoded column-wise: each record's values come
        out in one `itemgetter` call, the numeric and boolean columns become floats in one numpy
        call (None -> NaN), and each categorical column is looked up with `map` over one dict. A
        category already in canonical spelling (what the request model hands over) is found with
        that look-up; any other spelling goes through `canonical_category` first. Records missing
        a feature take the row-by-row path, which treats a missing key as None.
        """
        try:
            return self._encode_complete_records(records)
        except KeyError:
            return self._encode_records_by_row(records)

    def _encode_complete_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """`encode_records` of records holding every feature (KeyError otherwise): see there."""
        matrix = np.empty((len(records), len(self.feature_names)), dtype=np.float64)
        if not records:
            return matrix
        plain, plain_values, coded, coded_values = self._column_getters
        if plain:
            matrix[:, plain] = np.array([plain_values(record) for record in records], dtype=np.float64).reshape(
                len(records), len(plain)
            )
        if coded:
            matrix[:, coded] = self._category_codes(list(zip(*map(coded_values, records), strict=True))).T
        return matrix

    def _category_codes(self, columns: list[tuple[Any, ...]]) -> np.ndarray:
        """The categorical columns' codes, (columns, rows): one dict look-up per cell (None or a miss
        -> NaN), then `canonical_category` for the cells that missed but carry a value (another
        spelling, or unseen). Missing cells (None, most misses) are told apart without Python code per cell."""
        lookups = self._coded_lookups
        codes = np.array(
            [list(map(lookup.get, column)) for lookup, column in zip(lookups, columns, strict=True)], dtype=np.float64
        )
        missed = np.isnan(codes)
        if missed.any():
            present = np.fromiter(
                map(operator.is_not, chain.from_iterable(columns), repeat(None)), dtype=np.bool_, count=codes.size
            ).reshape(codes.shape)
            for col, row in zip(*np.nonzero(missed & present), strict=True):
                codes[col, row] = lookups[col].get(canonical_category(columns[col][row]), math.nan)
        return codes

    @cached_property
    def _coded_lookups(self) -> list[dict[Any, float]]:
        """`_code_lookups` of the categoricals, in column order (`categorical_indices`)."""
        return [self._code_lookups[self.feature_names[j]] for j in self.categorical_indices]

    @cached_property
    def _column_getters(
        self,
    ) -> tuple[
        list[int],
        Callable[[Mapping[str, Any]], tuple[Any, ...]],
        list[int],
        Callable[[Mapping[str, Any]], tuple[Any, ...]],
    ]:
        """(positions, values getter) of the numeric and boolean features, then of the categoricals."""
        coded = self.categorical_indices
        plain = [j for j in range(len(self.feature_names)) if j not in coded]
        return (
            plain,
            values_getter([self.feature_names[j] for j in plain]),
            coded,
            values_getter([self.feature_names[j] for j in coded]),
        )

    def _encode_records_by_row(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """`encode_records` of records that may lack features (a missing key is None): row by row."""
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
        the caller received it, for the message. One wording for the service and the batch job
        (`frame_warnings`), found with vectorised masks over the batch; only flagged rows build strings.
        """
        return self._warnings(matrix, lambda name, rows: [value_at(row, name) for row in rows.tolist()])

    def frame_warnings(self, matrix: np.ndarray, frame: pd.DataFrame) -> list[list[str]]:
        """`input_warnings` for rows received as a frame (the batch job's typed batch): the same
        warnings as `input_warnings(matrix, lambda row, name: frame[name].to_numpy()[row])`, with
        each column's cells taken by one numpy index instead of a Python call per cell."""
        return self._warnings(matrix, lambda name, rows: frame[name].to_numpy()[rows])

    def _warnings(self, matrix: np.ndarray, values_of: Callable[[str, np.ndarray], Sequence[Any]]) -> list[list[str]]:
        """The warnings of `input_warnings`; `values_of(feature, rows)` gives the received values of those rows.

        Each row's warnings are its unseen categories in feature order, then its out-of-range numbers
        in feature order: every flagged column adds (rows, messages) in that order, and a stable sort
        by row interleaves them. A missing categorical cell whose received value is None (nearly all
        of them) is passed over without Python code per cell (`operator.is_not` mapped in C).
        """
        found: list[tuple[np.ndarray, list[str]]] = []
        for j in self.categorical_indices:
            name = self.feature_names[j]
            rows = np.flatnonzero(np.isnan(matrix[:, j]))
            if not rows.size:
                continue
            values = values_of(name, rows)
            sent = np.fromiter(map(operator.is_not, values, repeat(None)), dtype=bool, count=len(rows))
            flagged, messages = [], []
            for position in np.flatnonzero(sent).tolist():
                value = _received(values[position])
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    flagged.append(position)
                    messages.append(f"{name}: value {value!r} was not seen in training; scored as missing")
            if flagged:
                found.append((rows[flagged], messages))
        columns, low, high = self._range_arrays
        if len(columns):
            with np.errstate(invalid="ignore"):
                outside = (matrix[:, columns] < low) | (matrix[:, columns] > high)
            for j in np.flatnonzero(outside.any(axis=0)).tolist():
                name = self.feature_names[columns[j]]
                rows = np.flatnonzero(outside[:, j])
                values = values_of(name, rows)
                bounds = f"[{low[j]:g}, {high[j]:g}]; scored as the nearest seen value"
                found.append(
                    (
                        rows,
                        [
                            f"{name}: value {_received(values[i])!r} is outside the training range {bounds}"
                            for i in range(len(rows))
                        ],
                    )
                )
        warnings: list[list[str]] = [[] for _ in range(len(matrix))]
        if found:
            flagged_rows = np.concatenate([rows for rows, _ in found])
            messages = [message for _, column_messages in found for message in column_messages]
            for position in np.argsort(flagged_rows, kind="stable").tolist():
                warnings[flagged_rows[position]].append(messages[position])
        return warnings

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
        """A numeric column as float64; a categorical one as its labels' vocabulary codes (NaN: missing or unseen).

        A category is coded once per distinct value: the column is factorised (one hash pass) and each
        distinct value found in `_code_lookups` when it is a canonical label as is (what validation and
        the loader hand over), else spelled by `canonical_category` first, exactly as
        `canonical_categories` spells it; the codes are spread back to the rows with one take. The
        values are those `Series.unique()` hands `canonical_categories` (numpy scalars of a numpy
        column, the array's own of an extension column), so an error names a value the same way.
        """
        vocab = self.categorical.get(name)
        if vocab is None:
            return column.to_numpy(dtype=np.float64, na_value=np.nan)
        lookup, positions = self._code_lookups[name], self._vocab_positions[name]
        array = column.array if isinstance(column.dtype, pd.api.extensions.ExtensionDtype) else column.to_numpy()
        codes, uniques = pd.factorize(array, use_na_sentinel=True)
        table = np.empty(len(uniques) + 1, dtype=np.float64)
        for position, value in enumerate(uniques):
            if type(value) is str and value in lookup:
                table[position] = lookup[value]
            else:
                table[position] = positions.get(canonical_category(value), math.nan)
        table[-1] = math.nan  # code -1: a missing value
        return table[codes]

    @cached_property
    def _vocab_positions(self) -> dict[str, dict[str | None, float]]:
        """Per categorical: label -> code (as float), the position `pd.Categorical` gives it in the vocabulary."""
        return {
            name: {label: float(code) for code, label in enumerate(vocab)} for name, vocab in self.categorical.items()
        }


def _received(value: Any) -> Any:
    """A received value as its message shows it: 99.0, not np.float64(99.0)."""
    return value.item() if isinstance(value, np.generic) else value


def values_getter(names: Sequence[str]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function giving a mapping's values of `names` as a tuple, in order (itemgetter runs in C;
    KeyError for a missing name)."""
    if not names:
        return lambda mapping: ()
    getter = operator.itemgetter(*names)
    return getter if len(names) > 1 else lambda mapping: (getter(mapping),)
