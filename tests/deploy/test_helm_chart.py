"""The Helm chart, rendered by real Helm: lint, values schema, and what the manifests must say.

Each test names one property a deployment depends on: probes on the service's real endpoints,
ports and selectors that line up, the HPA owning replicas, hardened pods, the S3 model option.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import (
    CHART_DIR,
    NAMESPACE,
    PRODUCTION_VALUES,
    S3_VALUES,
    SITE_VALUES,
    Helm,
    find,
    is_hook,
    service_pods,
)

SERVICE_PORT = 3000
RENDERINGS = ("default_objects", "production_objects", "s3_objects")


def containers_of(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def main_container(pod_template: dict[str, Any]) -> dict[str, Any]:
    return pod_template["spec"]["containers"][0]


def error_messages(report: dict[str, Any], min_severity: int) -> list[str]:
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= min_severity]


@pytest.mark.parametrize(
    "files, values",
    [((), None), ((PRODUCTION_VALUES, SITE_VALUES), None), ((PRODUCTION_VALUES, SITE_VALUES), S3_VALUES)],
    ids=["default", "production", "s3-model"],
)
def test_chart_lints_strict_without_warnings(helm: Helm, files: tuple[Path, ...], values: dict | None) -> None:
    report = helm.lint(*files, values=values, strict=True)
    assert error_messages(report, min_severity=2) == [], "helm lint --strict found warnings or errors"


@pytest.mark.parametrize(
    "values, wrong",
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicas": 3}, "additional properties 'replicas'"),
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"config": {"workers": [1]}}, "/config/workers"),
        ({"config": {"MaxBatchSize": 64}}, "additional properties 'MaxBatchSize' not allowed"),
        ({"config": {"max_batchsize": 64}}, "additional properties 'max_batchsize' not allowed"),
        ({"config": {"unseen_categories": "ignore"}}, "/config/unseen_categories"),
        ({"config": {"auth_jwks_url": "http://issuer.example.com/jwks.json"}}, "/config/auth_jwks_url"),
        (
            {"ingress": {"enabled": True, "https": {"enabled": True, "certificateArn": ""}}},
            "/ingress/https/certificateArn",
        ),
        (
            {"ingress": {"enabled": True, "https": {"enabled": True, "certificateArn": "my-cert"}}},
            "/ingress/https/certificateArn",
        ),
        ({"ingress": {"enabled": True, "auth": {"type": "jwt"}}}, "/ingress"),
        ({"ingress": {"auth": {"type": "cognito"}}}, "/ingress/auth/type"),
        ({"networkPolicy": {"albSubnetCidrs": ["192.168.192.0"]}}, "/networkPolicy/albSubnetCidrs/0"),
        ({"ingress": {"alb": {"accessLogs": {"enabled": True}}}}, "/ingress/alb/accessLogs/bucket"),
        ({"modelFromS3": {"enabled": True, "uri": "https://example.com/model.bentomodel"}}, "/modelFromS3/uri"),
    ],
    ids=[
        "wrong-type",
        "unknown-top-level-key",
        "latest-tag",
        "setting-wrong-type",
        "setting-not-by-field-name",
        "unknown-setting",
        "setting-not-in-its-literal",
        "jwks-over-plain-http",
        "https-without-certificate",
        "https-with-a-non-acm-arn",
        "jwt-without-https-or-settings",
        "browser-login-dropped",
        "cidr-without-prefix",
        "access-logs-without-bucket",
        "non-s3-uri",
    ],
)
def test_schema_rejects_bad_values(helm: Helm, values: dict, wrong: str) -> None:
    rendered = helm.template(values=values)
    assert rendered.returncode != 0, f"helm template accepted {values}"
    assert wrong in rendered.stderr
    assert error_messages(helm.lint(values=values), min_severity=3), f"helm lint accepted {values}"


def test_s3_option_requires_a_uri(helm: Helm) -> None:
    rendered = helm.template(
        values={
            "modelFromS3": {"enabled": True, "uri": ""},
            "config": {"model_tag": "credit_pd_model:2wqrvxdo3k2ygaav"},
        }
    )
    assert rendered.returncode != 0
    assert "/modelFromS3/uri" in rendered.stderr  # the schema (if enabled then uri) refuses it


@pytest.mark.parametrize(
    "config",
    [{"model_tag": "credit_pd_model:latest"}, {"model_tag": "credit_pd_model"}, {}],
    ids=["latest", "no-version", "service-default"],
)
def test_s3_option_requires_a_pinned_model_tag(helm: Helm, config: dict) -> None:
    """`latest` would silently serve the baked model: the bento's copy keeps the `latest` pointer."""
    rendered = helm.template(values={**S3_VALUES, "config": config})
    assert rendered.returncode != 0
    assert "modelFromS3 needs a pinned config.model_tag" in rendered.stderr


