"""The worker configuration the deployment ships (image default, compose, Kubernetes) and the
STREAMCLF__SECTION__KEY overrides it sets use only keys the worker documents."""

from __future__ import annotations

import re

import pytest
import yaml
from deploytest import DEPLOY

# The worker's documented configuration keys (README / CONTRACT). Mappings passed through
# unchanged to kafka-python are listed as open.
KEYS = {
    "kafka": {
        "bootstrap_servers",
        "input_topics",
        "output_topic",
        "dlq_topic",
        "group_id",
        "client_id",
        "group_instance_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "ssl_cafile",
        "consumer",
        "producer",
    },
    "model": {"path", "device", "max_tokens", "threshold", "threads", "lanes"},
    "batching": {"max_batch_size", "max_wait_ms", "max_in_flight"},
    "input": {"format", "decode_processes"},
    "output": {"routes"},
    "metrics": {"host", "port"},
    "logging": {"level", "format"},
    "shutdown": {"drain_timeout_s"},
}
OPEN = {("kafka", "consumer"), ("kafka", "producer"), ("output", "routes")}
CONFIGS = [
    DEPLOY / "docker" / "worker.yaml",
    DEPLOY / "compose" / "worker.yaml",
    DEPLOY / "k8s" / "base" / "worker.yaml",
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_config_uses_documented_keys(path) -> None:
    config = yaml.safe_load(path.read_text())
    for section, values in config.items():
        assert section in KEYS, f"unknown section {section}"
        for key in values:
            assert key in KEYS[section], f"unknown key {section}.{key}"
    assert config["metrics"]["port"] == 9100
    assert config["shutdown"]["drain_timeout_s"] <= 20
    assert config["logging"]["format"] == "json"


def overrides() -> list[tuple[str, str]]:
    found = []
    for path in [*DEPLOY.glob("compose/*.yaml"), *DEPLOY.glob("k8s/**/*.yaml")]:
        for name in re.findall(r"\bSTREAMCLF__[A-Z0-9]+__[A-Z0-9_]+", path.read_text()):
            found.append((str(path.relative_to(DEPLOY)), name))
    return found


@pytest.mark.parametrize("where, name", overrides())
def test_environment_overrides_name_documented_keys(where: str, name: str) -> None:
    _, section, key = name.lower().split("__", 2)
    assert section in KEYS and key in KEYS[section], f"{where}: {name}"
