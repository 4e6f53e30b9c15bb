"""PromQL found in the deployment assets, ready to evaluate.

`dashboard_queries()` returns every query of the Grafana dashboard and `rule_expressions()` every
expression of a Prometheus rules file, with Grafana's template variables replaced so that each
string is plain PromQL. tests/deploy parses them offline with promtool; an integration test can
send the same strings to a live Prometheus that scrapes a running worker.

Import it from another test module with::

    from tests.deploy.promql import dashboard_queries, rule_expressions
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "streamclf.json"
RULES = REPO / "deploy" / "prometheus" / "rules" / "streamclf.rules.yml"

#: Values for Grafana's variables. `job`, `namespace` and `instance` are only used with `=~`, so
#: `.*` means "all"; pass e.g. ``{"job": "streamclf"}`` to narrow them.
DEFAULT_VARIABLES: dict[str, str] = {
    "job": ".*",
    "namespace": ".*",
    "instance": ".*",
    "datasource": "prometheus",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}

# ${name}, ${name:format}, [[name]] and $name (longest name first, so $__range_s beats $__range).
_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::\w+)?\}|\[\[(?P<bracketed>\w+)(?::\w+)?\]\]|\$(?P<plain>\w+)"
)


def substitute(expr: str, variables: Mapping[str, str] | None = None) -> str:
    """Replace Grafana template variables in `expr`; unknown variables raise KeyError."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bracketed") or match.group("plain")
        if name not in values:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # Collapsed rows keep their panels inside the row.
        yield from _panels(panel.get("panels") or [])


def dashboard_targets(path: str | Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, raw expression) for every Prometheus target of the dashboard."""
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    found = []
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if expr and not target.get("hide"):
                found.append((panel.get("title", ""), expr))
    return found


def dashboard_queries(
    path: str | Path = DASHBOARD, variables: Mapping[str, str] | None = None
) -> list[str]:
    """Every panel query of the dashboard at `path`, variables substituted."""
    return [substitute(expr, variables) for _, expr in dashboard_targets(path)]


def dashboard_variable_queries(
    path: str | Path = DASHBOARD, variables: Mapping[str, str] | None = None
) -> list[str]:
    """The `label_values(...)` queries of the dashboard's query variables (Grafana syntax,
    not PromQL), variables substituted."""
    dashboard = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            out.append(substitute(text or var.get("definition", ""), variables))
    return out


def rule_expressions(
    path: str | Path = RULES, variables: Mapping[str, str] | None = None
) -> list[str]:
    """Every `expr` (recording and alerting rules) of the rules file at `path`, variables
    substituted (rules normally have none)."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [
        substitute(rule["expr"], variables).strip()
        for group in doc.get("groups", [])
        for rule in group.get("rules", [])
    ]


def rules(path: str | Path = RULES) -> list[dict[str, Any]]:
    """The rule mappings of a rules file, in order."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return [rule for group in doc.get("groups", []) for rule in group.get("rules", [])]


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects. A heuristic that fits this project's
    expressions: metric names start with streamclf_, process_ or python_, recording rules with
    job: or instance:, and `up`."""
    return set(
        re.findall(r"\b((?:job|instance):[\w:]+|streamclf_\w+|process_\w+|python_\w+|up)\b", expr)
    )
