"""The benchmark's Kafka-client baseline (the bare copy loop) against the embedded broker."""

from __future__ import annotations

import pytest

from benchmarks.throughput import _COPY_VALUE, copy_loop
from tests.conftest import TopicReader

pytestmark = pytest.mark.integration


def test_copy_loop_produces_one_result_per_record_keyed_and_headed_like_the_worker(
    broker: str,
) -> None:
    backlog = [(f"b{i}-".encode(), b'{"text": "hi %d"}' % i) for i in range(300)]
    out = copy_loop(broker, backlog, timeout_s=60)
    assert out.get("results") == len(backlog), out
    assert out["msgs_per_s"] > 0
    reader = TopicReader(broker, out["output_topic"])
    try:
        records = reader.wait_for(len(backlog))
    finally:
        reader.close()
    assert sorted(r.key for r in records) == sorted(key for key, _ in backlog)
    assert {r.value for r in records} == {_COPY_VALUE}
    assert all(dict(r.headers)["streamclf-label"] == b"ham" for r in records)


@pytest.mark.parametrize("variant", ["producer in a child process", "librdkafka"])
def test_copy_loop_variants_produce_one_result_per_record(broker: str, variant: str) -> None:
    from benchmarks import ceilings

    if variant == "librdkafka":
        pytest.importorskip("confluent_kafka", reason="an optional benchmark client")
        loop = ceilings.librdkafka_copy_loop
    else:
        loop = ceilings.split_copy_loop
    backlog = [(f"b{i}-".encode(), b'{"text": "hi %d"}' % i) for i in range(300)]
    out = loop(broker, backlog, timeout_s=60)
    assert out.get("results") == len(backlog), out
    reader = TopicReader(broker, out["output_topic"])
    try:
        records = reader.wait_for(len(backlog))
    finally:
        reader.close()
    assert sorted(r.key for r in records) == sorted(key for key, _ in backlog)
    assert {r.value for r in records} == {_COPY_VALUE}
    assert all(dict(r.headers)["streamclf-label"] == b"ham" for r in records)
