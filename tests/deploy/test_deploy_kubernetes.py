"""Kubernetes manifests: render every kustomization offline, validate each object against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict) and the custom resources against their
CRD schemas (kubernetes-models for node), then check what the schemas cannot: probes, grace
period, security, GPU request, autoscaler bounds and selectors."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml
from deploytest import DEPLOY, REPO, check, find_tool, missing, tools_dir

K8S = DEPLOY / "k8s"
BUILDS = ["overlays/cpu", "overlays/gpu", "hpa-alternative"]
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")
# The oldest Kubernetes these manifests promise to work on, and the newest schema available.
KUBERNETES_VERSIONS = ["1.29", "latest"]
INPUT_PARTITIONS = 6  # streamclf-input, see deploy/compose/compose.yaml and deploy/README.md


def render(build: str) -> list[dict]:
    kubectl, kustomize = find_tool("kubectl"), find_tool("kustomize")
    if kustomize:
        args = [kustomize, "build", str(K8S / build)]
    elif kubectl:
        args = [kubectl, "kustomize", str(K8S / build)]
    else:
        missing(
            "kubectl or kustomize", "apt-get install -y kubectl (or a kustomize binary on PATH)"
        )
    out = check(args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {build: render(build) for build in BUILDS}


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def worker_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap")["data"]["worker.yaml"])


def container(objects: list[dict]) -> dict:
    (worker,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return worker


def env(objects: list[dict]) -> dict[str, dict]:
    return {e["name"]: e for e in container(objects)["env"]}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_schema(
    rendered: dict[str, list[dict]], build: str, version: str
) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing(
            "kubernetes-validate",
            "pip install kubernetes-validate (or: bash deploy/tests-setup.sh)",
        )
    if version == "latest":
        version = kubernetes_validate.latest_version()
    core = [o for o in rendered[build] if not o["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {o["kind"] for o in core} >= {
        "Deployment",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
    }
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for obj in core:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(map(str, exc.path))
                errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("build", BUILDS)
def test_custom_resources_match_their_crd_schema(
    rendered: dict[str, list[dict]], build: str, tmp_path: Path
) -> None:
    node = find_tool("node")
    models = tools_dir() / "node_modules" / "@kubernetes-models"
    if (
        node is None
        or not (models / "keda").is_dir()
        or not (models / "prometheus-operator").is_dir()
    ):
        missing(f"node and the kubernetes-models packages under {tools_dir()}")
    custom = [o for o in rendered[build] if o["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert custom
    result = check(
        [node, str(Path(__file__).with_name("validate_crds.mjs")), str(tools_dir())],
        input=json.dumps(custom),
    )
    reports = json.loads(result.stdout)
    assert len(reports) == len(custom)
    bad = [f"{r['kind']}/{r['name']}: {r['error']}" for r in reports if not r["ok"]]
    assert not bad, "\n".join(bad)


def test_schema_validation_rejects_an_unknown_field(rendered: dict[str, list[dict]]) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing(
            "kubernetes-validate",
            "pip install kubernetes-validate (or: bash deploy/tests-setup.sh)",
        )
    bad = json.loads(json.dumps(one(rendered["overlays/cpu"], "Deployment")))
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, "1.29", strict=True)


def test_crd_validator_rejects_a_bad_scaled_object(rendered: dict[str, list[dict]]) -> None:
    node = find_tool("node")
    if node is None or not (tools_dir() / "node_modules" / "@kubernetes-models" / "keda").is_dir():
        missing(f"node and the kubernetes-models packages under {tools_dir()}")
    scaled = one(rendered["overlays/cpu"], "ScaledObject")
    bad_size, bad_fallback = (json.loads(json.dumps(scaled)) for _ in range(2))
    bad_size["spec"]["maxReplicaCount"] = "six"
    bad_fallback["spec"]["fallback"]["replicas"] = "six"
    result = check(
        [node, str(Path(__file__).with_name("validate_crds.mjs")), str(tools_dir())],
        input=json.dumps([bad_size, bad_fallback]),
    )
    size_report, fallback_report = json.loads(result.stdout)
    assert not size_report["ok"] and "maxReplicaCount" in size_report["error"]
    assert not fallback_report["ok"] and "fallback" in fallback_report["error"]


@pytest.mark.parametrize("build", BUILDS)
def test_deployment_lifecycle_and_security(rendered: dict[str, list[dict]], build: str) -> None:
    objects = rendered[build]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    worker = container(objects)
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    config = worker_config(objects)
    assert ports["metrics"] == config["metrics"]["port"] == 9100
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["args"] == ["run", "--config", "/etc/streamclf/worker.yaml"]
    # Drain deadline (config, overridden by env) well inside the grace period.
    variables = env(objects)
    drain = float(variables["STREAMCLF__SHUTDOWN__DRAIN_TIMEOUT_S"]["value"])
    assert drain == config["shutdown"]["drain_timeout_s"] == 20
    # After the drain: the final commit (5 s) and two client closes (2 s each).
    assert pod["terminationGracePeriodSeconds"] == 40 and drain + 9 < 40
    # No static membership: pod names change, and a static member never leaves the group.
    assert "STREAMCLF__KAFKA__GROUP_INSTANCE_ID" not in variables
    assert variables["STREAMCLF__KAFKA__CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.name")
    # No surge: a pod beyond the partition count never turns ready, which would stall a rollout.
    rolling = one(objects, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (0, 1)
    assert (
        pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    )
    security = worker["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert {"/etc/streamclf", "/tmp"} <= mounts  # read-only root: torch and Python need /tmp
    assert worker["resources"]["requests"]["cpu"] and worker["resources"]["limits"]["memory"]
    # The ConfigMap the pod mounts is the generated one (hash suffix included).
    (config_volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert config_volume["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]


def test_gpu_overlay_requests_a_gpu_and_the_cpu_overlay_does_not(
    rendered: dict[str, list[dict]],
) -> None:
    gpu, cpu = container(rendered["overlays/gpu"]), container(rendered["overlays/cpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(cpu["resources"])
    assert env(rendered["overlays/gpu"])["STREAMCLF__MODEL__DEVICE"]["value"] == "cuda"
    assert env(rendered["overlays/cpu"])["STREAMCLF__MODEL__DEVICE"]["value"] == "cpu"
    assert gpu["image"].endswith("-cuda") and cpu["image"].endswith("-cpu")


@pytest.mark.parametrize("build", ["overlays/cpu", "overlays/gpu"])
def test_scaled_object_follows_the_worker_config(
    rendered: dict[str, list[dict]], build: str
) -> None:
    objects = rendered[build]
    scaled = one(objects, "ScaledObject")["spec"]
    config = worker_config(objects)["kafka"]
    assert scaled["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= INPUT_PARTITIONS
    # Lag unreadable by KEDA: full size, never more than the overlay allows.
    assert scaled["fallback"]["replicas"] == scaled["maxReplicaCount"]
    assert scaled["fallback"]["failureThreshold"] >= 1
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == config["bootstrap_servers"]
    assert meta["consumerGroup"] == config["group_id"]
    assert meta["topic"] in config["input_topics"]
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"


def test_hpa_alternative_replaces_keda(rendered: dict[str, list[dict]]) -> None:
    objects = rendered["hpa-alternative"]
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["namespace"] == one(objects, "Deployment")["metadata"]["namespace"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert hpa["spec"]["maxReplicas"] <= INPUT_PARTITIONS
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "streamclf_consumer_lag"
    rules = yaml.safe_load((K8S / "hpa-alternative" / "prometheus-adapter-rules.yaml").read_text())
    assert any("streamclf_consumer_lag" in r["seriesQuery"] for r in rules["rules"]["custom"])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("build", BUILDS)
def test_selectors_find_the_worker_pods(rendered: dict[str, list[dict]], build: str) -> None:
    objects = rendered[build]
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
    assert matches(one(objects, "Service")["spec"]["selector"], labels)
    assert matches(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    monitor = one(objects, "PodMonitor")["spec"]
    assert matches(monitor["selector"]["matchLabels"], labels)
    ports = {p["name"] for p in container(objects)["ports"]}
    assert all(e["port"] in ports for e in monitor["podMetricsEndpoints"])
    # The rules and the dashboard select job="streamclf": jobLabel must yield that value.
    assert labels[monitor["jobLabel"]] == "streamclf"
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert namespaces == {"streamclf"}


def test_base_has_no_namespace_and_hpa_is_outside_it() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "namespace" not in base
    assert not any("hpa" in r for r in base["resources"])
    assert (REPO / "deploy" / "k8s" / "hpa-alternative" / "hpa.yaml").is_file()
