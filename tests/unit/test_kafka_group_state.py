"""worker.kafka.group_state reads kafka-python's coordinator, which has no public call for it."""

from __future__ import annotations

from kafka import KafkaConsumer
from kafka.coordinator.base import MemberState

from worker.kafka import group_state


def test_group_state_reads_the_installed_kafka_python() -> None:
    """Where the coordinator's calls are missing, group_state says "stable" and the drain never
    finishes a re-join before leaving: a kafka-python upgrade that renames them must fail here,
    not in a fault test."""
    consumer = KafkaConsumer(group_id="g", bootstrap_servers="127.0.0.1:9", api_version=(2, 5))
    try:
        consumer.subscribe(["in"])
        coordinator = consumer._coordinator
        assert group_state(consumer) == "unjoined"
        coordinator.state = MemberState.REBALANCING
        assert group_state(consumer) == "joining"
        coordinator.state = MemberState.STABLE
        coordinator.rejoin_needed = True
        assert group_state(consumer) == "rejoin"
        coordinator.rejoin_needed = False
        coordinator._joined_subscription = {"in"}  # as a join leaves it
        assert group_state(consumer) == "stable"
    finally:
        consumer.close(timeout_ms=100)
