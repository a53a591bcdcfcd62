"""deploy/eks and docs/deploy.md: the cluster config, the IAM policy and the walk-through agree.

No AWS account is reachable here, so these check structure and consistency: names that must match
across eksctl, IAM, the chart and the docs (a mismatch only shows up as AccessDenied on a live
cluster), and that every placeholder the files use is exported in the walk-through.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import EKS_CLUSTER_CONFIG, NAMESPACE, REPO_ROOT, find

POLICY = REPO_ROOT / "deploy" / "eks" / "s3-model-read-policy.json"
DOCS = REPO_ROOT / "docs" / "deploy.md"
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(EKS_CLUSTER_CONFIG.read_text())


@pytest.fixture(scope="module")
def docs() -> str:
    return DOCS.read_text()


def model_reader(cluster: dict[str, Any]) -> dict[str, Any]:
    (account,) = [a for a in cluster["iam"]["serviceAccounts"] if a["metadata"]["namespace"] == NAMESPACE]
    return account


def test_cluster_has_irsa_and_a_node_group_per_zone(cluster: dict[str, Any]) -> None:
    """One group per zone: the Cluster Autoscaler grows the zone a Pending (zone-spread) pod needs."""
    assert (cluster["apiVersion"], cluster["kind"]) == ("eksctl.io/v1alpha5", "ClusterConfig")
    assert cluster["iam"]["withOIDC"] is True
    groups = cluster["managedNodeGroups"]
    zones = [z for g in groups for z in g["availabilityZones"]]
    assert len(zones) == len(set(zones)) == len(groups) >= 3
    assert set(zones) == set(cluster["availabilityZones"])
    assert all(1 <= g["minSize"] <= g["desiredCapacity"] < g["maxSize"] for g in groups)
    assert len({(g["instanceType"], g["maxSize"], tuple(sorted(g["labels"].items()))) for g in groups}) == 1, (
        "similar groups (the autoscaler balances them)"
    )
    assert {a["name"] for a in cluster["addons"]} >= {"vpc-cni", "metrics-server"}
    vpc_cni = next(a for a in cluster["addons"] if a["name"] == "vpc-cni")
    assert json.loads(vpc_cni["configurationValues"])["enableNetworkPolicy"] == "true"


def test_irsa_role_trusts_the_charts_service_account(cluster: dict[str, Any], default_objects: list[dict]) -> None:
    """The role trusts <namespace>/<name>; the chart's account for release credit-pd must be that one."""
    account = model_reader(cluster)
    chart_account = find(default_objects, "ServiceAccount")["metadata"]
    assert (account["metadata"]["name"], account["metadata"]["namespace"]) == (
        chart_account["name"],
        chart_account["namespace"],
    )
    assert account["roleOnly"] is True  # the chart creates and annotates the ServiceAccount


def test_controllers_get_their_iam_roles(cluster: dict[str, Any], docs: str) -> None:
    """The Load Balancer Controller's policy is its own pinned release's, created before the cluster;
    the Cluster Autoscaler has a role; both are installed at pinned chart versions."""
    accounts = {a["metadata"]["name"]: a for a in cluster["iam"]["serviceAccounts"]}
    (lbc_policy,) = accounts["aws-load-balancer-controller"]["attachPolicyARNs"]
    assert "wellKnownPolicies" not in accounts["aws-load-balancer-controller"]
    assert f"--policy-name {lbc_policy.rsplit('/', 1)[1]}" in docs
    assert "aws-load-balancer-controller/v3.5.0/docs/install/iam_policy.json" in docs
    assert accounts["cluster-autoscaler"]["wellKnownPolicies"]["autoScaler"] is True
    for pinned in (
        "eks/aws-load-balancer-controller --version 3.5.0",
        "autoscaler/cluster-autoscaler --version 9.59.0",
        "prometheus-community/kube-prometheus-stack --version 88.5.3",
        "prometheus-community/prometheus-adapter --version 5.3.0",
        "| eksctl | 0.230.0",
        "eksctl-io/eksctl/releases/tag/v0.230.0",
    ):
        assert pinned in docs, pinned


