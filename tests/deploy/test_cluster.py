"""The chart's pods under a real container runtime: `podman kube play` of the rendered manifests.

Opt-in (`make cluster-test`): it needs root (rootful podman with its bridge network), podman,
and a few minutes (two training runs and an image build). It skips with a message otherwise.

What runs, each in its own podman pod, torn down (pods and volumes) after its checks:
  chart-default    the chart's default values (only the image points at the locally built one)
  kustomize-local  `kubectl kustomize k8s/overlays/local`, the generated overlay, unchanged
  chart-s3         the S3 model option: the initContainer imports a model exported to a local
                   S3-compatible server (moto_server, from the deploy venv, in its own pod on the
                   same podman network; modelFromS3.env points s3fs at it with AWS_ENDPOINT_URL_S3)
  chart-jwt        Bearer-token auth on (config.auth_*), its JWKS a file mounted into the pod
                   (extraVolumes): /predict answers 401 without a token, 200 with a valid one
                   (RSA key generated here), 401 with one signed by another key; /readyz, /livez
                   and /metrics stay open
  kill-worker      the chart's defaults (2 workers): one worker is killed with SIGKILL under a
                   steady stream of /predict requests; /readyz and /livez must both turn non-200
                   within KILL_DETECT_S (so the kubelet takes the pod out of the Service and then
                   restarts it); the report gives how long that took and how many requests failed
Inside each running pod (`podman exec`): /readyz, a real /predict whose PD equals train.py's for
the same row, uid 1034, a read-only root filesystem, no capabilities, no new privileges and the
rendered memory limit in the container's cgroup; the S3 pod must serve the S3 model's tag (a
second training run), not the baked one.

Only what is podman's own is changed before `podman kube play` (PODMAN_WORKAROUNDS below); the
manifests are otherwise exactly what Helm and kustomize render.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_tools import (
    K8S_LOCAL,
    LOCAL_VALUES,
    DeployTools,
    Helm,
    find,
    is_hook,
    kustomize,
    parse_manifests,
    run_tool,
)
from tests.deploy.podman_tools import (
    bentoml_env,
    build_bento,
    build_image,
    first_unlabelled_application,
    podman,
    predicted_pd,
    run,
    train,
    write_dataset,
)

RUN_HINT = (
    "cluster test is opt-in (root, podman, several minutes): run `make cluster-test`, or "
    "CREDIT_PD_CLUSTER_TEST=1 .venv/bin/python -m pytest tests/deploy/test_cluster.py -m integration"
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CREDIT_PD_CLUSTER_TEST") != "1", reason=RUN_HINT),
]

# The image k8s/overlays/local names (helm/credit-pd/values-local.yaml).
LOCAL_IMAGE = yaml.safe_load(LOCAL_VALUES.read_text())["image"]
IMAGE_TAG = f"{LOCAL_IMAGE['repository']}:{LOCAL_IMAGE['tag']}"
IMAGE_VALUES = {"image": {"repository": LOCAL_IMAGE["repository"], "tag": LOCAL_IMAGE["tag"]}}
SERVICE_UID = 1034
READY_TIMEOUT_S = 240
S3_POD = "credit-pd-cluster-test-s3"
S3_BUCKET = "credit-pd-models"
S3_PORT = 5000
# This sandbox refuses podman's default rlimits ("error setting rlimit type 7"): containers.conf
# gives every container explicit ones (kube play has no per-container --ulimit), and runc is the
# runtime installed here. Machine facts, not podman bugs.
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
"""
PODMAN_WORKAROUNDS = {
    # podman 4.3 gives init containers the pod's restartPolicy (Always), so a finished
    # initContainer is restarted until kube play times out: containers/podman#15631, fixed by
    # containers/podman#18481 (podman 4.6). Kubernetes runs init containers once whatever the
    # policy; OnFailure gives that under podman 4.3.
    "restartPolicy": "containers/podman#15631",
    # podman 4.3 refuses annotation values over 63 characters (the limit is for names):
    # containers/podman#21667, fixed by containers/podman#21699 (podman 5.0). The chart's
    # checksum/config annotation is a 64-character sha256.
    "annotation length": "containers/podman#21667",
}
# Not needed: the network. kube play puts the pods on its bridge network
# (podman-default-kube-network) as root; `--network host` would refuse the containerPorts
# ("PortMappings can only be used with Bridge"), and nothing here needs the host network: the
# checks run inside the pods, and the pods reach the S3 pod over that bridge.


