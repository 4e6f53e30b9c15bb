"""The benchmark's Kafka-client baselines (the bare copy loop and its variants in
`benchmarks/ceilings.py`) against the embedded broker."""

from __future__ import annotations

import pytest

from benchmarks import ceilings
from benchmarks.throughput import _COPY_VALUE, copy_loop
from tests.conftest import TopicReader

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("variant", ["kafka-python", "producer in a child process",
                                     "librdkafka"])
def test_copy_loops_produce_one_result_per_record_keyed_and_headed_like_the_worker(
    broker: str, variant: str,
) -> None:
    loop = {"kafka-python": copy_loop, "producer in a child process": ceilings.split_copy_loop,
            "librdkafka": ceilings.librdkafka_copy_loop}[variant]
    if variant == "librdkafka":
        pytest.importorskip("confluent_kafka", reason="an optional benchmark client")
    backlog = [(f"b{i}-".encode(), b'{"text": "hi %d"}' % i) for i in range(300)]
    out = loop(broker, backlog, timeout_s=60)
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
