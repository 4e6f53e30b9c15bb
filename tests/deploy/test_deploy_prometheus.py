"""Prometheus scrape config, recording and alerting rules, and their promtool unit tests."""

from __future__ import annotations

import re

import pytest
import yaml
from deploytest import DEPLOY, REPO, check
from promql import metric_names, rules

PROMETHEUS = DEPLOY / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
README = DEPLOY / "README.md"

# What the worker exports (histograms add _bucket, _sum and _count).
COUNTERS = {
    "streamclf_messages_consumed_total",
    "streamclf_messages_classified_total",
    "streamclf_messages_dead_lettered_total",
    "streamclf_offsets_committed_total",
    "streamclf_rebalances_total",
    "streamclf_produce_errors_total",
}
GAUGES = {
    "streamclf_consumer_lag",
    "streamclf_consumer_lag_seconds",
    "streamclf_in_flight_messages",
    "streamclf_model_info",
    "streamclf_last_commit_timestamp_seconds",
    "streamclf_assigned_partitions",
    "streamclf_paused",
}
HISTOGRAMS = {
    "streamclf_batch_size",
    "streamclf_inference_duration_seconds",
    "streamclf_end_to_end_latency_seconds",
}
WORKER_METRICS = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
PROCESS_METRICS = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}


def alerting_rules() -> list[dict]:
    return [r for path in RULE_FILES for r in rules(path) if "alert" in r]


def recorded_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for r in rules(path) if "record" in r}


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_promtool_check_config(promtool: str) -> None:
    out = check([promtool, "check", "config", str(CONFIG)])
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_check_rules(promtool: str) -> None:
    assert RULE_FILES
    check([promtool, "check", "rules", *map(str, RULE_FILES)])


def test_promtool_test_rules(promtool: str) -> None:
    assert TEST_FILES
    out = check([promtool, "test", "rules", *map(str, TEST_FILES)])
    assert "FAILED" not in out.stdout + out.stderr


def test_config_loads_the_rules_and_scrapes_the_compose_workers() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    matched = {p for pattern in config["rule_files"] for p in CONFIG.parent.glob(pattern)}
    assert set(RULE_FILES) <= matched
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # Rules and dashboard select job="streamclf"; the PodMonitor's jobLabel gives the same.
    targets = [t for sc in jobs["streamclf"]["static_configs"] for t in sc["targets"]]
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in compose["services"], f"{target} is not a compose service"
        assert port == "9100"


def test_rules_select_only_metrics_the_worker_exports() -> None:
    known = WORKER_METRICS | PROCESS_METRICS | recorded_names()
    for rule in (r for path in RULE_FILES for r in rules(path)):
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: unknown {unknown}"
    for name in recorded_names():
        assert re.fullmatch(r"(job|instance):[a-z0-9_]+:[a-z0-9_]+", name), name


REQUIRED_ALERTS = {
    "StreamclfWorkerDown",
    "StreamclfNoProgress",
    "StreamclfConsumerLagHigh",
    "StreamclfDeadLetterRateHigh",
    "StreamclfEndToEndLatencyHigh",
    "StreamclfRebalanceStorm",
    "StreamclfProduceErrors",
}


def test_alerts_cover_the_required_symptoms() -> None:
    names = {r["alert"] for r in alerting_rules()}
    assert REQUIRED_ALERTS <= names


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_alert_has_severity_summary_description_and_runbook(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    url = annotations["runbook_url"]
    doc, _, anchor = url.partition("#")
    assert (REPO / doc).resolve() == README.resolve(), url
    headings = {
        github_anchor(line.lstrip("#"))
        for line in README.read_text().splitlines()
        if line.startswith("#")
    }
    assert anchor in headings, f"{url}: no heading with that anchor in {doc}"
    assert anchor == rule["alert"].lower()


def _unit_tests() -> list[dict]:
    tests = []
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        assert any(
            (path.parent / f).resolve() in {p.resolve() for p in RULE_FILES}
            for f in doc["rule_files"]
        ), f"{path} does not load the rules"
        for test in doc["tests"]:
            tests.extend(test.get("alert_rule_test", []))
    return tests


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_unit_tested_firing_and_not_firing(rule: dict) -> None:
    cases = [t for t in _unit_tests() if t["alertname"] == rule["alert"]]
    assert any(t.get("exp_alerts") for t in cases), f"{rule['alert']}: no firing case"
    assert any(not t.get("exp_alerts") for t in cases), f"{rule['alert']}: no quiet case"


def test_compose_mounts_config_and_rules_side_by_side() -> None:
    # Compose mounts prometheus.yml and rules/ side by side under /etc/prometheus.
    compose = (DEPLOY / "compose" / "compose.yaml").read_text()
    assert "../prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in compose
    assert "../prometheus/rules:/etc/prometheus/rules" in compose
