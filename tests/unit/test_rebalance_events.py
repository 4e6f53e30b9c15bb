"""The rebalance listener runs inside kafka-python's re-balance: every event must reach the main
loop, whatever the commit it starts for revoked partitions does."""

from __future__ import annotations

from kafka import TopicPartition

from worker.app import _RebalanceEvents

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
