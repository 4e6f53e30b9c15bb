"""A static member fenced by the broker (another member joined with its group_instance_id)
stops with exit code 1 instead of classifying partitions that are no longer its own.

The embedded broker does not fence static members, so the consumer here is a stand-in that
answers as Apache Kafka's coordinator does, through kafka-python's own error."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaTimeoutError

import worker.app as app
from worker.config import load_config
from worker.errors import MemberFenced

SETTINGS = ["kafka.group_id=g", "kafka.group_instance_id=w-1", "metrics.enabled=false",
            "model.lanes=1", "shutdown.drain_timeout_s=2"]


class _Model:
    name, version, labels, device, max_tokens = "fake", "1", ("a", "b"), "cpu", 8

    def tokenize(self, text: str) -> list[int]:
        return [1]

    def predict_ids(self, seqs: Any) -> list[Any]:
        raise AssertionError("nothing is classified")


class _FencedConsumer:
    """Joined, then fenced: its polls and commits raise kafka-python's fencing error (with
    *fenced_in* "drain", only the polls once the worker was asked to stop)."""

    def __init__(self, fenced_in: str) -> None:
        self.fenced_in = fenced_in
        self.stop: Any = None  # a worker that carries on is stopped after a few polls
        self.polls = 0
        self.commits = 0
        self.closed = False

    def subscribe(self, topics: Any, listener: Any = None) -> None:
        pass

    def poll(self, timeout_ms: int = 0, max_records: int = 0) -> dict:
        self.polls += 1
        if self.polls == 3:
            self.stop()
        if self.fenced_in == "poll" or (self.fenced_in == "drain" and self.polls > 3):
            raise FencedInstanceIdError(("g", "w-1"))
        return {}

    def commit(self, offsets: Any = None, timeout_ms: int = 0) -> None:
        self.commits += 1
        if self.fenced_in != "drain":
            raise FencedInstanceIdError(("g", "w-1"))

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return set()

    def paused(self) -> set[TopicPartition]:
        return set()

    def close(self, autocommit: bool = False, timeout_ms: int = 0) -> None:
        self.closed = True


class _Rejoining:
    """kafka-python's coordinator as `worker.kafka.group_state` reads it: a join under way."""

    def rebalance_in_progress(self) -> bool:
        return True

    def generation_if_stable(self) -> None:
        return None

    def need_rejoin(self) -> bool:
        return True


class _Producer:
    def flush(self, timeout: float = 0) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        pass


@pytest.mark.parametrize("fenced_in", ["poll", "commit", "drain"])
def test_a_fenced_member_stops_with_exit_code_1_and_says_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fenced_in: str) -> None:
    consumer = _FencedConsumer(fenced_in)
    monkeypatch.setattr(app, "make_consumer", lambda settings: consumer)
    monkeypatch.setattr(app, "make_producer", lambda settings: _Producer())
    worker = app.Worker(load_config(None, SETTINGS, environ={}), classifier=_Model())
    consumer.stop = worker.stop
    if fenced_in == "commit":  # something done to commit
        worker._tracker.skip_to(("in", 0), 5)  # noqa: SLF001
    if fenced_in == "drain":  # fenced in the join under way as the drain begins
        consumer._coordinator = _Rejoining()  # noqa: SLF001
    with caplog.at_level(logging.ERROR, logger="worker.app"):
        assert worker.run() == 1
    assert consumer.polls == {"poll": 1, "commit": 1, "drain": 4}[fenced_in]
    assert consumer.closed
    assert consumer.commits == (1 if fenced_in == "commit" else 0)
    assert "kafka.group_instance_id 'w-1'" in caplog.text
    assert "give each member its own id" in caplog.text


def test_only_fencing_is_fatal() -> None:
    worker = app.Worker(load_config(None, SETTINGS, environ={}), classifier=_Model())
    worker._stop_if_fenced(KafkaTimeoutError())  # noqa: SLF001 - retried as before
    with pytest.raises(MemberFenced):
        worker._stop_if_fenced(FencedInstanceIdError(("g", "w-1")))  # noqa: SLF001
