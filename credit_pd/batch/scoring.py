"""Scoring one validated batch: PD, top-k TreeSHAP contributions and warnings.

The numbers come from the same calls the service makes (`ScoringModel.explain`, raw score = base
value + contributions, `PlattCalibrator.apply`, contributions ranked by |value| with a stable sort),
so batch and service agree on the same matrix. The top-k columns are built with numpy fancy
indexing, never a Python object per contribution: at 10^8 rows x 10 contributions, per-object
Python would cost more than TreeSHAP itself.

Output layout (one row per scored input row; docs/batch.md): flat columns, so any SQL engine or
BI tool reads them without nested types and `WHERE feature_1 = 'age'` is a plain filter:
  <id column> string, pd double, grade string (master-scale grade), model_tag string, base_value double, raw_score double,
  feature_1 string, value_1 string, contribution_1 double, ..., feature_k, value_k, contribution_k
      (rank 1 = largest |contribution|; value = the input as text, null when missing),
  reason_1 string, reason_1_contribution double, ..., reason_N, reason_N_contribution
      (principal reasons as the service answers them with max_reasons N = 4: code and log-odds,
      largest first, null where a row has fewer reasons),
  warnings array<string> (unseen categories, values outside the training range, worded as the service words them)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from credit_pd.explanation import DEFAULT_MAX_REASONS, RankedReasons, top_contributions
from credit_pd.schema import DatasetSchema, FeatureType
from credit_pd.scoring_model import ScoringModel


def scores_ddl(id_column: str, k: int, n_reasons: int = DEFAULT_MAX_REASONS) -> str:
    """Spark DDL of the scores output (the mapInPandas return schema)."""
    ranked = ", ".join(f"feature_{r} string, value_{r} string, contribution_{r} double" for r in range(1, k + 1))
    reasons = "".join(f"reason_{r} string, reason_{r}_contribution double, " for r in range(1, n_reasons + 1))
    return (
        f"`{id_column}` string, pd double, grade string, model_tag string, base_value double, raw_score double, "
        f"{ranked}, {reasons}warnings array<string>"
    )


def distinct_valued_columns(id_column: str, k: int, n_reasons: int = DEFAULT_MAX_REASONS) -> list[str]:
    """Scores columns whose values are nearly all distinct, written without a Parquet dictionary
    (`settings.PARQUET_NO_DICTIONARY`): the id, every number, and the input values as text."""
    ranked = [name for r in range(1, k + 1) for name in (f"value_{r}", f"contribution_{r}")]
    reasons = [f"reason_{r}_contribution" for r in range(1, n_reasons + 1)]
    return [id_column, "pd", "base_value", "raw_score", *ranked, *reasons]


def top_k_count(top_k: int | None, n_features: int) -> int:
    """How many ranked contributions a row gets: top_k, at most every feature (None = all)."""
    return n_features if top_k is None else min(top_k, n_features)


@dataclass(frozen=True)
class BatchScorer:
    """Scores typed batches (as `validate_batch` returns them) with one model."""

    model: ScoringModel
    model_tag: str
    schema: DatasetSchema
    top_k: int | None
    # reason_1..N columns (the service's default `max_reasons`); rows with fewer reasons get nulls.
    max_reasons: int = DEFAULT_MAX_REASONS

    @property
    def k(self) -> int:
        return top_k_count(self.top_k, len(self.model.feature_names))

    def score(self, typed: pd.DataFrame) -> pd.DataFrame:
        """One output row per typed row, in order."""
        n = len(typed)
        if n == 0:
            empty = np.empty((0, self.k), dtype=np.int64)
            no_reasons = self._reasons(
                RankedReasons(np.empty((0, 0), np.intp), np.empty((0, 0)), np.empty(0, np.int64))
            )
            return self._frame(
                typed,
                np.empty(0),
                np.empty(0, dtype=object),
                np.empty(0),
                np.empty(0),
                self._ranked(typed, np.empty((0, self.k)), empty),
                no_reasons,
                [],
            )
        matrix = self.model.encoder.encode_frame(typed)
        decision = self.model.decide(matrix, self.max_reasons)  # the service's path: PD, grade, reasons
        explanation = decision.explanation
        order, _ = top_contributions(explanation.contributions, self.k)
        ranked = self._ranked(typed, explanation.contributions, order)
        grades = np.array(self.model.master_scale.names, dtype=object)[decision.grade_index]
        warnings = self.model.encoder.frame_warnings(matrix, typed)
        return self._frame(
            typed,
            decision.pd,
            grades,
            explanation.base_value,
            explanation.raw_score,
            ranked,
            self._reasons(decision.ranked),
            warnings,
        )

    def _reasons(self, ranked: RankedReasons) -> dict[str, np.ndarray]:
        """reason_r / reason_r_contribution: the r-th principal reason's code and contribution, null past the row's count."""
        codes = np.array(self.model.reason_codes.codes, dtype=object)
        n = len(ranked.counts)
        columns: dict[str, np.ndarray] = {}
        for rank in range(self.max_reasons):
            listed = ranked.counts > rank
            code = np.full(n, None, dtype=object)
            value = np.full(n, None, dtype=object)
            if listed.any():
                code[listed] = codes[ranked.order[listed, rank]]
                value[listed] = ranked.values[listed, rank].tolist()
            columns[f"reason_{rank + 1}"] = code
            columns[f"reason_{rank + 1}_contribution"] = value
        return columns

    def _frame(
        self,
        typed: pd.DataFrame,
        pds: np.ndarray,
        grades: np.ndarray,
        base: np.ndarray,
        raw: np.ndarray,
        ranked: dict[str, np.ndarray],
        reasons: dict[str, np.ndarray],
        warnings: list,
    ) -> pd.DataFrame:
        id_column = self.schema.id_column
        columns = {
            id_column: typed[id_column].to_numpy(dtype=object),
            "pd": pds,
            "grade": grades,
            "model_tag": np.full(len(typed), self.model_tag, dtype=object),
            "base_value": base,
            "raw_score": raw,
            **ranked,
            **reasons,
            "warnings": warnings,
        }
        # Explicit dtypes: pandas would infer float64 for empty columns and Arrow-backed `str` for text.
        return pd.DataFrame(
            {
                name: pd.Series(
                    values,
                    dtype=values.dtype if isinstance(values, np.ndarray) and values.dtype == np.float64 else object,
                )
                for name, values in columns.items()
            },
            index=pd.RangeIndex(len(typed)),
        )

    def _ranked(self, typed: pd.DataFrame, contributions: np.ndarray, order: np.ndarray) -> dict[str, np.ndarray]:
        """feature_r / value_r / contribution_r columns: r-th largest |contribution| of each row."""
        n, k = order.shape
        names = np.array(self.model.feature_names, dtype=object)
        values = self._values_as_text(typed, np.repeat(np.arange(n), k), order.ravel()).reshape(n, k)
        ranked_contributions = np.take_along_axis(contributions, order, axis=1) if n else np.empty((0, k))
        columns: dict[str, np.ndarray] = {}
        for rank in range(k):
            columns[f"feature_{rank + 1}"] = names[order[:, rank]]
            columns[f"value_{rank + 1}"] = values[:, rank]
            columns[f"contribution_{rank + 1}"] = ranked_contributions[:, rank]
        return columns

    def _values_as_text(self, typed: pd.DataFrame, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The input value of each (row, feature) cell as text, formatting only the cells listed."""
        out = np.full(rows.size, None, dtype=object)
        by_feature = np.argsort(features, kind="stable")
        bounds = np.searchsorted(features[by_feature], np.arange(len(self.model.feature_names) + 1))
        for position, name in enumerate(self.model.feature_names):
            cells = by_feature[bounds[position] : bounds[position + 1]]
            if cells.size:
                out[cells] = _format_values(typed[name].to_numpy()[rows[cells]], self.schema.feature(name).type)
        return out


# A missing cell for np.where: the object array numpy makes of a bare None (its stubs take arrays only).
_NONE = np.asarray(None, dtype=object)


def _format_values(values: np.ndarray, feature_type: FeatureType) -> np.ndarray:
    """Typed values as text: numbers in shortest round-trip form, booleans true/false, labels as is."""
    if feature_type is FeatureType.NUMERIC:
        return pa.array(values.astype(np.float64), from_pandas=True).cast(pa.string()).to_numpy(zero_copy_only=False)
    if feature_type is FeatureType.BOOLEAN:
        numbers = values.astype(np.float64)
        return np.where(np.isnan(numbers), _NONE, np.where(numbers == 1.0, "true", "false")).astype(object)
    # pandas 3 infers the `str` dtype for mapped labels, whose missing value is NaN, not None.
    return np.where(pd.isna(values), _NONE, values).astype(object)
