"""The shipped Prometheus rules and Grafana dashboard against a live worker.

A real Prometheus (the `prometheus` binary) scrapes a worker that classifies a live stream from
the embedded broker, with a share of malformed records that become dead letters. Prometheus runs
with the shipped scrape job and rule files, only faster (1 s scrape and evaluation). Then every
dashboard panel query (Grafana variables substituted) and every rule expression is evaluated
through the Prometheus HTTP API: all must parse, and the dashboard's queries must return data.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from tests.conftest import http_get
from tests.deploy.deploytest import find_tool, missing
from tests.deploy.promql import (
    DASHBOARD,
    RULES,
    dashboard_targets,
    dashboard_variable_queries,
    rules,
    substitute,
)
from worker.app import Worker
from worker.broker import free_port
from worker.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_INSTALL = (
    "apt-get update && apt-get install -y prometheus (or: bash deploy/tests-setup.sh)"
)
JOB = "streamclf"
NAMESPACE = "streamclf-live"

# Grafana's $__rate_interval is max(4 x scrape interval, step + scrape interval); with a 1 s
# scrape that is a few seconds. 15 s holds enough samples for rate() without waiting minutes.
RATE_INTERVAL = "15s"

# Panels whose queries may return no series in a short, healthy run, and why. Keep it short:
# every other panel query must return data.
# Panels allowed to show no data in a short healthy run, each with its reason. Empty today: the
# worker creates its labelled series at zero (produce errors per topic included).
ALLOWED_EMPTY: dict[str, str] = {}

# One record in DEAD_LETTER_EVERY is malformed: a dead-letter share well above the 5 % of the
# StreamclfDeadLetterRateHigh alert, so that alert must turn pending.
DEAD_LETTER_EVERY = 8
MALFORMED = [b"{\"not json", b"", b"\xff\xfe not utf-8", b"[1, 2, 3]"]
TEXTS = [
    "Hi Sam, the quarterly report is attached; can we review it on Monday morning?",
    "WINNER!! You have won a FREE cash prize of $1000. Call 0800 123 now to claim!",
    "Running ten minutes late, save me a seat please.",
    "URGENT: your account is suspended, verify your password at http://example.test now",
]
PRODUCE_PERIOD_S = 0.02  # about 50 records a second
# Records the worker must have consumed within one rate window before the ratios are read: a
# window that holds only the first batch or two (17 records, say) puts the dead-letter share
# anywhere between 0 and 2 in 17, which says nothing about the dashboard.
MIN_WINDOW_RECORDS = 20 * DEAD_LETTER_EVERY
DEADLINE_S = 75.0


def wait_for(check: Callable[[], list[str]], timeout_s: float, what: str) -> None:
    """Poll `check` (which lists what is still wrong) until it lists nothing or the deadline
    passes; then fail with its last list."""
    deadline = time.monotonic() + timeout_s
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            detail = "\n  ".join(problems[:40])
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}:\n  {detail}")
        time.sleep(0.5)  # polling interval of a deadline-bounded check


# ---- the live stream -----------------------------------------------------------------------


class Stream:
    """Produces a mix of JSON messages and malformed records until stopped."""

    def __init__(self, broker: str, topic: str) -> None:
        self._producer = KafkaProducer(bootstrap_servers=broker, linger_ms=5)
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-stream", daemon=True)
        self.sent = 0
        self.malformed = 0
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            for i in itertools.count():
                if self._stop.is_set():
                    break
                if i % DEAD_LETTER_EVERY == DEAD_LETTER_EVERY - 1:
                    value = MALFORMED[self.malformed % len(MALFORMED)]
                    self.malformed += 1
                else:
                    value = json.dumps({"id": f"live-{i}", "text": TEXTS[i % len(TEXTS)]}).encode()
                self._producer.send(self._topic, key=f"k{i}".encode(), value=value)
                self.sent += 1
                self._stop.wait(PRODUCE_PERIOD_S)  # pacing of the stream, not synchronisation
            self._producer.flush(timeout=30)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop producing and close the producer (again: nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=60)
        self._producer.close(timeout=10)
        assert not self._thread.is_alive(), "the producer thread did not stop"
        assert self.error is None, f"producing failed: {self.error!r}"


# ---- Prometheus ----------------------------------------------------------------------------


class Prometheus:
    """A Prometheus server on loopback with the shipped job and rules, scraping one target."""

    def __init__(self, binary: str, tmp_path: Path, target: str) -> None:
        self.port = free_port()
        self.config_path = tmp_path / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(live_config(target)), encoding="utf-8")
        self.log_path = tmp_path / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        status, body = http_get(url)
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}:\n{self.log()}")
        if not body:
            return {"status": "unreachable", "error": f"HTTP {status}"}
        return json.loads(body)

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def ready(self) -> list[str]:
        status, _ = http_get(f"http://127.0.0.1:{self.port}/-/ready")
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}:\n{self.log()}")
        return [] if status == 200 else [f"/-/ready answered {status}"]

    def terminate(self) -> int:
        self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            self._log.close()
        return code


def live_config(target: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the streamclf job (its name, path and any
    relabeling unchanged) pointed at `target`, 1 s scrapes and evaluations, and the shipped
    rule files by absolute path."""
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in shipped["scrape_configs"]}
    assert JOB in jobs, f"the shipped config has no {JOB!r} scrape job"
    rule_files = [str(PROMETHEUS_DIR / pattern) for pattern in shipped["rule_files"]]
    assert any(PROMETHEUS_DIR.glob(p) for p in shipped["rule_files"]), "no rule file matched"
    job = {
        **jobs[JOB],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        # Kubernetes' PodMonitor adds the pod's namespace; the dashboard has a variable for it.
        "static_configs": [{"targets": [target], "labels": {"namespace": NAMESPACE}}],
    }
    return {
        "global": {**shipped.get("global", {}), "scrape_interval": "1s",
                   "evaluation_interval": "1s"},
        "rule_files": rule_files,
        "scrape_configs": [job],
    }


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def prometheus_binary() -> str:
    path = find_tool("prometheus")
    if path is None:
        missing("prometheus", PROMETHEUS_INSTALL)
    return path  # type: ignore[return-value]


