"""The chart's drift rules are valid PromQL and compute what the Python PSI computes.

`promtool check rules` parses every expression; `promtool test rules` evaluates the recording
rules on synthetic counters (linear in time, so `increase()` shares equal the slopes' shares)
and compares PSI with credit_pd.monitoring.reference.psi, then checks which alerts fire. The
rules come from the real Helm render of the chart, so this tests what ships. promtool is
Debian's `prometheus` package (`make test` installs it); without it these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from credit_pd.monitoring.reference import psi
from tests.deploy.deploy_tools import Helm
from tests.monitoring.chart import deploy_tools_or_skip, prometheus_rule, render_monitoring

SERIES = 'namespace="credit-pd", job="credit-pd", model_tag="credit_pd_model:v1"'
LABELS = {"namespace": "credit-pd", "job": "credit-pd", "model_tag": "credit_pd_model:v1"}
# Per-minute increments per bin (live) and training shares (reference) of two features:
# `age` moved to the old ages, `merchant_group` did not.
LIVE = {"age": {"young": 5, "middle": 30, "old": 65}, "merchant_group": {"A": 49, "B": 31, "other": 20, "missing": 0}}
REFERENCE = {
    "age": {"young": 0.3, "middle": 0.4, "old": 0.3},
    "merchant_group": {"A": 0.5, "B": 0.3, "other": 0.2, "missing": 0.0},
}
PD_LIVE = {"low": 60, "high": 40}
PD_REFERENCE = {"low": 0.5, "high": 0.5}
# Served applications per master-scale grade per minute against the training shares: the mix moved
# to the worse grades (PSI above the critical 0.25).
GRADE_LIVE = {"1": 10, "2": 20, "3": 30, "4": 40}
GRADE_REFERENCE = {"1": 0.4, "2": 0.3, "3": 0.2, "4": 0.1}
SCORED_PER_MIN = 100
UNSEEN_PER_MIN = 5  # merchant_group: 5% of applications
PD_SUM_PER_MIN = 3.0  # mean PD 3% against 1.4% in training: 1.6 points
REFERENCE_PD_MEAN = 0.014


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool not found: install Debian's `prometheus` package (`make promtool`); "
            "without it the rules are only parsed as YAML by the chart tests"
        )
    return path


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    helm = Helm(deploy_tools_or_skip(), tmp_path_factory.mktemp("values"))
    rule = prometheus_rule(render_monitoring(helm))
    path = tmp_path_factory.mktemp("rules") / "credit-pd-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules(promtool: str, rules_file: Path) -> None:
    result = run([promtool, "check", "rules", str(rules_file)], rules_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 23 rules found" in result.stdout, result.stdout


def test_promtool_rejects_a_broken_rule(promtool: str, rules_file: Path) -> None:
    """Guard against a vacuous pass: a PromQL syntax error is reported."""
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    groups[0]["rules"][0]["expr"] = "sum by (feature (rate(credit_pd_feature_bin_total[1h]))"
    broken = rules_file.with_name("broken.yaml")
    broken.write_text(yaml.safe_dump({"groups": groups}))
    assert run([promtool, "check", "rules", str(broken)], broken.parent).returncode != 0


def series(name: str, labels: dict[str, str], per_minute: float) -> dict[str, str]:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{SERIES}{extra}}}", "values": f"0+{per_minute}x180"}


def gauge(name: str, labels: dict[str, str], value: float) -> dict[str, str]:
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{SERIES}{extra}}}", "values": f"{value}x180"}


def input_series() -> list[dict[str, str]]:
    out = [series("credit_pd_scored_applications_total", {}, SCORED_PER_MIN)]
    for feature, bins in LIVE.items():
        for label, rate in bins.items():
            out.append(series("credit_pd_feature_bin_total", {"feature": feature, "bin": label}, rate))
            out.append(
                gauge("credit_pd_reference_share", {"feature": feature, "bin": label}, REFERENCE[feature][label])
            )
    for label, rate in PD_LIVE.items():
        out.append(series("credit_pd_prediction_bin_total", {"bin": label}, rate))
        out.append(gauge("credit_pd_reference_prediction_share", {"bin": label}, PD_REFERENCE[label]))
    for grade, rate in GRADE_LIVE.items():
        out.append(series("credit_pd_grade_total", {"grade": grade}, rate))
        out.append(gauge("credit_pd_reference_grade_share", {"grade": grade}, GRADE_REFERENCE[grade]))
    out.append(series("credit_pd_unseen_category_total", {"feature": "merchant_group"}, UNSEEN_PER_MIN))
    out.append(series("credit_pd_unseen_category_total", {"feature": "age"}, 0))
    out.append(series("credit_pd_out_of_range_total", {"feature": "age"}, 0))
    out.append(series("credit_pd_prediction_pd_sum", {}, PD_SUM_PER_MIN))
    out.append(series("credit_pd_prediction_pd_count", {}, SCORED_PER_MIN))
    out.append(gauge("credit_pd_reference_pd_mean", {}, REFERENCE_PD_MEAN))
    return out


def close_to(expr: str, value: float, labels: dict[str, str]) -> dict[str, Any]:
    """`abs(expr - value) < bool 1e-9` is 1: promtool compares floats exactly, PSI needs a tolerance."""
    label_text = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted({**LABELS, **labels}.items())) + "}"
    return {
        "expr": f"abs({expr} - {value!r}) < bool 1e-9",
        "eval_time": "2h",
        "exp_samples": [{"labels": label_text, "value": 1}],
    }


def alert(name: str, severity: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"exp_labels": {**LABELS, **labels, "severity": severity}, "exp_annotations": annotations}


def test_rules_compute_the_python_psi_and_fire_the_alerts(promtool: str, rules_file: Path) -> None:
    expected = {
        feature: psi([REFERENCE[feature][b] for b in bins], list(bins.values())) for feature, bins in LIVE.items()
    }
    pd_psi = psi(list(PD_REFERENCE.values()), list(PD_LIVE.values()))
    grade_psi = psi(list(GRADE_REFERENCE.values()), list(GRADE_LIVE.values()))
    assert grade_psi > 0.25
    assert expected["age"] > 0.25 and expected["merchant_group"] < 0.1 and 0.01 < pd_psi < 0.1
    mean_shift_points = abs(PD_SUM_PER_MIN / SCORED_PER_MIN - REFERENCE_PD_MEAN) * 100
    tests = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series(),
                "promql_expr_test": [
                    close_to('credit_pd:feature:psi{feature="age"}', expected["age"], {"feature": "age"}),
                    close_to(
                        'credit_pd:feature:psi{feature="merchant_group"}',
                        expected["merchant_group"],
                        {"feature": "merchant_group"},
                    ),
                    close_to("credit_pd:prediction:psi", pd_psi, {}),
                    close_to("credit_pd:grade:psi", grade_psi, {}),
                    close_to(
                        'credit_pd:grade:live_share{grade="4"}',
                        GRADE_LIVE["4"] / sum(GRADE_LIVE.values()),
                        {"grade": "4"},
                    ),
                    close_to(
                        'credit_pd:unseen_category:ratio{feature="merchant_group"}',
                        UNSEEN_PER_MIN / SCORED_PER_MIN,
                        {"feature": "merchant_group"},
                    ),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2h",
                        "alertname": "CreditPDFeatureDriftCritical",
                        "exp_alerts": [
                            alert(
                                "CreditPDFeatureDriftCritical",
                                "critical",
                                {"feature": "age"},
                                {
                                    "summary": f"Severe input drift on age (PSI {expected['age']:.3f} over 1h)",
                                    "description": "PSI of feature age against the training reference of credit_pd_model:v1 is above 0.25: "
                                    "the model scores a population it was not trained on; review or retrain.",
                                },
                            )
                        ],
                    },
                    {"eval_time": "2h", "alertname": "CreditPDFeatureDriftWarning", "exp_alerts": []},
                    {"eval_time": "2h", "alertname": "CreditPDPredictionDriftWarning", "exp_alerts": []},
                    {
                        "eval_time": "2h",
                        "alertname": "CreditPDGradeDriftCritical",
                        "exp_alerts": [
                            alert(
                                "CreditPDGradeDriftCritical",
                                "critical",
                                {},
                                {
                                    "summary": f"Severe rating-grade mix drift (PSI {grade_psi:.3f} over 1h)",
                                    "description": "PSI of the served master-scale grades of credit_pd_model:v1 against "
                                    "training is above 0.25: "
                                    "review the model and the policy cut-offs.",
                                },
                            )
                        ],
                    },
                    {"eval_time": "2h", "alertname": "CreditPDGradeDriftWarning", "exp_alerts": []},
                    {
                        "eval_time": "2h",
                        "alertname": "CreditPDUnseenCategories",
                        "exp_alerts": [
                            alert(
                                "CreditPDUnseenCategories",
                                "warning",
                                {"feature": "merchant_group"},
                                {
                                    "summary": "Unseen categories in merchant_group (5% of applications over 1h)",
                                    "description": "Values of merchant_group that the model never saw are scored as missing; "
                                    "a new upstream code or a broken mapping is likely.",
                                },
                            )
                        ],
                    },
                    {"eval_time": "2h", "alertname": "CreditPDOutOfRangeValues", "exp_alerts": []},
                    {
                        "eval_time": "2h",
                        "alertname": "CreditPDMeanPDShift",
                        "exp_alerts": [
                            alert(
                                "CreditPDMeanPDShift",
                                "warning",
                                {},
                                {
                                    "summary": f"Mean PD moved {mean_shift_points:.2f} percentage points from training (over 1h)",
                                    "description": "The mean served PD of credit_pd_model:v1 differs from the training mean "
                                    "by more than 1 percentage points.",
                                },
                            )
                        ],
                    },
                    # Before `for: 15m` has passed, nothing fires.
                    {"eval_time": "10m", "alertname": "CreditPDFeatureDriftCritical", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = rules_file.with_name("credit-pd-rules.test.yaml")
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run([promtool, "test", "rules", test_file.name], rules_file.parent)
    print(f"PSI age {expected['age']:.4f}, merchant_group {expected['merchant_group']:.4f}, PD {pd_psi:.4f}")
    assert result.returncode == 0, result.stdout + result.stderr