def test_production_values_alone_are_refused(helm: Helm) -> None:
    """The certificate, the token issuer and the log bucket are required values: without them the
    install fails instead of exposing plain HTTP, an unauthenticated endpoint or unlogged traffic."""
    rendered = helm.template(PRODUCTION_VALUES)
    assert rendered.returncode != 0
    assert "/ingress/https/certificateArn" in rendered.stderr
    assert "/ingress/alb/accessLogs/bucket" in rendered.stderr
    assert "missing properties 'auth_jwks_url', 'auth_issuer', 'auth_audience'" in rendered.stderr


def test_production_values_without_alb_subnets_are_refused(helm: Helm) -> None:
    site = yaml.safe_load(SITE_VALUES.read_text())
    site["networkPolicy"]["albSubnetCidrs"] = []
    site["ingress"]["alb"]["subnets"] = []
    rendered = helm.template(PRODUCTION_VALUES, values=site)
    assert rendered.returncode != 0
    assert "networkPolicy.albSubnetCidrs is empty while the NetworkPolicy restricts sources" in rendered.stderr


# Each case breaks one rule of values.yaml's "Shutdown timing" on top of the production values.
TIMING_CASES = [
    (
        {"preStopSleepSeconds": 10},
        "preStopSleepSeconds (10) must be at least ingress.alb.deregistrationDelaySeconds (30)",
    ),
    (
        {"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 5},
        "terminationGracePeriodSeconds (5) must be at least preStopSleepSeconds + config.request_timeout_s + 5 (65)",
    ),
    (
        {"config": {"keepalive_timeout_s": 5}},
        "config.keepalive_timeout_s (5) must exceed ingress.alb.idleTimeoutSeconds (60)",
    ),
    (
        {"config": {"keepalive_timeout_s": 60}},
        "config.keepalive_timeout_s (60) must exceed ingress.alb.idleTimeoutSeconds (60)",
    ),
    (
        {"config": {"request_timeout_s": 60}, "terminationGracePeriodSeconds": 200},
        "ingress.alb.deregistrationDelaySeconds (30) must be at least config.request_timeout_s (60)",
    ),
    (
        {"ingress": {"alb": {"idleTimeoutSeconds": 120}}},
        "config.keepalive_timeout_s (65) must exceed ingress.alb.idleTimeoutSeconds (120)",
    ),
    (
        {"config": {"keepalive_timeout_s": None}},
        "set config.request_timeout_s and config.keepalive_timeout_s explicitly",
    ),
]


@pytest.mark.parametrize(
    "values, message",
    TIMING_CASES,
    ids=[
        "prestop-below-deregistration",
        "grace-below-prestop-plus-timeout",
        "keepalive-below-idle",
        "keepalive-equal-idle",
        "deregistration-below-request-timeout",
        "idle-above-keepalive",
        "keepalive-unset",
    ],
)
def test_chart_refuses_inconsistent_timeouts(helm: Helm, values: dict, message: str) -> None:
    rendered = helm.template(PRODUCTION_VALUES, SITE_VALUES, values=values)
    assert rendered.returncode != 0, f"helm template accepted {values}"
    assert message in rendered.stderr


def test_grace_rule_holds_without_an_ingress(helm: Helm) -> None:
    """The issue's case: preStop 30 with grace 5 must not render, Ingress or not."""
    rendered = helm.template(values={"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 5})
    assert rendered.returncode != 0 and "terminationGracePeriodSeconds (5) must be at least" in rendered.stderr
    assert helm.template(values={"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 35}).returncode == 0
    assert (
        helm.template(
            values={"preStopSleepSeconds": 30, "terminationGracePeriodSeconds": 35, "config": {"request_timeout_s": 30}}
        ).returncode
        != 0
    )


def test_service_defaults_fit_the_chart_timing() -> None:
    """Unset settings keep the service's defaults: those must satisfy the chart's defaults too."""
    pytest.importorskip("pydantic_settings", reason="needs the app's environment (.venv)")
    from credit_pd.serving.settings import ServingSettings

    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    settings = ServingSettings.model_fields
    assert "keepalive_timeout_s" in settings, (
        "ServingSettings has no keepalive_timeout_s (the keep-alive passed to uvicorn)"
    )
    keepalive, timeout = settings["keepalive_timeout_s"].default, settings["request_timeout_s"].default
    alb = defaults["ingress"]["alb"]
    assert keepalive > alb["idleTimeoutSeconds"]
    assert defaults["preStopSleepSeconds"] >= alb["deregistrationDelaySeconds"] >= timeout
    assert defaults["terminationGracePeriodSeconds"] >= defaults["preStopSleepSeconds"] + timeout + 5
    production = yaml.safe_load(PRODUCTION_VALUES.read_text())["config"]
    assert (production["keepalive_timeout_s"], production["request_timeout_s"]) == (keepalive, timeout), (
        "values-production.yaml pins the service's own defaults (so the chart can check them)"
    )


def test_hand_set_alb_attributes_are_refused(helm: Helm) -> None:
    annotation = "alb.ingress.kubernetes.io/load-balancer-attributes"
    rendered = helm.template(
        values={
            "ingress": {"enabled": True, "annotations": {annotation: "idle_timeout.timeout_seconds=600"}},
            "config": {"keepalive_timeout_s": 65, "request_timeout_s": 30},
        }
    )
    assert rendered.returncode != 0 and f"must not set {annotation}" in rendered.stderr


def schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    """The few JSON-schema keywords the config properties use (type, enum, pattern)."""
    import re

    kinds = {"boolean": bool, "integer": int, "number": (int, float), "string": str}
    if "enum" in schema:
        return value in schema["enum"]
    expected = kinds[schema["type"]]
    if isinstance(value, bool) and schema["type"] != "boolean":
        return False
    return isinstance(value, expected) and ("pattern" not in schema or re.search(schema["pattern"], value) is not None)


def test_schema_lists_every_serving_setting() -> None:
    """values.schema.json names every ServingSettings field (so an unknown `config` key is a schema
    error), with a type its default satisfies; none that the service does not have."""
    pytest.importorskip("pydantic_settings", reason="needs the app's environment (.venv)")
    from credit_pd.serving.settings import ServingSettings

    config = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["config"]
    assert config["additionalProperties"] is False
    fields = ServingSettings.model_fields
    assert set(config["properties"]) == set(fields), {
        "in settings.py, not in the schema": sorted(set(fields) - set(config["properties"])),
        "in the schema, not in settings.py": sorted(set(config["properties"]) - set(fields)),
    }
    for name, field in fields.items():
        if field.default is not None:
            assert schema_accepts(config["properties"][name], field.default), name


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_probes_hit_readyz_and_livez_on_the_container_port(rendering: str, request: pytest.FixtureRequest) -> None:
    container = main_container(service_pods(request.getfixturevalue(rendering)))
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/livez"}
    for probe, path in expected.items():
        http_get = container[probe]["httpGet"]
        assert http_get["path"] == path, probe
        assert port_names[http_get["port"]] == SERVICE_PORT, probe
    # Model loading gets minutes, not the liveness probe's seconds.
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 120


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_service_routes_to_the_container_port_of_the_service_pods(
    rendering: str, request: pytest.FixtureRequest
) -> None:
    objects = request.getfixturevalue(rendering)
    service, pods = find(objects, "Service"), service_pods(objects)
    container_ports = {p["name"]: p["containerPort"] for p in main_container(pods)["ports"]}
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    assert container_ports.get(target, target) == SERVICE_PORT
    selector = service["spec"]["selector"]
    assert selector.items() <= pods["metadata"]["labels"].items()
    assert find(objects, "Deployment")["spec"]["selector"]["matchLabels"] == selector


def test_helm_test_pod_is_not_a_service_pod(default_objects: list[dict]) -> None:
    selector = find(default_objects, "Service")["spec"]["selector"]
    test_pod = find(default_objects, "Pod", hooks=True)
    assert not selector.items() <= test_pod["metadata"]["labels"].items()


def test_hpa_owns_replicas_when_autoscaling(default_objects: list[dict], helm: Helm) -> None:
    deployment, hpa = find(default_objects, "Deployment"), find(default_objects, "HorizontalPodAutoscaler")
    assert "replicas" not in deployment["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60

    fixed = helm.render(values={"autoscaling": {"enabled": False}, "replicaCount": 3})
    assert find(fixed, "Deployment")["spec"]["replicas"] == 3
    assert not [o for o in fixed if o["kind"] == "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_pods_are_hardened(rendering: str, request: pytest.FixtureRequest) -> None:
    objects = request.getfixturevalue(rendering)
    for pods in (service_pods(objects), find(objects, "Pod", hooks=True)):
        spec = pods["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers_of(pods):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
            assert container["resources"]["limits"] and container["resources"]["requests"], container["name"]
            assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_writable_paths_are_emptydirs(rendering: str, request: pytest.FixtureRequest) -> None:
    pods = service_pods(request.getfixturevalue(rendering))
    empty_dirs = {v["name"] for v in pods["spec"]["volumes"] if "emptyDir" in v}
    for container in containers_of(pods):
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert mounts["/tmp"] in empty_dirs and env["TMPDIR"] == "/tmp", container["name"]
        assert mounts[env["BENTOML_HOME"]] in empty_dirs, container["name"]


def test_settings_pass_through_by_name(default_objects: list[dict], helm: Helm) -> None:
    """values `config` keys are ServingSettings field names; the chart restates no default."""
    pods = service_pods(default_objects)
    config_map = find(default_objects, "ConfigMap")
    (env_from,) = main_container(pods)["envFrom"]
    assert env_from["configMapRef"]["name"] == config_map["metadata"]["name"]
    assert config_map["data"] == {}

    changed = helm.render(values={"config": {"max_batch_size": 64, "access_log": True, "max_batch_hold_ms": 2.5}})
    assert find(changed, "ConfigMap")["data"] == {
        "CREDIT_PD_MAX_BATCH_SIZE": "64",
        "CREDIT_PD_ACCESS_LOG": "true",
        "CREDIT_PD_MAX_BATCH_HOLD_MS": "2.5",
    }
    checksum = "checksum/config"
    assert service_pods(changed)["metadata"]["annotations"][checksum] != pods["metadata"]["annotations"][checksum]


@pytest.mark.parametrize("values_file", ["values.yaml", "values-production.yaml", "values-local.yaml"])
def test_config_keys_are_serving_settings(values_file: str) -> None:
    """Every setting a values file passes is a field the service reads, and parses as its type."""
    pytest.importorskip("pydantic_settings", reason="needs the app's environment (.venv)")
    from credit_pd.serving.settings import ServingSettings

    config = yaml.safe_load((CHART_DIR / values_file).read_text()).get("config") or {}
    assert set(config) <= set(ServingSettings.model_fields), set(config) - set(ServingSettings.model_fields)
    env = {f"CREDIT_PD_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.items()}
    parsed = ServingSettings(**{k: v for k, v in config.items()})
    assert {k: getattr(parsed, k) for k in config} == config, env


@pytest.mark.parametrize("rendering", RENDERINGS)
def test_pods_spread_across_zones_and_hosts(rendering: str, request: pytest.FixtureRequest) -> None:
    pods = service_pods(request.getfixturevalue(rendering))
    constraints = pods["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"].items() <= pods["metadata"]["labels"].items()


def test_disruption_budget_and_network_policy_select_the_service_pods(default_objects: list[dict]) -> None:
    labels = service_pods(default_objects)["metadata"]["labels"]
    pdb = find(default_objects, "PodDisruptionBudget")
    policy = find(default_objects, "NetworkPolicy")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_production_values_pin_image_and_model_and_expose_an_alb(production_objects: list[dict]) -> None:
    container = main_container(service_pods(production_objects))
    repository, tag = container["image"].rsplit(":", 1)
    assert repository.endswith(".amazonaws.com/credit-pd-service") and ".dkr.ecr." in repository
    assert tag and tag != "latest"
    model_tag = find(production_objects, "ConfigMap")["data"]["CREDIT_PD_MODEL_TAG"]
    assert model_tag.startswith("credit_pd_model:") and not model_tag.endswith(":latest")
    assert find(production_objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 3

    ingress = find(production_objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    assert annotations["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert annotations["alb.ingress.kubernetes.io/scheme"] == "internal"
    service_name = find(production_objects, "Service")["metadata"]["name"]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == service_name


def test_production_edge_is_https_only_token_checked_and_narrow(production_objects: list[dict]) -> None:
    """HTTPS with the ACM certificate, HTTP only redirecting, the ALB's JWT validation against the
    service's own issuer and scope, and only the scoring API and the health path routed (no
    /metrics, /docs.json or Swagger UI at /)."""
    ingress = find(production_objects, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    site = yaml.safe_load(SITE_VALUES.read_text())
    config = find(production_objects, "ConfigMap")["data"]
    assert json.loads(annotations["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert annotations["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"] == site["ingress"]["https"]["certificateArn"]
    assert annotations["alb.ingress.kubernetes.io/ssl-policy"].startswith("ELBSecurityPolicy-TLS13")
    assert not [k for k in annotations if k.startswith("alb.ingress.kubernetes.io/auth-")], (
        "no cookie-based browser login"
    )
    validation = json.loads(annotations["alb.ingress.kubernetes.io/jwt-validation"])
    assert validation == {
        "jwksEndpoint": config["CREDIT_PD_AUTH_JWKS_URL"],
        "issuer": config["CREDIT_PD_AUTH_ISSUER"],
        "additionalClaims": [
            {"name": "scope", "format": "space-separated-values", "values": config["CREDIT_PD_AUTH_SCOPE"].split()}
        ],
    }
    assert validation["jwksEndpoint"].startswith("https://")
    assert config["CREDIT_PD_AUTH_AUDIENCE"] == site["config"]["auth_audience"]
    routed = {(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert routed == {("/predict", "Exact"), ("/readyz", "Exact")}


def test_production_alb_logs_to_s3_in_its_own_subnets_with_consistent_timeouts(production_objects: list[dict]) -> None:
    annotations = find(production_objects, "Ingress")["metadata"]["annotations"]
    site = yaml.safe_load(SITE_VALUES.read_text())
    attributes = dict(
        a.split("=", 1) for a in annotations["alb.ingress.kubernetes.io/load-balancer-attributes"].split(",")
    )
    assert attributes["access_logs.s3.enabled"] == "true"
    assert attributes["access_logs.s3.bucket"] == site["ingress"]["alb"]["accessLogs"]["bucket"]
    assert annotations["alb.ingress.kubernetes.io/subnets"].split(",") == site["ingress"]["alb"]["subnets"]
    config = find(production_objects, "ConfigMap")["data"]
    idle = int(attributes["idle_timeout.timeout_seconds"])
    deregistration = int(annotations["alb.ingress.kubernetes.io/target-group-attributes"].split("=")[1])
    pods = service_pods(production_objects)["spec"]
    pre_stop = pods["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    timeout = int(config["CREDIT_PD_REQUEST_TIMEOUT_S"])
    assert float(config["CREDIT_PD_KEEPALIVE_TIMEOUT_S"]) > idle
    assert pre_stop >= deregistration >= timeout
    assert pods["terminationGracePeriodSeconds"] >= pre_stop + timeout + 5


def test_production_network_policy_admits_only_the_alb_and_monitoring(production_objects: list[dict]) -> None:
    """Not the VPC's range: with the VPC CNI every pod has a VPC address, so that admits the cluster."""
    cluster = yaml.safe_load((CHART_DIR.parents[1] / "deploy" / "eks" / "cluster.yaml").read_text())
    site = yaml.safe_load(SITE_VALUES.read_text())
    (rule,) = find(production_objects, "NetworkPolicy")["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    sources = rule["from"]
    cidrs = [s["ipBlock"]["cidr"] for s in sources if "ipBlock" in s]
    assert cidrs == site["networkPolicy"]["albSubnetCidrs"] and cidrs
    vpc = ipaddress.ip_network(cluster["vpc"]["cidr"])
    assert cluster["vpc"]["cidr"] not in cidrs
    for cidr in map(ipaddress.ip_network, cidrs):
        assert cidr.subnet_of(vpc) and cidr.num_addresses <= 1024, cidr
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in sources
    others = [s for s in sources if "ipBlock" not in s and "namespaceSelector" not in s]
    # Besides those, only the chart's own `helm test` pod (it POSTs to the Service).
    assert [s["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for s in others] == ["credit-pd-test"]


def test_production_hpa_sees_in_flight_requests_and_has_behavior(production_objects: list[dict]) -> None:
    hpa = find(production_objects, "HorizontalPodAutoscaler")["spec"]
    pods_metric = next(m for m in hpa["metrics"] if m["type"] == "Pods")["pods"]
    assert pods_metric["metric"]["name"] == "credit_pd_requests_in_flight"
    adapter = (CHART_DIR.parents[1] / "deploy" / "eks" / "prometheus-adapter-values.yaml").read_text()
    assert "credit_pd_requests_in_flight" in adapter and "bentoml_service_request_in_progress" in adapter
    assert hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_production_capacity_fits_the_node_groups(production_objects: list[dict]) -> None:
    """maxReplicas plus the surge pod, spread with maxSkew 1 over the zones, fit the zones' node
    groups at the pods per node the CPU request allows (values-production.yaml's arithmetic)."""
    cluster = yaml.safe_load((CHART_DIR.parents[1] / "deploy" / "eks" / "cluster.yaml").read_text())
    groups = cluster["managedNodeGroups"]
    zones = {z for g in groups for z in g["availabilityZones"]}
    assert all(len(g["availabilityZones"]) == 1 for g in groups), "one node group per zone (Cluster Autoscaler)"
    (instance,) = {g["instanceType"] for g in groups}
    allocatable_millicpu = {"c6i.2xlarge": 7910}[instance]
    system_millicpu = 600
    hpa = find(production_objects, "HorizontalPodAutoscaler")["spec"]
    deployment = find(production_objects, "Deployment")["spec"]
    request = service_pods(production_objects)["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    pods_per_node = (allocatable_millicpu - system_millicpu) // (int(request) * 1000)
    peak = hpa["maxReplicas"] + int(deployment["strategy"]["rollingUpdate"]["maxSurge"])
    per_zone = -(-peak // len(zones))
    nodes_per_zone = -(-per_zone // pods_per_node)
    assert all(g["maxSize"] >= nodes_per_zone for g in groups), (peak, per_zone, pods_per_node)
    assert sum(g["minSize"] for g in groups) * pods_per_node >= hpa["minReplicas"]
    # A zone down: the peak over the other zones still fits.
    assert all(g["maxSize"] * pods_per_node >= -(-peak // (len(zones) - 1)) for g in groups)
    tags = [g.get("propagateASGTags") for g in groups]
    assert all(tags), "node groups propagate their labels/taints to the ASG tags the autoscaler scales from zero by"


def test_namespace_template_enforces_restricted_pod_security(helm: Helm, default_objects: list[dict]) -> None:
    assert not [o for o in default_objects if o["kind"] == "Namespace"]
    namespace = find(helm.render(values={"namespace": {"create": True}}), "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["kubernetes.io/metadata.name"] == NAMESPACE
    # The controller's readiness gate: a rollout waits until the ALB sees each new pod healthy.
    assert labels["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"


def test_production_service_monitor_scrapes_the_service(production_objects: list[dict]) -> None:
    monitor, service = find(production_objects, "ServiceMonitor"), find(production_objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


def test_s3_option_imports_the_model_before_the_service_starts(s3_objects: list[dict]) -> None:
    pods = service_pods(s3_objects)
    (init,) = pods["spec"]["initContainers"]
    service = main_container(pods)
    assert init["image"] == service["image"]
    init_env = {e["name"]: e.get("value") for e in init["env"]}
    assert "AWS_ENDPOINT_URL_S3" not in init_env  # modelFromS3.env is empty on EKS (real S3, IRSA)
    assert init_env["MODEL_URI"] == S3_VALUES["modelFromS3"]["uri"]
    assert init_env["CREDIT_PD_MODEL_TAG"] == find(s3_objects, "ConfigMap")["data"]["CREDIT_PD_MODEL_TAG"]
    script = init["command"][-1]
    assert 'bentoml models import "$MODEL_URI"' in script
    # BentoML resolves every model recorded in the bento before serving: the baked models are
    # copied into the store first (checked against a real `bentoml serve` of a read-only bento).
    assert init_env["BENTO_MODELS"] == "/home/bentoml/bento/models"
    assert script.index('cp -R "$BENTO_MODELS/."') < script.index("bentoml models import")

    # The import lands in BENTOML_HOME/models of the initContainer, which the service mounts
    # read-only over the bento's own models/ (the store BentoML serves from inside a bento).
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    service_mounts = {m["name"]: m for m in service["volumeMounts"]}
    assert init_mounts["model-store"] == f"{init_env['BENTOML_HOME'].rstrip('/')}/models"
    assert service_mounts["model-store"]["mountPath"] == "/home/bentoml/bento/models"
    assert service_mounts["model-store"]["readOnly"] is True

    account = find(s3_objects, "ServiceAccount")
    assert pods["spec"]["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == S3_VALUES["serviceAccount"]["awsRoleArn"]


def test_baked_model_by_default(default_objects: list[dict]) -> None:
    pods = service_pods(default_objects)
    assert "initContainers" not in pods["spec"]
    assert "annotations" not in find(default_objects, "ServiceAccount")["metadata"]


def test_helm_test_posts_the_example_and_checks_pd(default_objects: list[dict]) -> None:
    pod = find(default_objects, "Pod", hooks=True)
    config_map = find(default_objects, "ConfigMap", hooks=True)
    service = find(default_objects, "Service")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["command"][-1]
    assert url == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    script = config_map["data"]["check.py"]
    assert '"/readyz"' in script and '"/predict"' in script and 'answer.get("pd")' in script
    example = json.loads(config_map["data"]["predict-example.json"])
    assert example == json.loads((CHART_DIR / "files" / "predict-example.json").read_text())


def test_example_request_is_valid_for_the_service(request: pytest.FixtureRequest) -> None:
    """The helm test's example must pass the service's own request model, built from a stored
    model as the service builds it (schema drift guard)."""
    serving = pytest.importorskip("credit_pd.serving.contract", reason="needs the app's environment (.venv)")
    from credit_pd.model_store import load_from_store
    from credit_pd.serving.settings import ServingSettings

    model = load_from_store(request.getfixturevalue("trained_run").model_tag)
    application = serving.build_application_model(model.schema, model.encoder, ServingSettings())
    (record,) = json.loads((CHART_DIR / "files" / "predict-example.json").read_text())["applications"]
    application.model_validate(record)


def test_helm_test_expects_a_401_when_auth_is_on(default_objects: list[dict], production_objects: list[dict]) -> None:
    def expect_auth(objects: list[dict]) -> str:
        env = find(objects, "Pod", hooks=True)["spec"]["containers"][0]["env"]
        return next(e["value"] for e in env if e["name"] == "EXPECT_AUTH")

    assert (expect_auth(default_objects), expect_auth(production_objects)) == ("false", "true")
    script = find(production_objects, "ConfigMap", hooks=True)["data"]["check.py"]
    assert "error.code != 401" in script and 'startswith("Bearer")' in script


def test_hooks_are_only_the_helm_test(default_objects: list[dict]) -> None:
    hooks = [o for o in default_objects if is_hook(o)]
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"test"}
    assert {o["kind"] for o in hooks} == {"Pod", "ConfigMap", "NetworkPolicy"}


def undocumented_keys(path: Path, schema: dict[str, Any]) -> list[str]:
    """Keys of chart-defined objects (schema additionalProperties: false) with no comment above them."""
    lines = path.read_text().splitlines()
    missing: list[str] = []

    def walk(node: yaml.Node, node_schema: dict[str, Any], prefix: str) -> None:
        if not isinstance(node, yaml.MappingNode) or node_schema.get("additionalProperties", True) is not False:
            return
        for key, value in node.value:
            line = key.start_mark.line
            if not node.flow_style:  # keys of a one-line {flow: mapping} share the parent's comment
                above = next((lines[i].strip() for i in range(line - 1, -1, -1) if lines[i].strip()), "")
                if not above.startswith("#"):
                    missing.append(f"{path.name}:{line + 1} {prefix}{key.value}")
            walk(value, node_schema.get("properties", {}).get(key.value, {}), f"{prefix}{key.value}.")

    walk(yaml.compose(path.read_text()), schema, "")
    return missing


@pytest.mark.parametrize("values_file", ["values.yaml", "values-production.yaml", "values-local.yaml"])
def test_every_values_key_is_documented(values_file: str) -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert undocumented_keys(CHART_DIR / values_file, schema) == []


def test_schema_covers_every_default_key() -> None:
    """The strict schema and values.yaml agree: the defaults themselves validate (helm lint) and
    every top-level default key is a schema property."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(defaults) <= set(schema["properties"])