@pytest.fixture
def live(prometheus_binary: str, broker: str, topics, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A worker classifying a live stream and a Prometheus scraping it; torn down cleanly."""
    names = topics()
    port = free_port()
    config = load_config(None, [
        f"kafka.bootstrap_servers={broker}",
        f"kafka.input_topics=[{names['input']}]",
        f"kafka.output_topic={names['output']}",
        f"kafka.dlq_topic={names['dlq']}",
        f"kafka.group_id=prom-{uuid.uuid4().hex[:8]}",
        "kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000}",
        "kafka.lag_refresh_ms=1000",
        "metrics.host=127.0.0.1",
        f"metrics.port={port}",
        "model.threads=1",
        "batching.max_wait_ms=10",
    ], environ={})
    worker = Worker(config)
    exit_codes: list[int] = []
    worker_thread = threading.Thread(target=lambda: exit_codes.append(worker.run()),
                                     name="worker", daemon=True)
    target = f"127.0.0.1:{port}"
    stopped: dict[str, int] = {}

    def stop_worker() -> None:
        worker.stop()
        worker_thread.join(timeout=60)
        assert not worker_thread.is_alive(), "the worker did not stop"

    with ExitStack() as teardown:  # runs every step, in reverse order, even when one fails
        stream = Stream(broker, names["input"])
        teardown.callback(stream.stop)  # closes the producer if the stream never started
        worker_thread.start()
        teardown.callback(stop_worker)
        prometheus = Prometheus(prometheus_binary, tmp_path, target)
        teardown.callback(lambda: stopped.setdefault("prometheus", prometheus.terminate()))
        wait_for(prometheus.ready, 30, "prometheus to be ready")
        # Produce once the worker owns its partitions, so end-to-end latency is the worker's own
        # and not the time the first records waited for the group to form.
        wait_for(lambda: [] if http_get(f"http://{target}/readyz")[0] == 200 else ["not ready"],
                 60, "the worker to be ready")
        stream.start()
        teardown.callback(stream.stop)  # the stream stops first, then Prometheus, the worker
        yield {"prometheus": prometheus, "target": target, "stream": stream, "names": names}
    assert exit_codes == [0], f"the worker exited with {exit_codes}"
    assert stopped["prometheus"] == 0, (
        f"prometheus exited {stopped['prometheus']}:\n{prometheus.log()}")


# ---- checks --------------------------------------------------------------------------------


def describe(result: dict[str, Any]) -> str:
    if result.get("status") != "success":
        return f"{result.get('errorType', '')}: {result.get('error', result)}"
    return json.dumps(result["data"]["result"])[:200]


def has_data(result: dict[str, Any]) -> bool:
    return result.get("status") == "success" and bool(result["data"]["result"])


def values(result: dict[str, Any]) -> list[float]:
    """The sample values of an instant-vector or scalar result."""
    data = result["data"]
    if data["resultType"] == "vector":
        return [float(s["value"][1]) for s in data["result"]]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return []


def test_dashboard_and_rules_against_a_live_worker(live: dict[str, Any]) -> None:
    prometheus: Prometheus = live["prometheus"]
    target: str = live["target"]
    variables = {"job": JOB, "instance": target, "__rate_interval": RATE_INTERVAL}
    panels = dashboard_targets(DASHBOARD)
    queries = [(title, substitute(expr, variables)) for title, expr in panels]
    titles = {title for title, _ in panels}
    all_rules = rules(RULES)
    recorded = sorted({r["record"] for r in all_rules if "record" in r})
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]

    # The allow-list is short and names real panels.
    assert len(ALLOWED_EMPTY) <= 2, "too many panels allowed to show no data"
    assert set(ALLOWED_EMPTY) <= titles, f"stale entries: {set(ALLOWED_EMPTY) - titles}"

    # 1. The target is scraped, under the shipped job name.
    def target_up() -> list[str]:
        active = prometheus.api("/api/v1/targets").get("data", {}).get("activeTargets", [])
        ours = [t for t in active if t["labels"].get("instance") == target]
        if not ours:
            return [f"no active target {target} (have {[t['scrapeUrl'] for t in active]})"]
        t = ours[0]
        if t["labels"].get("job") != JOB:
            raise AssertionError(f"target scraped as job {t['labels'].get('job')!r}, not {JOB!r}")
        return [] if t["health"] == "up" else [f"target health {t['health']}: {t['lastError']}"]

    wait_for(target_up, 30, "the worker's target to be up")

    # 2. Enough samples for the rate windows, the recording rules and the rule groups.
    def ready_to_evaluate() -> list[str]:
        problems = []
        for name in ("streamclf_messages_consumed_total", "streamclf_messages_classified_total",
                     "streamclf_messages_dead_lettered_total"):
            expr = f'sum(rate({name}{{job="{JOB}"}}[{RATE_INTERVAL}]))'
            if not [v for v in values(prometheus.query(expr)) if v > 0]:
                problems.append(f"{expr} is not above 0 yet")
        window = f'sum(increase(streamclf_messages_consumed_total{{job="{JOB}"}}[{RATE_INTERVAL}]))'
        consumed = values(prometheus.query(window))
        if not consumed or consumed[0] < MIN_WINDOW_RECORDS:
            problems.append(f"{window} is {consumed}, below {MIN_WINDOW_RECORDS} yet")
        for name in recorded:
            if not has_data(prometheus.query(name)):
                problems.append(f"recording rule {name} has no series yet")
        for group in prometheus.api("/api/v1/rules").get("data", {}).get("groups", []):
            for rule in group["rules"]:
                if rule["health"] != "ok":
                    problems.append(f"rule {rule['name']}: health {rule['health']} "
                                    f"{rule.get('lastError', '')}")
        for title, expr in queries:
            if title not in ALLOWED_EMPTY and not has_data(prometheus.query(expr)):
                problems.append(f"panel {title!r} has no data yet: {expr}")
        return problems

    wait_for(ready_to_evaluate, 60, "data for every panel and recording rule")

    # 3. Every dashboard query parses and (outside the allow-list) returns data.
    empty, failed, empty_allowed = [], [], set()
    for title, expr in queries:
        result = prometheus.query(expr)
        if result.get("status") != "success":
            failed.append(f"{title}: {expr}\n    {describe(result)}")
        elif not result["data"]["result"] and title in ALLOWED_EMPTY:
            empty_allowed.add(title)
        elif not result["data"]["result"]:
            empty.append(f"{title}: {expr}")
    assert not failed, "dashboard queries Prometheus rejects:\n  " + "\n  ".join(failed)
    assert not empty, "dashboard queries without data:\n  " + "\n  ".join(empty)
    assert empty_allowed == set(ALLOWED_EMPTY), (
        f"allow-listed panels that now return data (remove them from ALLOWED_EMPTY): "
        f"{sorted(set(ALLOWED_EMPTY) - empty_allowed)}"
    )

    # The overview numbers are live: traffic flows and some of it is dead-lettered.
    by_title = {title: prometheus.query(expr) for title, expr in queries}
    for title in ("Consumed", "Classified", "Dead-letter ratio", "Workers up"):
        assert [v for v in values(by_title[title]) if v > 0], (
            f"{title}: {describe(by_title[title])}")
    ratio = values(by_title["Dead-letter ratio"])[0]
    assert 0.5 / DEAD_LETTER_EVERY < ratio < 2.0 / DEAD_LETTER_EVERY, ratio
    assert values(by_title["Workers up"]) == [1.0]
    for title in ("End-to-end p99", "Batch size"):
        assert not [v for v in values(by_title[title]) if math.isnan(v)], (
            f"{title} is NaN: {describe(by_title[title])}")

    # The variables' label_values() queries find the job and the instance.
    for query in dashboard_variable_queries(DASHBOARD, {"job": JOB}):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert match, f"unexpected variable query {query!r}"
        series = prometheus.api("/api/v1/series", **{"match[]": match.group(1)})
        assert series.get("status") == "success", f"{query}: {series}"
        found = {s.get(match.group(2)) for s in series["data"]}
        assert {JOB, NAMESPACE, target} & found, f"{query} found {found}"

    # 4. Every rule expression parses and evaluates.
    rejected = []
    for rule in all_rules:
        result = prometheus.query(rule["expr"])
        if result.get("status") != "success":
            rejected.append(f"{rule.get('record') or rule.get('alert')}: {describe(result)}")
    assert not rejected, "rule expressions Prometheus rejects:\n  " + "\n  ".join(rejected)

    # 5. Every recording rule produces series for the job.
    for name in recorded:
        result = prometheus.query(f'{name}{{job="{JOB}"}}')
        assert has_data(result), f"recording rule {name} has no series: {describe(result)}"
    # The rules run every second: the last run may predate the scrape that step 2 saw rising.
    def consumed_rate_recorded() -> list[str]:
        expr = f'job:streamclf_messages_consumed:rate5m{{job="{JOB}"}}'
        consumed = values(prometheus.query(expr))
        return [] if consumed and consumed[0] > 0 else [f"{expr} = {consumed}"]

    wait_for(consumed_rate_recorded, 15, "the recording rule to see traffic")

    # 6. Every rule group of the file is loaded and healthy.
    loaded = {g["name"]: g for g in prometheus.api("/api/v1/rules")["data"]["groups"]}
    assert set(loaded) == {g["name"] for g in groups}
    for group in groups:
        live_rules = loaded[group["name"]]["rules"]
        assert len(live_rules) == len(group["rules"]), group["name"]
        unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in live_rules
                     if r["health"] != "ok"]
        assert not unhealthy, unhealthy

    # The alerts see the run as it is: a dead-letter share above 5 % (pending: it needs 10 min
    # to fire), and a worker that is up and committing. Right after start-up, lag grows for a
    # moment before the first commit, which StreamclfNoProgress may briefly match (its `for`
    # absorbs that), so wait for the states to settle.
    expected = {"StreamclfDeadLetterRateHigh": "pending", "StreamclfWorkerDown": "inactive",
                "StreamclfWorkersAbsent": "inactive", "StreamclfNoProgress": "inactive",
                "StreamclfConsumerLagHigh": "inactive",
                "StreamclfConsumerLagSecondsHigh": "inactive",
                "StreamclfRebalanceStorm": "inactive"}

    def alert_states() -> list[str]:
        groups_now = prometheus.api("/api/v1/rules", type="alert")["data"]["groups"]
        states = {r["name"]: r["state"] for g in groups_now for r in g["rules"]}
        return [f"{name} is {states.get(name)}, expected {state}"
                for name, state in expected.items() if states.get(name) != state]

    wait_for(alert_states, 30, "the alerts to reflect a healthy worker with dead letters")
