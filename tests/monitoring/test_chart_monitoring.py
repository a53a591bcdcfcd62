"""The chart's monitoring templates: off by default, rendered and valid when enabled.

The dashboard ConfigMap is a built-in kind, validated strictly by kubernetes-validate like the
rest of the chart. PrometheusRule is a Prometheus Operator CRD, for which kubernetes-validate
has no schema, so it is validated against `PrometheusRuleModel` below: the structural schema of
the operator's CRD (monitoring.coreos.com_prometheusrules.yaml, v1, operator 0.82) restated
as strict pydantic models (unknown fields rejected, durations matched with the CRD's pattern).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tests.deploy.deploy_tools import CHART_DIR, Helm, run_tool
from tests.monitoring.chart import MONITORING_ON, deploy_tools_or_skip, prometheus_rule, render_monitoring

# The CRD's duration pattern (spec.groups[].interval, rules[].for).
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
DASHBOARD_FILE = CHART_DIR / "files" / "credit-pd-dashboard.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RuleModel(_Strict):
    alert: str | None = None
    record: str | None = None
    expr: int | str
    for_: str | None = Field(default=None, alias="for", pattern=DURATION)
    keep_firing_for: str | None = Field(default=None, pattern=DURATION)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class RuleGroupModel(_Strict):
    name: str = Field(min_length=1)
    interval: str | None = Field(default=None, pattern=DURATION)
    limit: int | None = None
    query_offset: str | None = Field(default=None, pattern=DURATION)
    labels: dict[str, str] = {}
    partial_response_strategy: str | None = None
    rules: list[RuleModel] = []


class RuleSpecModel(_Strict):
    groups: list[RuleGroupModel] = []


class MetadataModel(BaseModel):
    name: str
    namespace: str
    labels: dict[str, str] = {}


class PrometheusRuleModel(_Strict):
    apiVersion: str = Field(pattern=r"^monitoring\.coreos\.com/v1$")
    kind: str = Field(pattern=r"^PrometheusRule$")
    metadata: MetadataModel
    spec: RuleSpecModel


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(deploy_tools_or_skip(), tmp_path_factory.mktemp("values"))


@pytest.fixture(scope="module")
def monitoring_objects(helm: Helm) -> list[dict[str, Any]]:
    return render_monitoring(helm)


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in helm.render()}
    assert not any(kind == "PrometheusRule" or name.endswith("-dashboard") for kind, name in kinds)


def test_prometheus_rule_matches_the_crd_schema(monitoring_objects: list[dict[str, Any]]) -> None:
    rule = PrometheusRuleModel.model_validate(prometheus_rule(monitoring_objects))
    assert rule.metadata.labels["release"] == "kube-prometheus-stack"
    rules = [r for g in rule.spec.groups for r in g.rules]
    assert all((r.alert is None) != (r.record is None) for r in rules), "each rule is either a record or an alert"
    assert {r.alert for r in rules if r.alert} == {
        "CreditPDFeatureDriftWarning",
        "CreditPDFeatureDriftCritical",
        "CreditPDPredictionDriftWarning",
        "CreditPDPredictionDriftCritical",
        "CreditPDGradeDriftWarning",
        "CreditPDGradeDriftCritical",
        "CreditPDUnseenCategories",
        "CreditPDOutOfRangeValues",
        "CreditPDMeanPDShift",
    }
    assert {r.labels.get("severity") for r in rules if r.alert} == {"warning", "critical"}


def test_the_crd_check_rejects_a_wrong_rule(monitoring_objects: list[dict[str, Any]]) -> None:
    """Guard against a vacuous pass: an unknown field and a bad duration are refused."""
    rule = json.loads(json.dumps(prometheus_rule(monitoring_objects)))
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = "up"
    with pytest.raises(ValueError):
        PrometheusRuleModel.model_validate(rule)
    rule = json.loads(json.dumps(prometheus_rule(monitoring_objects)))
    rule["spec"]["groups"][1]["rules"][0]["for"] = "15 minutes"
    with pytest.raises(ValueError):
        PrometheusRuleModel.model_validate(rule)


def test_window_and_thresholds_come_from_values(helm: Helm) -> None:
    objects = render_monitoring(
        helm, {"monitoring": {"prometheusRule": {"window": "6h", "psiCritical": 0.3, "for": "1h"}}}
    )
    text = yaml.safe_dump(prometheus_rule(objects))
    assert "[6h]" in text and "[1h]" not in text and "> 0.3)" in text and "for: 1h" in text


def test_dashboard_configmap_carries_the_sidecar_label_and_the_json(monitoring_objects: list[dict[str, Any]]) -> None:
    config_map = next(
        o for o in monitoring_objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    )
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(key, text)] = config_map["data"].items()
    assert key.endswith(".json") and json.loads(text) == json.loads(DASHBOARD_FILE.read_text())


def test_dashboard_configmap_validates_strictly(
    helm: Helm, monitoring_objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    built_in = [o for o in monitoring_objects if o["apiVersion"].split("/")[0] != "monitoring.coreos.com"]
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(yaml.safe_dump_all(built_in))
    result = run_tool([helm.tools.kubernetes_validate, "--strict", manifest])
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if line.strip() and not line.startswith("INFO")
    ]
    assert result.returncode == 0 and not problems, problems
    assert sum(" passed " in line for line in result.stdout.splitlines()) == len(built_in)


def test_lint_passes_with_monitoring_on(helm: Helm) -> None:
    report = helm.lint(values=MONITORING_ON)
    errors = [m for m in report.get("messages", []) if m.get("severity") in ("ERROR", "WARNING")]
    assert not errors, errors


@pytest.mark.parametrize(
    "bad", [{"psiWarning": "high"}, {"window": "an hour"}, {"unseenRateThreshold": 2}, {"colour": "red"}]
)
def test_schema_rejects_wrong_monitoring_values(helm: Helm, bad: dict[str, Any]) -> None:
    result = helm.template(values={"monitoring": {"prometheusRule": {"enabled": True, **bad}}})
    assert result.returncode != 0 and "monitoring" in result.stderr, result.stderr[-500:]
