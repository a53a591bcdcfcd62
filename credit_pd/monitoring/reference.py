"""The drift reference: how each feature and the PD were distributed in training, as bin shares.

Built once at training time from the encoded training matrix and the final model's PDs, and
stored as plain JSON in the model store entry (custom object `drift_reference`), so the service,
the offline report and the Prometheus rules compare live traffic with the population the stored
model was trained on, bin for bin:

- numeric (and boolean) features: bin edges at training quantiles (duplicates dropped, so a
  feature that is mostly 0 gets few bins), open-ended outer bins, and `missing` as its own bin;
- categorical features: the most frequent training categories each get a bin, the rest share
  `other` (where unseen categories also land at serving time), and `missing` is its own bin;
- the PD: quantile bins on the log-odds scale, where a credit score's movements are even.

Bins are identified by short, bounded labels (an interval, a category, `other`, `missing`),
which become Prometheus label values: cardinality is features x bins, never raw values.
The same `BinnedFeature.bin_indices` assigns bins in training, serving and the offline report,
and PSI is computed by one formula (`psi`) that the recording rules mirror in PromQL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import expit, logit

from credit_pd.features import FeatureEncoder

REFERENCE_KEY = "drift_reference"
FORMAT_VERSION = 1
MISSING = "missing"
OTHER = "other"
# Ten quantile bins is the industry's usual PSI resolution: fine enough to see a shift,
# coarse enough that each bin holds ~10% of traffic and its share is not noise.
DEFAULT_NUMERIC_BINS = 10
DEFAULT_PD_BINS = 10
# Categories beyond the most frequent ones are pooled into `other`, bounding label cardinality.
DEFAULT_MAX_CATEGORIES = 15
# Share floor in PSI: an empty bin on either side would make ln() infinite. 1e-4 is the
# conventional floor; the recording rules use the same value (clamp_min).
PSI_EPSILON = 1e-4
# PDs are clipped away from 0 and 1 before log-odds so a PD of exactly 0 or 1 stays finite.
PD_CLIP = 1e-9


@dataclass(frozen=True)
class BinnedFeature:
    """One variable's bins: labels, training shares and how a value is assigned to a bin.

    Numeric: `edges` (sorted, unique); bin i < len(edges)+1 holds edges[i-1] <= x < edges[i]
    (outer bins open), then `missing`. Categorical: one bin per kept category, then `other`,
    then `missing`; `categories` are the kept labels in bin order.
    """

    name: str
    kind: str  # "numeric" | "categorical"
    bins: tuple[str, ...]
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def missing_bin(self) -> int:
        return len(self.bins) - 1

    @property
    def other_bin(self) -> int:
        """Categorical only: where pooled rare and unseen categories are counted."""
        return len(self.bins) - 2

    def code_to_bin(self, vocabulary: Sequence[str]) -> np.ndarray:
        """Categorical only: bin index of each encoder code (vocabulary position)."""
        position = {label: i for i, label in enumerate(self.categories)}
        return np.array([position.get(label, self.other_bin) for label in vocabulary], dtype=np.intp)

    def bin_indices(
        self, column: np.ndarray, code_to_bin: np.ndarray | None = None, unseen: np.ndarray | None = None
    ) -> np.ndarray:
        """Bin of each value of an encoded column (NaN = missing); vectorised.

        For a categorical column pass `code_to_bin` (from `code_to_bin(encoder vocabulary)`) and,
        at serving time, `unseen`: rows whose NaN code came from an unseen category rather than a
        missing value (the encoder scores both as missing; drift counts them apart).
        """
        column = np.asarray(column, dtype=np.float64)
        missing = np.isnan(column)
        if self.kind == "numeric":
            out = np.searchsorted(np.asarray(self.edges), column, side="right")
        else:
            assert code_to_bin is not None, "categorical bins need code_to_bin"
            codes = np.where(missing, 0, column).astype(np.intp)
            out = code_to_bin[codes] if len(code_to_bin) else np.zeros(len(column), dtype=np.intp)
        out = np.where(missing, self.missing_bin, out)
        if unseen is not None and self.kind == "categorical":
            out = np.where(unseen, self.other_bin, out)
        return out.astype(np.intp)

    def counts(
        self, column: np.ndarray, code_to_bin: np.ndarray | None = None, unseen: np.ndarray | None = None
    ) -> np.ndarray:
        """Number of values per bin."""
        return np.bincount(self.bin_indices(column, code_to_bin, unseen), minlength=len(self.bins))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "bins": list(self.bins), "shares": list(self.shares)}
        if self.kind == "numeric":
            data["edges"] = list(self.edges)
        else:
            data["categories"] = list(self.categories)
        return data

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> BinnedFeature:
        return cls(
            name=name,
            kind=data["kind"],
            bins=tuple(data["bins"]),
            shares=tuple(float(s) for s in data["shares"]),
            edges=tuple(float(e) for e in data.get("edges", ())),
            categories=tuple(data.get("categories", ())),
        )


@dataclass(frozen=True)
class DriftReference:
    """Per-feature and PD bins with their training shares; JSON-able via `to_dict`."""

    features: Mapping[str, BinnedFeature]
    pd: BinnedFeature  # numeric bins on the log-odds scale
    pd_mean: float
    n_rows: int
    # Training share of each master-scale grade (bins = grade names, scale order); None for a
    # model stored before grades existed. PSI over grades is the stability figure credit-risk
    # teams report: the grades are fixed policy bands, so it reads the same for every model.
    grades: BinnedFeature | None = None

    def pd_bin_indices(self, pds: np.ndarray) -> np.ndarray:
        """PD bins, compared on the PD scale (expit is monotone, and skipping logit per batch is cheaper)."""
        return _pd_bins(self.pd, pds)

    @property
    def pd_bucket_bounds(self) -> list[float]:
        """The PD bin edges as PDs: the live PD histogram's bucket upper bounds."""
        return [float(expit(edge)) for edge in self.pd.edges]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "n_rows": self.n_rows,
            "features": {name: binned.to_dict() for name, binned in self.features.items()},
            "pd": {**self.pd.to_dict(), "scale": "log-odds", "mean": self.pd_mean},
            **(
                {}
                if self.grades is None
                else {"grades": {"bins": list(self.grades.bins), "shares": list(self.grades.shares)}}
            ),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReference:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"drift reference format {data.get('format_version')!r} is not {FORMAT_VERSION}; retrain the model"
            )
        return cls(
            features={name: BinnedFeature.from_dict(name, item) for name, item in data["features"].items()},
            pd=BinnedFeature.from_dict("pd", data["pd"]),
            pd_mean=float(data["pd"]["mean"]),
            n_rows=int(data["n_rows"]),
            grades=None if "grades" not in data else grade_bins(data["grades"]["bins"], data["grades"]["shares"]),
        )


