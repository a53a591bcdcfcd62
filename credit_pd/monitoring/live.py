"""Live drift metrics on the service's `/metrics`: bin counters, PD histogram, reference shares.

Everything is a counter or a histogram, summed across BentoML's worker processes by
prometheus_client's multiprocess mode, so PSI over any window is computed *in Prometheus* from
`increase()` of the counters (helm/credit-pd/templates/prometheusrule.yaml). A drift statistic
computed inside one worker would be wrong as soon as there are two.

Exported (labels are bounded: model tag x feature x bin, never a raw value or a uuid):
- `credit_pd_prediction_pd` histogram of served PDs, buckets at the reference's PD bin edges;
- `credit_pd_prediction_bin_total{model_tag,bin}` and
  `credit_pd_feature_bin_total{model_tag,feature,bin}`: served PDs and feature values per bin;
- `credit_pd_unseen_category_total{model_tag,feature}`, `credit_pd_out_of_range_total{model_tag,feature}`;
- `credit_pd_scored_applications_total{model_tag}`;
- `credit_pd_grade_total{model_tag,grade}`: served applications per master-scale grade, and the
  training shares as `credit_pd_reference_grade_share{model_tag,grade}` (PSI over grades);
- the training reference as gauges: `credit_pd_reference_share{model_tag,feature,bin}`,
  `credit_pd_reference_prediction_share{model_tag,bin}`, `credit_pd_reference_pd_mean{model_tag}`
  (every worker sets the same values; multiprocess mode `max` exports them once).

Every bin's counter is created at start-up with 0, so a bin that live traffic never reaches is
still in PSI (an emptied bin is drift too). Counting is vectorised per merged batch: one
comparison against all numeric edges at once, one lookup table for all categorical codes, one
`bincount`; then the batch's counts are added to the counters before its answers are returned.
In a BentoML worker (prometheus multiprocess mode) the counters' values live in memory-mapped files
in the multiprocess directory; `_FileCounters` adds a whole batch to them with one numpy operation
per file, through its own shared mapping of the same files. Writes to a shared mapping are in the
page cache at once and outlive the process, so a worker killed with SIGKILL (the OOM killer) loses
no count of an answered application (the 1 s background flush this replaced lost a second's
counts on a kill). Measured in-process in one run (multiprocess mode): one `inc()` per
counter made observing 9% (1 application) to 16% (100) of the batch's scoring time; the file
write made it 3.5% and 6%, nearly all of it the counting that the flush design did as well.
Outside multiprocess mode, or if prometheus_client's file layout moved (checked at start-up,
logged), counters are incremented one by one: correct, slower.

prometheus_client is imported inside `LiveMonitor`, not at module import: BentoML sets
PROMETHEUS_MULTIPROC_DIR in each worker, and prometheus_client picks its storage when first
imported (the reason BentoML deprecated its `bentoml.metrics` proxy for a direct import).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from credit_pd.features import FeatureEncoder
from credit_pd.monitoring.reference import DriftReference

PREFIX = "credit_pd"


@dataclass
class _Metrics:
    """The metric families; created once per process (prometheus_client refuses duplicates)."""

    prediction_pd: Any
    prediction_bin: Any
    feature_bin: Any
    unseen: Any
    out_of_range: Any
    scored: Any
    reference_share: Any
    reference_prediction_share: Any
    reference_pd_mean: Any
    grade: Any
    reference_grade_share: Any


_METRICS: _Metrics | None = None


def _metrics(pd_buckets: Sequence[float]) -> _Metrics:
    global _METRICS
    if _METRICS is None:
        from prometheus_client import Counter, Gauge, Histogram

        _METRICS = _Metrics(
            prediction_pd=Histogram(
                f"{PREFIX}_prediction_pd",
                "Served calibrated PDs (buckets: the training reference's PD bins)",
                ["model_tag"],
                buckets=[*pd_buckets, float("inf")],
            ),
            prediction_bin=Counter(
                f"{PREFIX}_prediction_bin",
                "Served PDs per reference PD bin (log-odds quantile bins)",
                ["model_tag", "bin"],
            ),
            feature_bin=Counter(
                f"{PREFIX}_feature_bin", "Served feature values per reference bin", ["model_tag", "feature", "bin"]
            ),
            unseen=Counter(
                f"{PREFIX}_unseen_category",
                "Categorical values not seen in training (scored as missing)",
                ["model_tag", "feature"],
            ),
            out_of_range=Counter(
                f"{PREFIX}_out_of_range", "Numeric values outside the training range", ["model_tag", "feature"]
            ),
            scored=Counter(f"{PREFIX}_scored_applications", "Applications scored", ["model_tag"]),
            reference_share=Gauge(
                f"{PREFIX}_reference_share",
                "Training share of each feature bin",
                ["model_tag", "feature", "bin"],
                multiprocess_mode="max",
            ),
            reference_prediction_share=Gauge(
                f"{PREFIX}_reference_prediction_share",
                "Training share of each PD bin",
                ["model_tag", "bin"],
                multiprocess_mode="max",
            ),
            reference_pd_mean=Gauge(
                f"{PREFIX}_reference_pd_mean", "Mean PD over the training rows", ["model_tag"], multiprocess_mode="max"
            ),
            grade=Counter(f"{PREFIX}_grade", "Served applications per master-scale grade", ["model_tag", "grade"]),
            reference_grade_share=Gauge(
                f"{PREFIX}_reference_grade_share",
                "Training share of each master-scale grade",
                ["model_tag", "grade"],
                multiprocess_mode="max",
            ),
        )
    return _METRICS


class NullMonitor:
    """Monitoring switched off (CREDIT_PD_MONITORING_ENABLED=false): observing costs nothing."""

    def observe(
        self,
        records: Sequence[Mapping[str, Any]],
        matrix: np.ndarray,
        pds: np.ndarray,
        grade_index: np.ndarray | None = None,
    ) -> None:
        return None


class LiveMonitor:
    """Counts one model's served batches into the drift metrics."""

    def __init__(self, reference: DriftReference, encoder: FeatureEncoder, model_tag: str) -> None:
        self.reference = reference
        self.metrics = _metrics(reference.pd_bucket_bounds)
        self.model_tag = model_tag
        self._plan_numeric(encoder)
        self._plan_categorical(encoder)
        self._create_children()
        self._export_reference()
        self._lock = threading.Lock()  # batches are observed on the event loop and in scoring threads
        self._targets = [
            *self.bin_children,
            *self.unseen_children,
            *self.out_of_range_children,
            *self.pd_children,
            *self.pd_histogram._buckets,
            self.pd_histogram._sum,
            self.scored_child,
            *self.grade_children,
        ]  # noqa: SLF001
        self._files = _FileCounters.for_children(self._targets)

    # ------------------------------------------------------------------ set-up
    def _plan_numeric(self, encoder: FeatureEncoder) -> None:
        names = [n for n in encoder.feature_names if n not in encoder.categorical and n in self.reference.features]
        self.numeric_names = names
        self.numeric_cols = np.array([encoder.feature_names.index(n) for n in names], dtype=np.intp)
        binned = [self.reference.features[n] for n in names]
        width = max((len(b.edges) for b in binned), default=0)
        # Edges padded with +inf: "bin = number of edges <= x" is searchsorted(side="right") for all features at once.
        self.numeric_edges = np.full((len(names), max(width, 1)), np.inf)
        for i, b in enumerate(binned):
            self.numeric_edges[i, : len(b.edges)] = b.edges
        ranges = [encoder.numeric_ranges.get(n, (-np.inf, np.inf)) for n in names]
        self.numeric_low = np.array([r[0] for r in ranges])
        self.numeric_high = np.array([r[1] for r in ranges])
        self.numeric_missing_bin = np.array([b.missing_bin for b in binned], dtype=np.intp)

    def _plan_categorical(self, encoder: FeatureEncoder) -> None:
        names = [n for n in encoder.feature_names if n in encoder.categorical and n in self.reference.features]
        self.categorical_names = names
        self.categorical_cols = np.array([encoder.feature_names.index(n) for n in names], dtype=np.intp)
        tables = [self.reference.features[n].code_to_bin(encoder.categorical[n]) for n in names]
        # One lookup table for every categorical's codes: row offset + code -> bin.
        self.code_offsets = np.cumsum([0, *(len(t) for t in tables)])[:-1].astype(np.intp)
        self.code_table = np.concatenate([*tables, np.zeros(1, dtype=np.intp)])
        self.categorical_missing_bin = np.array([self.reference.features[n].missing_bin for n in names], dtype=np.intp)
        self.categorical_other_bin = np.array([self.reference.features[n].other_bin for n in names], dtype=np.intp)

    def _create_children(self) -> None:
        """Resolve every (feature, bin) counter once; creating it exports a 0 for the bin."""
        order = [*self.numeric_names, *self.categorical_names]
        sizes = [len(self.reference.features[n].bins) for n in order]
        self.feature_order = order
        self.feature_offsets = np.cumsum([0, *sizes])[:-1].astype(np.intp)
        self.n_feature_bins = int(sum(sizes))
        tag = self.model_tag
        self.bin_children = [
            self.metrics.feature_bin.labels(tag, name, label)
            for name in order
            for label in self.reference.features[name].bins
        ]
        self.pd_children = [self.metrics.prediction_bin.labels(tag, label) for label in self.reference.pd.bins]
        self.unseen_children = [self.metrics.unseen.labels(tag, n) for n in self.categorical_names]
        self.out_of_range_children = [self.metrics.out_of_range.labels(tag, n) for n in self.numeric_names]
        self.scored_child = self.metrics.scored.labels(tag)
        grades = self.reference.grades.bins if self.reference.grades is not None else ()
        self.grade_children = [self.metrics.grade.labels(tag, name) for name in grades]
        self.pd_histogram = self.metrics.prediction_pd.labels(tag)
        # The family's buckets are fixed when a process first creates it: a second model scored in
        # the same process (tests, notebooks; never a BentoML worker) shares the first one's buckets.
        self.histogram_bounds = np.array(
            getattr(self.pd_histogram, "_upper_bounds", [*self.reference.pd_bucket_bounds, np.inf])
        )
        # PD bins on the PD scale (same bins as the reference's log-odds edges; a PD is never NaN).
        self.pd_bounds = np.array(self.reference.pd_bucket_bounds)
        _check_histogram(self.pd_histogram, self.histogram_bounds.tolist())

    def _export_reference(self) -> None:
        for name, binned in self.reference.features.items():
            for label, share in zip(binned.bins, binned.shares, strict=False):
                self.metrics.reference_share.labels(self.model_tag, name, label).set(share)
        for label, share in zip(self.reference.pd.bins, self.reference.pd.shares, strict=False):
            self.metrics.reference_prediction_share.labels(self.model_tag, label).set(share)
        self.metrics.reference_pd_mean.labels(self.model_tag).set(self.reference.pd_mean)
        if self.reference.grades is not None:
            for name, share in zip(self.reference.grades.bins, self.reference.grades.shares, strict=False):
                self.metrics.reference_grade_share.labels(self.model_tag, name).set(share)

    # ------------------------------------------------------------------ per batch
    def feature_bin_counts(
        self, records: Sequence[Mapping[str, Any]], matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(counts per global feature bin, unseen per categorical, out-of-range per numeric)."""
        numeric = matrix[:, self.numeric_cols]
        numeric_missing = np.isnan(numeric)
        numeric_bins = (numeric[:, :, None] >= self.numeric_edges[None, :, :]).sum(axis=2)
        numeric_bins = np.where(numeric_missing, self.numeric_missing_bin, numeric_bins)
        out_of_range = ((numeric < self.numeric_low) | (numeric > self.numeric_high)).sum(axis=0)  # NaN compares False

        codes = matrix[:, self.categorical_cols]
        nan_codes = np.isnan(codes)
        lookup = np.where(
            nan_codes, len(self.code_table) - 1, self.code_offsets + np.where(nan_codes, 0, codes).astype(np.intp)
        )
        categorical_bins = np.where(nan_codes, self.categorical_missing_bin, self.code_table[lookup])
        unseen = self._unseen(records, nan_codes)
        categorical_bins = np.where(unseen, self.categorical_other_bin, categorical_bins)

        global_bins = np.concatenate([numeric_bins, categorical_bins], axis=1) + self.feature_offsets
        counts = np.bincount(global_bins.ravel(), minlength=self.n_feature_bins)
        return counts, unseen.sum(axis=0), out_of_range

    def _unseen(self, records: Sequence[Mapping[str, Any]], nan_codes: np.ndarray) -> np.ndarray:
        """A NaN code is an unseen category when the request carried a value (else it is missing)."""
        unseen = np.zeros_like(nan_codes)
        rows, cols = np.nonzero(nan_codes)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=False):
            unseen[row, col] = records[row].get(self.categorical_names[col]) is not None
        return unseen

    def observe(
        self,
        records: Sequence[Mapping[str, Any]],
        matrix: np.ndarray,
        pds: np.ndarray,
        grade_index: np.ndarray | None = None,
    ) -> None:
        """Count one scored batch: records as sent (for unseen vs missing), encoded matrix, PDs, grades.

        `grade_index`: each PD's master-scale grade (`ScoringModel.decide`), counted per grade when
        the reference has grades.

        Called before the batch's answers are returned, and the counts are in the multiprocess
        store when it returns: what was answered is counted, even if the worker dies next.
        """
        if len(pds) == 0:
            return
        counts, unseen, out_of_range = self.feature_bin_counts(records, matrix)
        pd_bins = np.bincount(np.searchsorted(self.pd_bounds, pds, side="right"), minlength=len(self.pd_children))
        buckets = np.bincount(
            np.searchsorted(self.histogram_bounds, pds, side="left"), minlength=len(self.histogram_bounds)
        )
        grades = (
            np.bincount(grade_index, minlength=len(self.grade_children))
            if grade_index is not None and self.grade_children
            else np.zeros(len(self.grade_children), dtype=np.int64)
        )
        # In the order of self._targets.
        amounts = np.concatenate(
            [counts, unseen, out_of_range, pd_bins, buckets, [float(pds.sum()), len(pds)], grades]
        ).astype(np.float64)
        with self._lock:
            if self._files is not None:
                self._files.add(amounts)
            else:
                _increment(self._targets, amounts)


def _check_histogram(child: Any, bounds: Sequence[float]) -> None:
    """Adding a whole batch to a histogram needs prometheus_client's per-bucket counters
    (`_buckets`, `_sum`, `_upper_bounds`, stable since 0.1; prometheus_client has no bulk
    observe). Fails at start-up, naming the reason, if a new version moved them."""
    if len(getattr(child, "_buckets", [])) != len(bounds) or not hasattr(child, "_sum") or not len(bounds):
        raise RuntimeError(
            "prometheus_client's Histogram no longer has _buckets/_sum/_upper_bounds; "
            "credit_pd.monitoring.live needs updating (or set CREDIT_PD_MONITORING_ENABLED=false)"
        )


def _increment(children: Sequence[Any], counts: np.ndarray) -> None:
    for index in np.flatnonzero(counts).tolist():
        children[index].inc(float(counts[index]))


class _FileCounters:
    """The values of some counters in prometheus_client's multiprocess files, as float64 arrays.

    prometheus_client (multiprocess mode) keeps each process's counters in `<type>_<pid>.db`, a
    memory-mapped file of (key, value, timestamp) entries whose 8-byte-aligned value offsets its
    `MmapedDict` records in `_positions`; `MultiProcessCollector` (BentoML's /metrics) sums the
    files of every process, dead ones included. This maps the same files (its own MAP_SHARED
    mapping, so prometheus_client's mapping is never pinned and can grow as before) and adds a
    batch with `values[offsets] += amounts` per file. The counters' in-process copies
    (`MmapedValue._value`) go stale, so these counters must not be `inc()`-ed elsewhere: only
    `LiveMonitor` writes them. Built only when every counter is a multiprocess value whose key sits
    where prometheus_client's own reader finds it in the mapped file; else None (logged).
    """

    def __init__(self, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        self.groups = groups  # (file values as float64, offsets into them, indices into the amounts)

    @classmethod
    def for_children(cls, children: Sequence[Any]) -> _FileCounters | None:
        import logging
        import mmap

        # A metric child holds its value in `_value`; a histogram's `_buckets` and `_sum` are values themselves.
        # prometheus_client's values are untyped; the check below rules out a missing (None) one.
        values: list[Any] = [
            child if hasattr(child, "_multiprocess") else getattr(child, "_value", None) for child in children
        ]
        if not all(getattr(v, "_multiprocess", False) for v in values):
            return None  # single-process registry (tests, notebooks): inc() is all there is
        try:
            from prometheus_client.mmap_dict import _read_all_values

            by_file: dict[int, list[int]] = {}
            for index, value in enumerate(values):
                by_file.setdefault(id(value._file), []).append(index)
            groups = []
            for indices in by_file.values():
                store = values[indices[0]]._file
                with open(store._fname, "r+b") as handle:
                    mapped = mmap.mmap(handle.fileno(), store._capacity)
                found = {key: pos for key, _, _, pos in _read_all_values(mapped, store._used)}
                offsets = [store._positions[values[i]._key] for i in indices]
                if any(
                    found.get(values[i]._key) != offset or offset % 8
                    for i, offset in zip(indices, offsets, strict=False)
                ):
                    raise ValueError("a counter's key is not where prometheus_client's reader finds it")
                groups.append((np.frombuffer(mapped, dtype=np.float64), np.array(offsets) // 8, np.array(indices)))
        except (AttributeError, ImportError, KeyError, OSError, ValueError) as exc:
            logging.getLogger(__name__).warning(
                "drift counters are incremented one by one (prometheus_client's multiprocess file layout moved: %s)",
                exc,
            )
            return None
        return cls(groups)

    def add(self, amounts: np.ndarray) -> None:
        for file_values, offsets, indices in self.groups:
            file_values[offsets] += amounts[indices]


def live_monitor(stored_model: Any, encoder: FeatureEncoder, enabled: bool = True) -> LiveMonitor | NullMonitor:
    """The monitor for a stored model (`bentoml.Model`); a no-op when disabled or when the model
    was trained before drift references existed (logged, so the operator knows why)."""
    from credit_pd.monitoring.reference import reference_from_store

    if not enabled:
        return NullMonitor()
    reference = reference_from_store(stored_model)
    if reference is None:
        import logging

        logging.getLogger(__name__).warning(
            "model %s carries no drift reference: drift metrics are off (retrain to enable)", stored_model.tag
        )
        return NullMonitor()
    return LiveMonitor(reference, encoder, str(stored_model.tag))
