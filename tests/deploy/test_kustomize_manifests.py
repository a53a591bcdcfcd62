"""k8s/: the kustomize base equals the chart's defaults; the EKS overlay equals its production values.

Both render offline with `kubectl kustomize`. Equality is checked object by object after removing
what only one tool adds: Helm's bookkeeping labels and checksum annotation, kustomize's ConfigMap
hash suffix, the base's Namespace object and the chart's `helm test` hooks.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from tests.deploy.deploy_tools import NAMESPACE, find, is_hook, service_pods

HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version")
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def normalized(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Objects keyed by (kind, name), without tool-specific decorations."""
    result = {}
    for original in objects:
        if is_hook(original) or original["kind"] == "Namespace":
            continue
        obj = copy.deepcopy(original)
        metadatas = [obj["metadata"]]
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
            metadatas.append(template["metadata"])
            template["metadata"].get("annotations", {}).pop("checksum/config", None)
            for container in template["spec"]["containers"]:
                for source in container.get("envFrom", []):
                    source["configMapRef"]["name"] = HASH_SUFFIX.sub("", source["configMapRef"]["name"])
        if obj["kind"] == "ConfigMap":
            obj["metadata"]["name"] = HASH_SUFFIX.sub("", obj["metadata"]["name"])
        for metadata in metadatas:
            for label in HELM_ONLY_LABELS:
                metadata.get("labels", {}).pop(label, None)
        result[(obj["kind"], obj["metadata"]["name"])] = obj
    return result


def test_base_equals_the_chart_defaults(base_objects: list[dict], default_objects: list[dict]) -> None:
    base, chart = normalized(base_objects), normalized(default_objects)
    assert sorted(base) == sorted(chart)
    for key in chart:
        assert base[key] == chart[key], f"{key} differs between k8s/base and the chart's defaults"


def test_base_namespace_enforces_restricted_pod_security(base_objects: list[dict]) -> None:
    namespace = find(base_objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"].get("namespace") for o in base_objects if o["kind"] != "Namespace"} == {NAMESPACE}


def test_eks_overlay_matches_the_production_values(eks_objects: list[dict], production_objects: list[dict]) -> None:
    overlay_pods, chart_pods = service_pods(eks_objects), service_pods(production_objects)
    overlay_container, chart_container = overlay_pods["spec"]["containers"][0], chart_pods["spec"]["containers"][0]
    assert overlay_container["image"] == chart_container["image"]
    assert not overlay_container["image"].endswith(":latest")
    assert overlay_container["resources"] == chart_container["resources"]
    assert overlay_pods["spec"]["topologySpreadConstraints"] == chart_pods["spec"]["topologySpreadConstraints"]
    assert "replicas" not in find(eks_objects, "Deployment")["spec"]

    def model_tag(objects: list[dict]) -> str:
        return find(objects, "ConfigMap")["data"]["CREDIT_PD_MODEL_TAG"]

    assert model_tag(eks_objects) == model_tag(production_objects)
    assert not model_tag(eks_objects).endswith(":latest")

    overlay_hpa, chart_hpa = find(eks_objects, "HorizontalPodAutoscaler"), find(production_objects, "HorizontalPodAutoscaler")
    assert overlay_hpa["spec"] == chart_hpa["spec"]

    overlay_ingress, chart_ingress = find(eks_objects, "Ingress"), find(production_objects, "Ingress")
    assert overlay_ingress["metadata"]["annotations"] == chart_ingress["metadata"]["annotations"]
    assert overlay_ingress["spec"] == chart_ingress["spec"]
    assert overlay_ingress["metadata"]["namespace"] == NAMESPACE


def test_eks_overlay_keeps_the_base_hardening(eks_objects: list[dict], base_objects: list[dict]) -> None:
    overlay, base = service_pods(eks_objects)["spec"], service_pods(base_objects)["spec"]
    assert overlay["securityContext"] == base["securityContext"]
    assert overlay["containers"][0]["securityContext"] == base["containers"][0]["securityContext"]
    assert overlay["containers"][0]["startupProbe"] == base["containers"][0]["startupProbe"]