def _pd_bins(binned: BinnedFeature, pds: np.ndarray) -> np.ndarray:
    """Bin of each PD for log-odds edges: the same bins as `binned.bin_indices(logit(pds))`."""
    pds = np.asarray(pds, dtype=np.float64)
    out = np.searchsorted(expit(np.asarray(binned.edges)), pds, side="right")
    return np.where(np.isnan(pds), binned.missing_bin, out).astype(np.intp)


def pd_log_odds(pds: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(pds, dtype=np.float64), PD_CLIP, 1 - PD_CLIP))


def build_reference(
    encoder: FeatureEncoder,
    matrix: np.ndarray,
    pds: np.ndarray,
    numeric_bins: int = DEFAULT_NUMERIC_BINS,
    pd_bins: int = DEFAULT_PD_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> DriftReference:
    """The reference from the encoded training matrix (encoder column order) and its PDs."""
    if matrix.shape != (len(pds), len(encoder.feature_names)):
        raise ValueError(f"matrix {matrix.shape} does not match {len(pds)} PDs x {len(encoder.feature_names)} features")
    features = {}
    for col, name in enumerate(encoder.feature_names):
        column = matrix[:, col]
        if name in encoder.categorical:
            features[name] = _categorical_bins(name, column, encoder.categorical[name], max_categories)
        else:
            features[name] = _numeric_bins(name, column, numeric_bins)
    edges = _quantile_edges(pd_log_odds(pds), pd_bins)
    pd_binned = BinnedFeature(
        name="pd",
        kind="numeric",
        bins=tuple(_interval_labels(edges) + [MISSING]),
        shares=(),
        edges=tuple(float(e) for e in edges),
    )
    pd_binned = replace(pd_binned, shares=_shares(np.bincount(_pd_bins(pd_binned, pds), minlength=len(pd_binned.bins))))
    return DriftReference(features=features, pd=pd_binned, pd_mean=float(np.mean(pds)), n_rows=len(pds))


def drift_reference_objects(model: Any, matrix: np.ndarray) -> dict[str, Any]:
    """The one call training makes: `{"drift_reference": ...}` for `save_to_store(custom_objects=...)`.

    `model` is the fitted `ScoringModel`, `matrix` its encoded training matrix (every row,
    labelled or not); the PDs are the final model's on those rows, the population the
    service's PDs should resemble while nothing drifts.
    """
    pds = model.predict_pd(matrix)
    reference = build_reference(model.encoder, matrix, pds)
    scale = model.master_scale
    counts = np.bincount(scale.grade_index(pds), minlength=len(scale.names))
    return {REFERENCE_KEY: replace(reference, grades=grade_bins(scale.names, _shares(counts))).to_dict()}


def grade_bins(names: Sequence[str], shares: Sequence[float]) -> BinnedFeature:
    """The grades as bins: one per grade name, no missing bin (every PD has a grade)."""
    return BinnedFeature(name="grade", kind="grade", bins=tuple(names), shares=tuple(float(s) for s in shares))


def _shares(counts: np.ndarray) -> tuple[float, ...]:
    total = counts.sum()
    return tuple(float(c) / total if total else 0.0 for c in counts)


def _numeric_bins(name: str, column: np.ndarray, n_bins: int) -> BinnedFeature:
    edges = _quantile_edges(column[~np.isnan(column)], n_bins)
    labels = _interval_labels(edges) + [MISSING]
    binned = BinnedFeature(
        name=name, kind="numeric", bins=tuple(labels), shares=(), edges=tuple(float(e) for e in edges)
    )
    counts = binned.counts(column)
    return BinnedFeature(name=name, kind="numeric", bins=binned.bins, shares=_shares(counts), edges=binned.edges)


def _quantile_edges(present: np.ndarray, n_bins: int) -> np.ndarray:
    """Unique interior quantiles, without an edge at the minimum (its lower bin would be empty).

    A feature piled on one value (most customers have 0 debt-collection days) keeps at least
    the split between that value and the rest, so a move off the pile is still seen.
    """
    if len(present) == 0:
        return np.array([], dtype=np.float64)
    low = present.min()
    edges = np.unique(np.quantile(present, np.linspace(0, 1, n_bins + 1)[1:-1]))
    edges = edges[edges > low]
    if len(edges) == 0 and present.max() > low:
        edges = np.array([present[present > low].min()])
    return edges


def _categorical_bins(name: str, column: np.ndarray, vocabulary: Sequence[str], max_categories: int) -> BinnedFeature:
    present = column[~np.isnan(column)].astype(np.intp)
    code_counts = np.bincount(present, minlength=len(vocabulary))
    # Most frequent first, ties by label, so the kept set does not depend on row order.
    order = sorted(range(len(vocabulary)), key=lambda code: (-code_counts[code], vocabulary[code]))
    kept = [vocabulary[code] for code in order[:max_categories] if code_counts[code] > 0]
    kept = [label for label in kept if label not in (OTHER, MISSING)]
    binned = BinnedFeature(
        name=name, kind="categorical", bins=(*kept, OTHER, MISSING), shares=(), categories=tuple(kept)
    )
    counts = binned.counts(column, binned.code_to_bin(vocabulary))
    return BinnedFeature(
        name=name, kind="categorical", bins=binned.bins, shares=_shares(counts), categories=binned.categories
    )


def _interval_labels(edges: np.ndarray) -> list[str]:
    """`<e0`, `[e0, e1)`, ..., `>=en`: readable and bounded (one label per bin)."""
    if len(edges) == 0:
        return ["all"]
    text = [f"{edge:.4g}" for edge in edges]
    return [f"<{text[0]}", *(f"[{a}, {b})" for a, b in zip(text, text[1:], strict=False)), f">={text[-1]}"]


def psi(expected: Sequence[float], actual_counts: Sequence[float] | np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of observed counts against reference shares.

    PSI = sum over bins of (a - e) * ln(max(a, eps) / max(e, eps)), a and e the live and
    reference shares. The chart's recording rules compute exactly this in PromQL
    (helm/credit-pd/templates/prometheusrule.yaml).
    NaN when nothing was observed.
    """
    counts = np.asarray(actual_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return math.nan
    actual = counts / total
    expected_arr = np.asarray(expected, dtype=np.float64)
    return float(
        np.sum((actual - expected_arr) * np.log(np.maximum(actual, epsilon) / np.maximum(expected_arr, epsilon)))
    )


def reference_from_store(stored: Any) -> DriftReference | None:
    """The drift reference of a stored model (`bentoml.Model`); None for a model trained before it existed."""
    data = stored.custom_objects.get(REFERENCE_KEY)
    return None if data is None else DriftReference.from_dict(data)