def for_podman(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects with PODMAN_WORKAROUNDS applied, and a line per change made."""
    changed: list[str] = []
    result = []
    for original in objects:
        obj = copy.deepcopy(original)
        pod = obj["spec"]["template"] if obj["kind"] == "Deployment" else obj if obj["kind"] == "Pod" else None
        if pod is not None:
            name = obj["metadata"]["name"]
            if pod["spec"].get("initContainers") and pod["spec"].get("restartPolicy", "Always") == "Always":
                pod["spec"]["restartPolicy"] = "OnFailure"
                changed.append(f"{obj['kind']} {name}: restartPolicy OnFailure ({PODMAN_WORKAROUNDS['restartPolicy']})")
            annotations = pod["metadata"].get("annotations") or {}
            for key in [k for k, v in annotations.items() if len(str(v)) > 63]:
                del annotations[key]
                changed.append(
                    f"{obj['kind']} {name}: pod annotation {key} dropped ({PODMAN_WORKAROUNDS['annotation length']})"
                )
        result.append(obj)
    return result, changed


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


# Runs inside the service container: the checks that must see the pod from the inside.
IN_POD_CHECKS = r"""
import json, os, sys, urllib.request
base = "http://127.0.0.1:3000"
application = json.load(sys.stdin)
out = {"readyz": urllib.request.urlopen(base + "/readyz", timeout=10).status}
request = urllib.request.Request(base + "/predict", data=json.dumps({"applications": application}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(request, timeout=60) as response:
    out["predict_status"] = response.status
    out["predict"] = json.load(response)
out["uid"], out["gid"] = os.getuid(), os.getgid()
try:
    open("/cluster-test-probe", "w")
    out["root_writable"] = True
except OSError as error:
    out["root_writable"] = False
    out["root_write_error"] = error.strerror
out["root_mount"] = [line.split()[3] for line in open("/proc/mounts") if line.split()[1] == "/"][-1]
status = dict(line.split(":", 1) for line in open("/proc/1/status") if ":" in line)
out["capabilities"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
out["no_new_privs"] = status["NoNewPrivs"].strip()
for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    if os.path.exists(path):
        out["memory_limit"] = int(open(path).read().strip())
        break
print(json.dumps(out))
"""


class PodmanPods:
    """kube play / kube down of one manifest, with the checks run inside its service container."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env

    def play(self, name: str, objects: list[dict[str, Any]]) -> Path:
        manifest = self.workdir / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        self.down(manifest)  # a previous run's leftovers
        played = podman("kube", "play", str(manifest), env=self.env, timeout=300)
        assert played.returncode == 0, f"podman kube play {name}:\n{played.stdout}\n{played.stderr}"
        return manifest

    def down(self, manifest: Path) -> None:
        """Pods and their volumes (podman 4.3 turns each emptyDir into a named volume); fails
        when any of them is left."""
        objects = parse_manifests(manifest.read_text())
        podman("kube", "down", str(manifest), env=self.env, timeout=120)
        for obj in objects:
            pod = obj["spec"]["template"] if obj["kind"] == "Deployment" else obj if obj["kind"] == "Pod" else None
            if pod is None:
                continue
            pod_name = obj["metadata"]["name"] + ("-pod-0" if obj["kind"] == "Deployment" else "")
            podman("pod", "rm", "--force", pod_name, env=self.env, timeout=120)
            assert podman("pod", "exists", pod_name, env=self.env).returncode != 0, f"pod {pod_name} left"
            for volume in pod["spec"].get("volumes", []):
                if "emptyDir" in volume:
                    podman("volume", "rm", "--force", volume["name"], env=self.env)
                    left = podman("volume", "exists", volume["name"], env=self.env)
                    assert left.returncode != 0, f"volume {volume['name']} left"

    def wait_ready(self, container: str, started: float) -> float:
        while True:
            state = podman("inspect", "--format", "{{.State.Status}}", container, env=self.env)
            if state.returncode == 0 and state.stdout.strip() == "running":
                probe = podman(
                    "exec",
                    container,
                    "python",
                    "-c",
                    "import urllib.request as u; print(u.urlopen('http://127.0.0.1:3000/readyz', timeout=2).status)",
                    env=self.env,
                    timeout=30,
                )
                if probe.stdout.strip() == "200":
                    return time.monotonic() - started
            if time.monotonic() - started > READY_TIMEOUT_S:
                logs = podman("logs", container, env=self.env)
                pytest.fail(
                    f"{container}: /readyz not 200 after {READY_TIMEOUT_S} s (state {state.stdout.strip()}):\n"
                    f"{(logs.stdout + logs.stderr)[-4000:]}"
                )
            time.sleep(1)

    def checks(self, container: str, application: dict[str, Any]) -> dict[str, Any]:
        result = podman(
            "exec",
            "-i",
            container,
            "python",
            "-c",
            IN_POD_CHECKS,
            env=self.env,
            timeout=120,
            stdin=json.dumps(application),
        )
        assert result.returncode == 0, f"checks in {container} failed:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    values: dict[str, Any] = {}
    start = time.monotonic()
    yield values
    values["total_s"] = round(time.monotonic() - start, 1)
    print("\ncluster test report: " + json.dumps(values, indent=2, default=str))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    if os.geteuid() != 0:
        pytest.skip(f"cluster test needs root (rootful podman kube play with its bridge network). {RUN_HINT}")
    if shutil.which("podman") is None:
        pytest.skip(f"podman not found: `make cluster-test` installs it with apt-get as root. {RUN_HINT}")
    request.getfixturevalue("helm")  # skips without the deploy venv
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="module")
def pods(workdir: Path) -> PodmanPods:
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return PodmanPods(workdir, {**os.environ, "CONTAINERS_CONF": str(conf)})


@pytest.fixture(scope="module")
def build(workdir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Model A baked into the image; model B (a second, quick run) exported for the S3 option."""
    env = bentoml_env(workdir)
    dataset = write_dataset(workdir / "dataset.csv")
    started = time.monotonic()
    baked_tag, baked_predictions = train(dataset, workdir / "baked", env, "--folds", "2")
    bento = build_bento(workdir, env)
    report["train_and_bento_s"] = round(time.monotonic() - started, 1)
    seconds, size = build_image(bento, IMAGE_TAG, workdir, env)
    report["image"] = {
        "tag": IMAGE_TAG,
        "build_s": round(seconds, 1),
        "size_mb": round(size / 1e6),
        "base": os.environ.get("BASE_IMAGE") or "the bentofile's (python:3.11-slim)",
    }
    s3_tag, s3_predictions = train(dataset, workdir / "s3", env, "--quick")
    assert s3_tag != baked_tag
    archive = workdir / "bucket" / f"credit_pd_model-{s3_tag.split(':')[1]}.bentomodel"
    archive.parent.mkdir()
    run(
        [sys.executable, "-m", "bentoml", "models", "export", s3_tag, str(archive)],
        env=env,
        log=workdir / "export.log",
        timeout=300,
    )
    application = first_unlabelled_application(dataset) | {"top_k": 3}
    return {
        "baked_tag": baked_tag,
        "s3_tag": s3_tag,
        "archive": archive,
        "application": application,
        "baked_pd": predicted_pd(baked_predictions, application["uuid"]),
        "s3_pd": predicted_pd(s3_predictions, application["uuid"]),
    }


@pytest.fixture(scope="module")
def s3_server(
    pods: PodmanPods, build: dict[str, Any], report: dict[str, Any], deploy_tools: DeployTools
) -> Iterator[str]:
    """moto_server in a pod of its own (the service image's Python with the deploy venv's moto
    mounted read-only), holding the exported archive; yields its endpoint on the pods' network."""
    purelib = run_tool([deploy_tools.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site = Path(purelib.stdout.strip())
    assert (site / "moto").is_dir(), f"moto not in the deploy venv ({site}): make deploy-tools"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": S3_POD},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "moto",
                    "image": IMAGE_TAG,
                    "command": ["python", "-m", "moto.server", "-H", "0.0.0.0", "-p", str(S3_PORT)],
                    "env": [{"name": "PYTHONPATH", "value": "/moto"}],
                    "volumeMounts": [
                        {"name": "moto", "mountPath": "/moto", "readOnly": True},
                        {"name": "bucket", "mountPath": "/bucket", "readOnly": True},
                    ],
                }
            ],
            "volumes": [
                {"name": "moto", "hostPath": {"path": str(site), "type": "Directory"}},
                {"name": "bucket", "hostPath": {"path": str(build["archive"].parent), "type": "Directory"}},
            ],
        },
    }
    manifest = pods.play("s3-server", [pod])
    try:
        container = f"{S3_POD}-moto"
        upload = (
            "import boto3, sys, time\n"
            f"client = boto3.client('s3', endpoint_url='http://127.0.0.1:{S3_PORT}', region_name='us-east-1',"
            " aws_access_key_id='testing', aws_secret_access_key='testing')\n"
            "for attempt in range(60):\n"
            "    try:\n"
            f"        client.create_bucket(Bucket='{S3_BUCKET}'); break\n"
            "    except Exception:\n"
            "        time.sleep(0.5)\n"
            f"client.upload_file('/bucket/{build['archive'].name}', '{S3_BUCKET}', 'credit-pd/{build['archive'].name}')\n"
            f"print(client.list_objects_v2(Bucket='{S3_BUCKET}')['KeyCount'])\n"
        )
        uploaded = podman("exec", container, "python", "-c", upload, env=pods.env, timeout=120)
        assert uploaded.returncode == 0 and uploaded.stdout.strip() == "1", uploaded.stderr[-3000:]
        address = podman(
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            podman("pod", "inspect", "--format", "{{.InfraContainerID}}", S3_POD, env=pods.env).stdout.strip(),
            env=pods.env,
        ).stdout.strip()
        assert address, "the S3 pod has no address on the kube network"
        report["s3_server"] = f"moto_server at {address}:{S3_PORT}, s3://{S3_BUCKET}/credit-pd/{build['archive'].name}"
        yield f"http://{address}:{S3_PORT}"
    finally:
        pods.down(manifest)


def run_scenario(
    name: str, objects: list[dict[str, Any]], pods: PodmanPods, build: dict[str, Any], report: dict[str, Any]
) -> dict[str, Any]:
    """kube play the objects, wait for /readyz, run the in-pod checks, tear down. The `helm test`
    hooks are left out: they are not part of the running release (and need cluster DNS)."""
    playable, changes = for_podman([o for o in objects if not is_hook(o)])
    deployment = find(playable, "Deployment")
    container_spec = deployment["spec"]["template"]["spec"]["containers"][0]
    container = f"{deployment['metadata']['name']}-pod-0-{container_spec['name']}"
    started = time.monotonic()
    manifest = pods.play(name, playable)
    try:
        ready_s = pods.wait_ready(container, started)
        checks = pods.checks(container, build["application"])
        [answer] = checks["predict"]
        report[name] = {
            "podman_workarounds": changes,
            "ready_s": round(ready_s, 1),
            "readyz": checks["readyz"],
            "predict_status": checks["predict_status"],
            "model_tag": answer["model_tag"],
            "pd": answer["pd"],
            "uid": checks["uid"],
            "root": checks["root_mount"].split(",")[0],
            "root_write": checks.get("root_write_error"),
            "capabilities": checks["capabilities"],
            "no_new_privs": checks["no_new_privs"],
            "memory_limit": checks.get("memory_limit"),
        }
        checks["limits"] = container_spec["resources"]["limits"]
        return checks
    finally:
        pods.down(manifest)


def assert_hardened_and_serving(
    checks: dict[str, Any], application: dict[str, Any], model_tag: str, expected_pd: float
) -> None:
    assert checks["readyz"] == 200
    assert checks["predict_status"] == 200
    [answer] = checks["predict"]
    assert answer["uuid"] == application["uuid"]
    assert answer["model_tag"] == model_tag
    assert answer["pd"] == pytest.approx(expected_pd, rel=1e-9, abs=1e-15), "PD differs from train.py's"
    assert len(answer["explanation"]["contributions"]) == 3
    assert (checks["uid"], checks["gid"]) == (SERVICE_UID, SERVICE_UID)
    assert checks["root_writable"] is False and checks["root_mount"].split(",")[0] == "ro"
    assert set(checks["capabilities"].values()) == {"0000000000000000"}, checks["capabilities"]
    assert checks["no_new_privs"] == "1"
    assert checks["memory_limit"] == memory_bytes(checks["limits"]["memory"])


def test_chart_defaults_run_under_podman(
    helm: Helm, pods: PodmanPods, build: dict[str, Any], report: dict[str, Any]
) -> None:
    objects = helm.render(values=IMAGE_VALUES)
    checks = run_scenario("chart-default", objects, pods, build, report)
    assert_hardened_and_serving(checks, build["application"], build["baked_tag"], build["baked_pd"])


def test_kustomize_local_overlay_runs_under_podman(
    kubectl: str, pods: PodmanPods, build: dict[str, Any], report: dict[str, Any]
) -> None:
    objects = kustomize(kubectl, K8S_LOCAL)
    assert service_image(objects) == IMAGE_TAG
    checks = run_scenario("kustomize-local", objects, pods, build, report)
    assert_hardened_and_serving(checks, build["application"], build["baked_tag"], build["baked_pd"])


def test_s3_model_option_serves_the_s3_model(
    helm: Helm, pods: PodmanPods, build: dict[str, Any], s3_server: str, report: dict[str, Any]
) -> None:
    values = {
        **IMAGE_VALUES,
        "config": {"model_tag": build["s3_tag"]},
        "modelFromS3": {
            "enabled": True,
            "uri": f"s3://{S3_BUCKET}/credit-pd/{build['archive'].name}",
            "region": "us-east-1",
            "env": [
                {"name": "AWS_ENDPOINT_URL_S3", "value": s3_server},
                {"name": "AWS_ACCESS_KEY_ID", "value": "testing"},
                {"name": "AWS_SECRET_ACCESS_KEY", "value": "testing"},
            ],
        },
    }
    checks = run_scenario("chart-s3", helm.render(values=values), pods, build, report)
    assert build["s3_tag"] != build["baked_tag"]
    assert_hardened_and_serving(checks, build["application"], build["s3_tag"], build["s3_pd"])


# ---------------------------------------------------------------- auth on, JWKS from a file ----

JWT_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_CLUSTERTEST"
JWT_AUDIENCE = "cluster-test-client"
JWT_SCOPE = "credit-pd/predict"
JWKS_MOUNT = "/etc/credit-pd/jwks"

# Runs inside the service container: /predict without a token, with each given token, and /readyz.
JWT_CHECKS = r"""
import json, sys, urllib.error, urllib.request
base = "http://127.0.0.1:3000"
given = json.load(sys.stdin)
def parsed(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
def status(path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(base + path, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), parsed(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), parsed(error.read())
body = json.dumps({"applications": given["application"]}).encode()
out = {"readyz": status("/readyz")[0], "livez": status("/livez")[0], "metrics": status("/metrics")[0]}
for name, token in [("no_token", None), *given["tokens"].items()]:
    code, headers, answer = status("/predict", token, body)
    out[name] = {"status": code, "www_authenticate": headers.get("WWW-Authenticate") or headers.get("www-authenticate"),
                 "pd": answer[0]["pd"] if code == 200 else None}
print(json.dumps(out))
"""


def signing_key_and_jwks() -> tuple[Any, dict[str, Any]]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {
        **jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True),
        "kid": "cluster-test",
        "use": "sig",
        "alg": "RS256",
    }
    return key, {"keys": [jwk]}


def access_token(key: Any, kid: str = "cluster-test") -> str:
    import jwt

    now = int(time.time())
    claims = {
        "iss": JWT_ISSUER,
        "client_id": JWT_AUDIENCE,
        "token_use": "access",
        "scope": JWT_SCOPE,
        "iat": now,
        "exp": now + 900,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_jwt_auth_with_a_jwks_file(
    helm: Helm, pods: PodmanPods, build: dict[str, Any], workdir: Path, report: dict[str, Any]
) -> None:
    key, jwks = signing_key_and_jwks()
    other_key, _ = signing_key_and_jwks()
    jwks_dir = workdir / "jwks"
    jwks_dir.mkdir(exist_ok=True)
    (jwks_dir / "jwks.json").write_text(json.dumps(jwks))
    jwks_dir.chmod(0o755)
    (jwks_dir / "jwks.json").chmod(0o644)  # the service runs as uid 1034
    values = {
        **IMAGE_VALUES,
        "config": {
            "auth_jwks_url": f"file://{JWKS_MOUNT}/jwks.json",
            "auth_issuer": JWT_ISSUER,
            "auth_audience": JWT_AUDIENCE,
            "auth_scope": JWT_SCOPE,
        },
        "extraVolumes": [{"name": "jwks", "hostPath": {"path": str(jwks_dir), "type": "Directory"}}],
        "extraVolumeMounts": [{"name": "jwks", "mountPath": JWKS_MOUNT, "readOnly": True}],
    }
    playable, changes = for_podman([o for o in helm.render(values=values) if not is_hook(o)])
    container = service_container(playable)
    started = time.monotonic()
    manifest = pods.play("chart-jwt", playable)
    try:
        ready_s = pods.wait_ready(container, started)
        tokens = {"valid_token": access_token(key), "other_key_token": access_token(other_key)}
        result = podman(
            "exec",
            "-i",
            container,
            "python",
            "-c",
            JWT_CHECKS,
            env=pods.env,
            timeout=120,
            stdin=json.dumps({"application": build["application"], "tokens": tokens}),
        )
        assert result.returncode == 0, f"JWT checks failed:\n{result.stdout}\n{result.stderr}"
        checks = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        pods.down(manifest)
    report["chart-jwt"] = {"ready_s": round(ready_s, 1), "podman_workarounds": changes, **checks}
    assert (checks["readyz"], checks["livez"], checks["metrics"]) == (200, 200, 200)  # open without a token
    assert checks["no_token"]["status"] == 401
    assert checks["no_token"]["www_authenticate"].startswith("Bearer")
    assert checks["valid_token"]["status"] == 200
    assert checks["valid_token"]["pd"] == pytest.approx(build["baked_pd"], rel=1e-9, abs=1e-15)
    assert checks["other_key_token"]["status"] == 401
    assert 'error="invalid_token"' in checks["other_key_token"]["www_authenticate"]


# ---------------------------------------------------------------- a worker killed -------------

KILL_DETECT_S = 5.0
KILL_OBSERVE_S = 20.0

# Runs inside the service container: a steady stream of /predict requests and probes every 0.25 s;
# after 3 s one BentoML worker is killed with SIGKILL (as the OOM killer would). Prints what the
# requests and the probes saw, in seconds since the kill.
KILL_CHECKS = r"""
import json, os, signal, sys, threading, time, urllib.error, urllib.request
base = "http://127.0.0.1:3000"
given = json.load(sys.stdin)
body = json.dumps({"applications": given["application"]}).encode()
def get(path):
    try:
        with urllib.request.urlopen(base + path, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except Exception as error:
        return type(error).__name__
def workers():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"_bentoml_impl.worker.service" in cmdline:
            found.append(int(pid))
    return sorted(found)
requests, probes, stop = [], [], threading.Event()
start = time.monotonic()
kill_at = [None]
def load():
    while not stop.is_set():
        sent = time.monotonic()
        request = urllib.request.Request(base + "/predict", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
        except Exception as error:
            status = type(error).__name__
        requests.append((sent - start, status))
thread = threading.Thread(target=load)
thread.start()
before = workers()
time.sleep(3)
victim = before[-1]
os.kill(victim, signal.SIGKILL)
kill_at[0] = time.monotonic() - start
deadline = time.monotonic() + given["observe_s"]
while time.monotonic() < deadline:
    probes.append((time.monotonic() - start, get("/readyz"), get("/livez")))
    time.sleep(0.25)
stop.set()
thread.join()
k = kill_at[0]
def first(index):
    return next((round(t - k, 2) for t, *codes in probes if codes[index] != 200), None)
failed = [(round(t - k, 2), s) for t, s in requests if s != 200]
print(json.dumps({"workers_before": before, "killed": victim, "workers_after": workers(),
                  "readyz_not_200_after_s": first(0), "livez_not_200_after_s": first(1),
                  "readyz_codes": sorted({str(c[1]) for c in probes}),
                  "livez_codes": sorted({str(c[2]) for c in probes}),
                  "requests": len(requests), "requests_after_kill": sum(t >= k for t, _ in requests),
                  "failed": len(failed), "failed_detail": failed[:20]}))
"""


def test_a_killed_worker_makes_the_pod_unready_and_not_live(
    helm: Helm, pods: PodmanPods, build: dict[str, Any], report: dict[str, Any]
) -> None:
    """The documented behaviour (credit_pd/serving/worker.py, WorkerRoster): BentoML does not
    restart a dead worker inside a container, so the pod must stop claiming to serve: /readyz (the
    Service and the ALB stop sending) and /livez (the kubelet restarts the container) both fail."""
    playable, changes = for_podman([o for o in helm.render(values=IMAGE_VALUES) if not is_hook(o)])
    container = service_container(playable)
    started = time.monotonic()
    manifest = pods.play("kill-worker", playable)
    try:
        ready_s = pods.wait_ready(container, started)
        result = podman(
            "exec",
            "-i",
            container,
            "python",
            "-c",
            KILL_CHECKS,
            env=pods.env,
            timeout=120,
            stdin=json.dumps({"application": build["application"], "observe_s": KILL_OBSERVE_S}),
        )
        assert result.returncode == 0, f"kill checks failed:\n{result.stdout}\n{result.stderr}"
        checks = json.loads(result.stdout.strip().splitlines()[-1])
        health = podman("inspect", "--format", "{{.State.Status}} restarts={{.RestartCount}}", container, env=pods.env)
        checks["container_after"] = health.stdout.strip()
    finally:
        pods.down(manifest)
    report["kill-worker"] = {"ready_s": round(ready_s, 1), "podman_workarounds": changes, **checks}
    assert len(checks["workers_before"]) == 2, checks["workers_before"]
    assert checks["readyz_not_200_after_s"] is not None and checks["readyz_not_200_after_s"] <= KILL_DETECT_S, checks
    assert checks["livez_not_200_after_s"] is not None and checks["livez_not_200_after_s"] <= KILL_DETECT_S, checks


def service_container(objects: list[dict[str, Any]]) -> str:
    """podman's name of the Deployment's service container (`<deployment>-pod-0-<container>`)."""
    deployment = find(objects, "Deployment")
    return f"{deployment['metadata']['name']}-pod-0-{deployment['spec']['template']['spec']['containers'][0]['name']}"


def service_image(objects: list[dict[str, Any]]) -> str:
    return find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_podman_workarounds_touch_only_what_podman_needs(helm: Helm) -> None:
    """Guard: the podman copy differs from the rendering only in the named workarounds."""
    values = {
        "modelFromS3": {"enabled": True, "uri": "s3://bucket/prefix/m.bentomodel"},
        "config": {"model_tag": "credit_pd_model:abc"},
    }
    objects = [o for o in helm.render(values=values) if not is_hook(o)]
    playable, changes = for_podman(objects)
    assert len(changes) == 2, changes
    original, changed = find(objects, "Deployment"), find(playable, "Deployment")
    changed["spec"]["template"]["spec"]["restartPolicy"] = original["spec"]["template"]["spec"].get("restartPolicy")
    if changed["spec"]["template"]["spec"]["restartPolicy"] is None:
        del changed["spec"]["template"]["spec"]["restartPolicy"]
    changed["spec"]["template"]["metadata"]["annotations"]["checksum/config"] = original["spec"]["template"][
        "metadata"
    ]["annotations"]["checksum/config"]
    assert changed == original
    assert [o for o in playable if o["kind"] != "Deployment"] == [o for o in objects if o["kind"] != "Deployment"]
