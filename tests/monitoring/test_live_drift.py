"""The shift test: serve the model, send unshifted rows, then rows with one feature shifted.

PSI is computed from the scraped /metrics counters exactly as the chart's recording rule does
(tests/monitoring/scrape.py; test_rules.py checks the rule against the same Python formula), so
this is what Prometheus would report for the two windows.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.monitoring.scrape import by_label, feature_psi, prediction_psi, sample_names, scrape

DASHBOARD = REPO_ROOT / "helm" / "credit-pd" / "files" / "credit-pd-dashboard.json"
RULES_TEMPLATE = REPO_ROOT / "helm" / "credit-pd" / "templates" / "prometheusrule.yaml"

SHIFTED_FEATURE = "age"
AGE_SHIFT_YEARS = 25
BATCH = 200
UNSEEN_LABEL = "Merchant group never seen"


def send(base: str, applications: list[dict]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, len(applications), BATCH):
            batch = [a | {"explain": False} for a in applications[start : start + BATCH]]
            response = client.post("/predict", json={"applications": batch})
            assert response.status_code == 200, response.text[:500]


def settled_scrape(base: str) -> dict:
    """Scrape right after the answers: the workers write the counts before they answer."""
    return scrape(base)


@pytest.fixture(scope="module")
def phases(drift_server: str, fresh_applications: list[dict], schema) -> dict[str, dict]:
    """Scrapes at start, after the unshifted rows, after the shifted rows, after unseen rows."""
    maximum = next(f.maximum for f in schema.features if f.name == SHIFTED_FEATURE)
    shifted = [a | {SHIFTED_FEATURE: min(a[SHIFTED_FEATURE] + AGE_SHIFT_YEARS, maximum)} for a in fresh_applications]
    # The contract rejects unseen categories unless the application opts into scoring them as missing.
    unseen = [
        a | {"merchant_group": UNSEEN_LABEL, "unseen_categories": "score_as_missing"} for a in fresh_applications[:40]
    ]
    snapshots = {"start": scrape(drift_server)}
    send(drift_server, fresh_applications)
    snapshots["unshifted"] = settled_scrape(drift_server)
    send(drift_server, shifted)
    snapshots["shifted"] = settled_scrape(drift_server)
    send(drift_server, unseen)
    snapshots["unseen"] = settled_scrape(drift_server)
    return snapshots


def test_unshifted_traffic_is_stable(phases: dict[str, dict]) -> None:
    psi = feature_psi(phases["start"], phases["unshifted"])
    assert len(psi) == 41
    worst = max(psi, key=psi.get)
    print(
        f"unshifted: max feature PSI {psi[worst]:.4f} ({worst}); PD PSI {prediction_psi(phases['start'], phases['unshifted']):.4f}"
    )
    assert all(value < 0.1 for value in psi.values()), {k: round(v, 4) for k, v in psi.items() if v >= 0.1}
    assert prediction_psi(phases["start"], phases["unshifted"]) < 0.1


def test_shifted_feature_and_only_it_drifts(phases: dict[str, dict]) -> None:
    psi = feature_psi(phases["unshifted"], phases["shifted"])
    others = {k: v for k, v in psi.items() if k != SHIFTED_FEATURE}
    worst = max(others, key=others.get)
    print(
        f"shifted {SHIFTED_FEATURE} +{AGE_SHIFT_YEARS}y: PSI {psi[SHIFTED_FEATURE]:.3f}; "
        f"max other {others[worst]:.4f} ({worst}); PD PSI {prediction_psi(phases['unshifted'], phases['shifted']):.4f}"
    )
    assert psi[SHIFTED_FEATURE] > 0.25
    assert all(value < 0.1 for value in others.values()), {k: round(v, 4) for k, v in others.items() if v >= 0.1}


def test_counters_add_up_across_both_workers(
    phases: dict[str, dict], fresh_applications: list[dict], trained_run
) -> None:
    scored = by_label(phases["unseen"], "credit_pd_scored_applications_total", "model_tag")
    assert scored == {(trained_run.model_tag,): 2 * len(fresh_applications) + 40}
    # Every feature's bins count every application once.
    bins = by_label(phases["unseen"], "credit_pd_feature_bin_total", "feature")
    assert set(bins.values()) == {2 * len(fresh_applications) + 40}
    histogram = by_label(phases["unseen"], "credit_pd_prediction_pd_count", "model_tag")
    assert histogram == scored


def test_unseen_categories_and_out_of_range_values_are_counted(phases: dict[str, dict], trained_run) -> None:
    unseen_before = by_label(phases["shifted"], "credit_pd_unseen_category_total", "feature")
    unseen_after = by_label(phases["unseen"], "credit_pd_unseen_category_total", "feature")
    delta = {k[0]: unseen_after[k] - unseen_before.get(k, 0.0) for k in unseen_after}
    assert delta["merchant_group"] == 40 and sum(delta.values()) == 40
    # The unseen label lands in merchant_group's `other` bin, not in `missing`.
    other = by_label(phases["unseen"], "credit_pd_feature_bin_total", "feature", "bin")[("merchant_group", "other")]
    assert (
        other
        - by_label(phases["shifted"], "credit_pd_feature_bin_total", "feature", "bin")[("merchant_group", "other")]
        == 40
    )
    age_max = trained_run.model.encoder.numeric_ranges[SHIFTED_FEATURE][1]
    out = by_label(phases["shifted"], "credit_pd_out_of_range_total", "feature")
    before = by_label(phases["unshifted"], "credit_pd_out_of_range_total", "feature")
    assert out[(SHIFTED_FEATURE,)] - before[(SHIFTED_FEATURE,)] > 0, (
        f"ages above the training maximum {age_max} must be counted"
    )


def test_label_cardinality_is_bounded(phases: dict[str, dict], trained_run) -> None:
    """Series per drift family: features x bins for one model tag, whatever values were sent."""
    samples = phases["unseen"]
    drift = [name for name, _ in samples if name.startswith("credit_pd_")]
    counts = {name: drift.count(name) for name in set(drift)}
    print("credit_pd series per sample name:", dict(sorted(counts.items())), "total", len(drift))
    assert counts["credit_pd_feature_bin_total"] == counts["credit_pd_reference_share"]
    assert counts["credit_pd_feature_bin_total"] < 41 * 20
    assert not any(UNSEEN_LABEL in value for _, labels in samples for _, value in labels)


# ------------------------------------------------------------- dashboard and rules vs a real scrape
METRIC_NAME = re.compile(r"\b(?:credit_pd[_:][a-z_:]+|bentoml_[a-z_]+)")
# Histogram and counter series the exposition format derives from a family name.
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def exported(name: str, scraped: set[str]) -> bool:
    return name in scraped or any(name.endswith(s) and name in scraped for s in SUFFIXES)


def recording_rule_names() -> set[str]:
    return set(re.findall(r"record: (\S+)", RULES_TEMPLATE.read_text()))


def test_every_dashboard_query_names_a_metric_the_service_exports(phases: dict[str, dict]) -> None:
    """Each panel query names real metrics: exported by the service (this scrape, after traffic)
    or recorded by the chart's rules (whose own queries are checked the same way below)."""
    scraped = sample_names(phases["unseen"])
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    rules = recording_rule_names()
    for panel in panels:
        names = {n for t in panel["targets"] for n in METRIC_NAME.findall(t["expr"])}
        assert names, f"panel {panel['title']!r} queries no metric"
        unknown = {n for n in names if not exported(n, scraped) and n not in rules}
        assert not unknown, f"panel {panel['title']!r} queries {unknown}, which the service does not export"
    for variable in dashboard["templating"]["list"][1:]:
        assert all(exported(n, scraped) for n in METRIC_NAME.findall(variable["definition"]))


def test_every_rule_reads_metrics_the_service_exports(phases: dict[str, dict]) -> None:
    scraped = sample_names(phases["unseen"])
    rules = recording_rule_names()
    names = set(METRIC_NAME.findall(RULES_TEMPLATE.read_text()))
    unknown = {n for n in names if not exported(n, scraped) and n not in rules}
    assert not unknown, f"rules read {unknown}, which the service does not export"
    assert {"credit_pd_feature_bin_total", "credit_pd_reference_share", "credit_pd_prediction_pd_sum"} <= names
