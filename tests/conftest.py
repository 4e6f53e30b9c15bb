"""Shared fixtures: the embedded broker (one per test session) and helpers to read topics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a real Kafka-compatible broker on loopback."""
    from worker.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield embedded.bootstrap


@pytest.fixture
def topics(broker: str) -> Callable[..., dict[str, str]]:
    """Create fresh input/output/dlq topics for one test; returns their names."""
    from worker.kafka import ensure_topics

    def make(partitions: int = 3) -> dict[str, str]:
        tag = uuid.uuid4().hex[:8]
        names = {"input": f"in-{tag}", "output": f"out-{tag}", "dlq": f"dlq-{tag}"}
        ensure_topics(broker, list(names.values()), partitions=partitions)
        return names

    return make


def poll_until(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "") -> object:
    """Poll `condition` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling interval of a deadline-bounded condition check


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += float(sample.value)
    return total


class TopicReader:
    """Reads every record of some topics from the start, accumulating across calls."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        from kafka import KafkaConsumer

        self.records: list = []
        self._consumer = KafkaConsumer(
            *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None,
        )

    def read(self) -> list:
        for batch in self._consumer.poll(timeout_ms=200).values():
            self.records.extend(batch)
        return self.records

    def wait_for(self, count: int, timeout_s: float = 60.0) -> list:
        poll_until(lambda: len(self.read()) >= count, timeout_s,
                   f"{count} records (have {len(self.records)})")
        return self.records

    def close(self) -> None:
        self._consumer.close()


def results_by_key(records: list) -> dict[bytes, dict]:
    return {r.key: json.loads(r.value) for r in records}
