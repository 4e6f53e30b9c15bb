"""The rebalance listener runs inside kafka-python's re-balance: every event must reach the main
loop, whatever the commit it starts for revoked partitions does."""

from __future__ import annotations

from kafka import TopicPartition

from worker.app import Worker, _RebalanceEvents
from worker.config import load_config

P0, P1 = TopicPartition("in", 0), TopicPartition("in", 1)


def test_a_revocation_carries_the_commit_the_listener_sent():
    sent: list[set[TopicPartition]] = []
    listener = _RebalanceEvents(lambda revoked: sent.append(revoked) or "future")
    listener.on_partitions_revoked([P0, P1])
    listener.on_partitions_assigned([P1])
    listener.on_partitions_lost([P0])
    assert sent == [{P0, P1}]
    events = [listener.events.get_nowait() for _ in range(3)]
    assert events == [("revoked", {P0, P1}, "future"), ("assigned", {P1}, None),
                      ("lost", {P0}, None)]


def test_a_commit_that_raises_still_queues_the_revocation():
    def broken(revoked: set[TopicPartition]) -> None:
        raise RuntimeError("coordinator unknown")

    listener = _RebalanceEvents(broken)
    listener.on_partitions_revoked([P0])  # must not raise into kafka-python
    assert listener.events.get_nowait() == ("revoked", {P0}, None)


class _AsyncCommits:
    """kafka-python's commit_async as the listener uses it: the callback runs later (within a
    poll), or the call itself raises (an earlier commit was fenced, the IO loop is gone)."""

    def __init__(self, raises: bool = False) -> None:
        self.raises = raises
        self.sent: list = []

    def commit_async(self, offsets, callback):
        if self.raises:
            raise RuntimeError("the IO loop is closed")
        self.sent.append((offsets, callback))


def _worker_with_done_records(consumer: _AsyncCommits) -> Worker:
    worker = Worker(load_config(None, ["metrics.enabled=false"], environ={}))
    worker._consumer = consumer  # noqa: SLF001
    for offset in range(5):
        worker._tracker.track(("in", 0), offset)  # noqa: SLF001
        worker._tracker.ack(("in", 0), offset)  # noqa: SLF001
    return worker


def _committed(worker: Worker) -> float:
    return worker.metrics.registry.get_sample_value("streamclf_offsets_committed_total") or 0.0


def test_a_revoked_commit_counts_once_the_broker_accepts_it():
    consumer = _AsyncCommits()
    worker = _worker_with_done_records(consumer)
    claim = worker._commit_revoked_at_once({P0})  # noqa: SLF001
    assert claim is not None and not claim.settled and _committed(worker) == 0
    offsets, callback = consumer.sent[0]
    callback(offsets, object())  # the broker's answer
    assert claim.settled and claim.accepted and _committed(worker) == 5


def test_a_revoked_commit_the_broker_refuses_counts_nothing():
    consumer = _AsyncCommits()
    worker = _worker_with_done_records(consumer)
    claim = worker._commit_revoked_at_once({P0})  # noqa: SLF001
    offsets, callback = consumer.sent[0]
    callback(offsets, RuntimeError("refused"))
    assert claim.settled and not claim.accepted and _committed(worker) == 0


def test_a_revoked_commit_that_cannot_be_sent_is_left_to_the_main_loop():
    worker = _worker_with_done_records(_AsyncCommits(raises=True))
    try:
        worker._commit_revoked_at_once({P0})  # noqa: SLF001
    except RuntimeError:
        pass
    else:
        raise AssertionError("the send's failure must reach the listener")
    assert worker._tracker.committable() == {("in", 0): 5}  # noqa: SLF001
