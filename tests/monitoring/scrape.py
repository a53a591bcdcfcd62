"""Reading a Prometheus text scrape, and PSI from two scrapes exactly as the recording rule does."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from credit_pd.monitoring.reference import psi

Sample = tuple[str, tuple[tuple[str, str], ...]]


def scrape(base_url: str) -> dict[Sample, float]:
    """Every sample of /metrics: (sample name, sorted labels) -> value."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample_names(samples: Mapping[Sample, float]) -> set[str]:
    return {name for name, _ in samples}


def by_label(samples: Mapping[Sample, float], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """Values of one sample name keyed by the given labels, summed over the rest (as `sum by`)."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for (sample, labels), value in samples.items():
        if sample == name:
            label_map = dict(labels)
            out[tuple(label_map[k] for k in keys)] += value
    return dict(out)


def feature_psi(before: Mapping[Sample, float], after: Mapping[Sample, float]) -> dict[str, float]:
    """PSI per feature of the traffic between two scrapes, as `credit_pd:feature:psi` computes it:
    live shares from the counters' increase summed over workers (`sum by (feature, bin)`),
    reference shares from `credit_pd_reference_share` (`max by`), PSI with the 1e-4 floor."""
    start = by_label(before, "credit_pd_feature_bin_total", "feature", "bin")
    end = by_label(after, "credit_pd_feature_bin_total", "feature", "bin")
    reference = {
        key: value
        for (sample, labels), value in after.items()
        if sample == "credit_pd_reference_share"
        for key in [(dict(labels)["feature"], dict(labels)["bin"])]
    }
    result = {}
    for feature in sorted({f for f, _ in end}):
        bins = sorted(b for f, b in end if f == feature)
        counts = [end[(feature, b)] - start.get((feature, b), 0.0) for b in bins]
        result[feature] = psi([reference[(feature, b)] for b in bins], counts)
    return result


def prediction_psi(before: Mapping[Sample, float], after: Mapping[Sample, float]) -> float:
    """PSI of the served PDs between two scrapes, as `credit_pd:prediction:psi` computes it."""
    start = by_label(before, "credit_pd_prediction_bin_total", "bin")
    end = by_label(after, "credit_pd_prediction_bin_total", "bin")
    reference = by_label(after, "credit_pd_reference_prediction_share", "bin")
    bins = sorted(end)
    return psi([reference[b] for b in bins], [end[b] - start.get(b, 0.0) for b in bins])
