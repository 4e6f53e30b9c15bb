"""worker.kafka.key_partition must put a keyed result where any Kafka client would put it."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from worker.kafka import key_partition, murmur2


@given(st.binary(max_size=400))
@example(b"")
@example(b"\xff\xff\xff\xff\x80")
def test_murmur2_equals_kafka_pythons(key: bytes) -> None:
    assert murmur2(key) == kafka_python_murmur2(key)


@pytest.mark.parametrize(("key", "partition"), [
    # The Java client's DefaultPartitioner over 1,000 partitions, as kafka-python's own tests
    # record it.
    (b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742),
])
def test_key_partition_agrees_with_the_java_client(key: bytes, partition: int) -> None:
    assert key_partition(key, set(range(1000))) == partition


class _Metadata:
    """The two calls kafka-python's DefaultPartitioner makes of the cluster metadata."""

    def __init__(self, partitions: set[int]) -> None:
        self.partitions = partitions

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return set(self.partitions)

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return set(self.partitions)


@given(st.binary(max_size=64), st.sets(st.integers(0, 200), min_size=1, max_size=40))
def test_key_partition_equals_kafka_pythons_default_partitioner(key: bytes,
                                                                 partitions: set[int]) -> None:
    """Partition ids in any order, gaps included: the hash indexes the sorted ids."""
    chosen = DefaultPartitioner().partition("t", key, key, b"v", b"v", _Metadata(partitions))
    assert key_partition(key, partitions) == chosen