def test_walkthrough_uses_the_role_and_policy_names_of_the_cluster_config(cluster: dict[str, Any], docs: str) -> None:
    account = model_reader(cluster)
    (policy_arn,) = account["attachPolicyARNs"]
    policy_name = policy_arn.rsplit("/", 1)[1]
    assert f"--policy-name {policy_name}" in docs
    assert f"role/{account['roleName']}" in docs
    assert "deploy/eks/s3-model-read-policy.json" in docs


def test_s3_policy_is_read_only_on_the_model_prefix() -> None:
    policy = json.loads(POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}
    get = next(s for s in policy["Statement"] if "s3:GetObject" in s["Action"])
    assert get["Effect"] == "Allow" and get["Resource"] == ["arn:aws:s3:::${MODEL_BUCKET}/${MODEL_PREFIX}/*"]
    listing = next(s for s in policy["Statement"] if "s3:ListBucket" in s["Action"])
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["${MODEL_PREFIX}/*"]


def test_every_placeholder_is_exported_in_the_walkthrough(docs: str) -> None:
    used = set(PLACEHOLDER.findall(EKS_CLUSTER_CONFIG.read_text())) | set(PLACEHOLDER.findall(POLICY.read_text()))
    exported = set(re.findall(r"^export ([A-Z_]+)=", docs, flags=re.MULTILINE))
    assert used and used <= exported, f"not exported in docs/deploy.md: {sorted(used - exported)}"


def test_walkthrough_covers_every_step(docs: str) -> None:
    for command in (
        "aws ecr create-repository",
        "bentoml containerize credit_pd_service:latest",
        "aws ecr get-login-password",
        "docker push",
        "eksctl create cluster -f",
        "eks/aws-load-balancer-controller",
        "helm upgrade --install credit-pd helm/credit-pd",
        "-f helm/credit-pd/values-production.yaml",
        "bentoml models export",
        "modelFromS3.enabled=true",
        "kubectl -n $NAMESPACE get ingress",
        "port-forward",
        "scripts/predict_client.py --url",
        "curl -sS -X POST",
        "helm test credit-pd",
        "eksctl delete cluster",
        "aws acm request-certificate",
        "aws cognito-idp create-user-pool",
        "aws cognito-idp create-resource-server",
        "--allowed-o-auth-flows client_credentials",
        "grant_type=client_credentials",
        "Authorization: Bearer $TOKEN",
        "aws ec2 create-subnet",
        "kubectl apply -f k8s/base/namespace.yaml",
        "make k8s",
        "make cluster-test",
        "bash scripts/build_batch_image.sh",
        "aws cognito-idp delete-user-pool",
        "aws acm delete-certificate",
        "-f helm/credit-pd/values-production.yaml -f site-values.yaml",
    ):
        assert command in docs, command


def test_alb_subnets_are_inside_the_vpc_and_outside_the_node_subnets(cluster: dict[str, Any], docs: str) -> None:
    """The NetworkPolicy admits the ALB's own subnets, so they must not overlap the subnets eksctl
    makes for nodes and pods (its /19s of the VPC: 192.168.0.0-192.168.191.255 of a /16)."""
    site = yaml.safe_load((REPO_ROOT / "deploy" / "eks" / "site-values.example.yaml").read_text())
    vpc = ipaddress.ip_network(cluster["vpc"]["cidr"])
    eksctl_subnets = list(vpc.subnets(new_prefix=19))[:6]  # 3 public + 3 private, one pair per zone
    for cidr in map(ipaddress.ip_network, site["networkPolicy"]["albSubnetCidrs"]):
        assert cidr.subnet_of(vpc)
        assert not any(cidr.overlaps(s) for s in eksctl_subnets), cidr
        assert f"--cidr-block {cidr}" in docs or "${ALB_SUBNET_CIDRS" in docs
