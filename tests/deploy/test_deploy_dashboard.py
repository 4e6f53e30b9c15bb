"""The Grafana dashboard: structure, variables, and every query parsed by promtool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from deploytest import DEPLOY, run
from promql import (
    DASHBOARD,
    RULES,
    dashboard_queries,
    dashboard_targets,
    dashboard_variable_queries,
    metric_names,
    rule_expressions,
    substitute,
)
from test_deploy_prometheus import PROCESS_METRICS, WORKER_METRICS, recorded_names

GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_variables(dashboard: dict) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) >= {"datasource", "job", "namespace", "instance"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "namespace", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"]["uid"] == "${datasource}"
        # Queries use =~ with these, so "All" must be a regex.
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    assert 'job=~"$job"' in variables["namespace"]["query"]["query"]
    assert 'job=~"$job", namespace=~"$namespace"' in variables["instance"]["query"]["query"]


def test_panels_use_the_datasource_variable_and_fit_the_grid(dashboard: dict) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_the_required_panels_exist(dashboard: dict) -> None:
    titles = {p["title"] for p in panels(dashboard)}
    for wanted in (
        "Messages in / out per second",
        "Classified by label",
        "Dead letters by reason",
        "Lag per partition",
        "Batch size",
        "Inference duration quantiles",
        "End-to-end latency quantiles",
        "End-to-end latency distribution",
        "In-flight messages",
        "Rebalances",
        "Model and device",
        "Per instance",
    ):
        assert wanted in titles
    assert any(p["type"] == "heatmap" for p in panels(dashboard))


def test_every_query_filters_on_job_namespace_and_instance() -> None:
    for title, expr in dashboard_targets():
        assert 'job=~"$job", namespace=~"$namespace", instance=~"$instance"' in expr, title
        # Deployments in two namespaces may read the same topic: never merge their partitions.
        assert "by (topic, partition)" not in expr, title


def test_queries_select_only_known_series() -> None:
    known = WORKER_METRICS | PROCESS_METRICS | recorded_names()
    for title, expr in dashboard_targets():
        names = metric_names(expr)
        assert names, f"{title}: selects no metric"
        assert not names - known, f"{title}: unknown {names - known}"


def test_substitution() -> None:
    expr = 'rate(x{job=~"$job", instance=~"${instance}"}[$__rate_interval]) [[job]]'
    assert substitute(expr) == 'rate(x{job=~".*", instance=~".*"}[1m]) .*'
    assert substitute("$__range_s", {"job": "streamclf"}) == "3600"
    assert substitute('{job=~"$job"}', {"job": "streamclf"}) == '{job=~"streamclf"}'
    with pytest.raises(KeyError):
        substitute("$nope")
    for query in dashboard_queries() + rule_expressions():
        assert "$" not in query and "[[" not in query


def test_helpers_find_every_query(dashboard: dict) -> None:
    targets = sum(len(p.get("targets", [])) for p in panels(dashboard))
    assert len(dashboard_queries()) == targets
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert len(rule_expressions()) == sum(len(g["rules"]) for g in groups)
    assert all(q.startswith("label_values(") for q in dashboard_variable_queries())


def _check_as_rules(promtool: str, queries: list[str], tmp_path: Path) -> None:
    """promtool has no offline PromQL parser of its own; `check rules` parses every expr."""
    doc = {
        "groups": [
            {
                "name": "parse",
                "rules": [
                    {"record": f"streamclf_parse_check:q{i}", "expr": q}
                    for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = run([promtool, "check", "rules", str(path)])
    if result.returncode != 0:
        # Name the offending queries one by one.
        bad = []
        for q in queries:
            single = tmp_path / "single.rules.yml"
            single.write_text(
                yaml.safe_dump(
                    {
                        "groups": [
                            {
                                "name": "p",
                                "rules": [{"record": "streamclf_parse_check:q", "expr": q}],
                            }
                        ]
                    }
                )
            )
            one = run([promtool, "check", "rules", str(single)])
            if one.returncode != 0:
                bad.append(f"{q}\n  {one.stdout.strip()} {one.stderr.strip()}")
        pytest.fail(
            "queries that do not parse:\n" + "\n".join(bad or [result.stdout + result.stderr])
        )


def test_dashboard_and_rule_queries_parse(promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries() + rule_expressions()
    assert len(queries) > 30
    _check_as_rules(promtool, queries, tmp_path)


def test_parse_check_catches_a_bad_query(promtool: str, tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception):
        _check_as_rules(promtool, ["sum(rate(streamclf_messages_consumed_total[1m])"], tmp_path)


def test_provisioning_points_at_the_dashboard_and_the_datasource(dashboard: dict) -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    current = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert current["current"]["value"] == source["uid"]
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "streamclf.yaml").read_text()
    )
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
