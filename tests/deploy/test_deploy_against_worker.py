"""Cross-checks against the worker package itself (skipped where it cannot be imported): the
shipped configurations load with the worker's own loader, and every series the rules and the
dashboard select is one the worker's registry exports."""

from __future__ import annotations

import pytest
import yaml
from deploytest import DEPLOY
from promql import dashboard_targets, metric_names, rules

SAMPLE_ENV = {
    # What compose sets for worker-1 and the Deployment's downward API gives a pod.
    "compose/worker.yaml": {
        "STREAMCLF__KAFKA__GROUP_INSTANCE_ID": "worker-1",
        "STREAMCLF__KAFKA__CLIENT_ID": "worker-1",
    },
    "k8s/base/worker.yaml": {
        "STREAMCLF__KAFKA__CLIENT_ID": "streamclf-7d9f8b6c5-x2x4q",
        "STREAMCLF__MODEL__DEVICE": "cuda",
        "STREAMCLF__BATCHING__MAX_BATCH_SIZE": "256",
        "STREAMCLF__SHUTDOWN__DRAIN_TIMEOUT_S": "20",
    },
    "docker/worker.yaml": {},
}


@pytest.mark.parametrize("relative", sorted(SAMPLE_ENV))
def test_worker_loads_the_shipped_config(relative: str) -> None:
    config_module = pytest.importorskip("worker.config")
    config = config_module.load_config(DEPLOY / relative, environ=SAMPLE_ENV[relative])
    assert config.metrics.port == 9100
    assert config.shutdown.drain_timeout_s == 20
    if "GROUP_INSTANCE_ID" in str(SAMPLE_ENV[relative]):
        assert (
            config.kafka.group_instance_id
            == SAMPLE_ENV[relative]["STREAMCLF__KAFKA__GROUP_INSTANCE_ID"]
        )


def exported_series() -> set[str]:
    metrics_module = pytest.importorskip("worker.metrics")
    registry = metrics_module.Metrics().registry
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}{s}" for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
        names |= {sample.name for sample in family.samples}
    return names


def test_rules_and_dashboard_select_series_the_worker_exports() -> None:
    exported = exported_series() | {"up"}
    all_rules = rules()
    recorded = {r["record"] for r in all_rules if "record" in r}
    used = {name for r in all_rules for name in metric_names(r["expr"])}
    used |= {name for _, expr in dashboard_targets() for name in metric_names(expr)}
    missing = used - exported - recorded
    assert not missing, f"selected but not exported by worker.metrics: {sorted(missing)}"


def test_compose_worker_yaml_is_the_image_default_plus_broker() -> None:
    image = yaml.safe_load((DEPLOY / "docker" / "worker.yaml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose" / "worker.yaml").read_text())
    assert image["kafka"]["group_id"] == compose["kafka"]["group_id"] == "streamclf"
    assert image["kafka"]["input_topics"] == compose["kafka"]["input_topics"]
