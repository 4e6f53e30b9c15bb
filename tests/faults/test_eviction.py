"""A member cut off from the broker for longer than the session timeout while a peer stays:
the group evicts it and gives its partitions to the peer; when the link is back it finds them
lost, drops their work without a commit and joins again. Nothing is lost."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TopicReader, http_get, poll_until
from tests.faults.harness import (
    Proxy,
    Stream,
    WorkerProcess,
    assert_order_kept,
    committed_offsets,
    outputs_by_partition,
    repeated_results,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_CUT_S = 20  # more than three session timeouts (6 s, harness.worker_settings)


def lagged_partitions(worker: WorkerProcess) -> set[int]:
    """The partitions a worker reports lag for: those it owns (read from its metrics)."""
    text = http_get(worker.url("/metrics"))[1]
    return {int(sample.labels["partition"])
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "streamclf_consumer_lag"}


def landed_late(records: list) -> int:
    """Repeated keys whose copies landed in the output in the opposite order to their
    classification (the earlier-classified copy second): a cut member's result, classified
    before its partitions were lost, that its producer sent once the link was back, after the
    new owner had published its own. (A key's copies share an output partition, so `records`
    holds them in the order they landed.)"""
    classified: dict[bytes, list[int]] = {}
    for record in records:
        classified.setdefault(record.key, []).append(json.loads(record.value)["classified_at_ms"])
    return sum(1 for times in classified.values() if len(times) > 1 and times != sorted(times))


def test_a_member_cut_off_past_the_session_timeout_is_evicted_and_rejoins(
        broker, topics, tmp_path):
    names = topics(partitions=4)
    group = "evict-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    stream = Stream(broker, names["input"], count=100_000, rate=100).start()
    reader = TopicReader(broker, names["output"])
    # Only the first member goes through the proxy; the second reaches the broker directly.
    first = WorkerProcess(proxy.bootstrap, names, group, log_dir=tmp_path, name="w1").start()
    second = WorkerProcess(broker, names, group, log_dir=tmp_path, name="w2")
    try:
        poll_until(lambda: first.metric("streamclf_assigned_partitions") == 4, timeout_s=120,
                   what="the first member's partitions")
        second.start()
        poll_until(lambda: second.status("/readyz") == 200
                   and first.metric("streamclf_assigned_partitions") == 2, timeout_s=120,
                   what="the partitions shared by two members")
        reader.wait_for(len(reader.read()) + 100, timeout_s=60)
        held_at_cut = lagged_partitions(first)
        assert len(held_at_cut) == 2, held_at_cut
        offsets_at_cut = committed_offsets(broker, group)
        proxy.stop()
        cut_at = time.monotonic()
        poll_until(lambda: second.metric("streamclf_assigned_partitions") == 4, timeout_s=_CUT_S,
                   what="the peer to take the silent member's partitions")
        evicted_s = time.monotonic() - cut_at
        poll_until(lambda: time.monotonic() - cut_at >= _CUT_S or not first.alive,
                   timeout_s=_CUT_S + 5, what="the end of the cut")
        assert first.alive, "the first member died during the cut"
        proxy.start()  # same port: the first member's bootstrap address comes back
        restored_at = time.monotonic()
        poll_until(lambda: first.metric("streamclf_assigned_partitions") == 2
                   and second.metric("streamclf_assigned_partitions") == 2
                   and first.status("/readyz") == 200, timeout_s=120,
                   what="the partitions shared again")
        shared_again_s = time.monotonic() - restored_at
        reader.wait_for(len(reader.read()) + 100, timeout_s=60)  # streaming on
        stream.stop()
        poll_until(lambda: set(stream.keys) <= {r.key.decode() for r in reader.read()},
                   timeout_s=180, what="every key")
    finally:
        codes = [member.terminate() if member.alive else None for member in (first, second)]
        proxy.stop()
    log = (tmp_path / "w1-1.log").read_text()
    counts = Counter(r.key.decode() for r in reader.records)
    resent, again = repeated_results(reader.records)
    repeated: dict[int, list[int]] = {}  # input offsets of repeated results, per partition
    for record in reader.records:
        if counts[record.key.decode()] > 1:
            source = json.loads(record.value)["source"]
            repeated.setdefault(source["partition"], []).append(source["offset"])
    repeated_partitions = set(repeated)
    spans = ", ".join(f"{p}: {min(o)}-{max(o)}" for p, o in sorted(repeated.items()))
    offsets = committed_offsets(broker, group)
    print(f"eviction: the peer owned every partition {evicted_s:.1f} s into the {_CUT_S} s cut, "
          f"shared again {shared_again_s:.1f} s after the restore; {len(stream.keys)} keys, "
          f"{sum(n - 1 for n in counts.values())} repeats ({resent} resent unchanged, {again} "
          f"classified again; {landed_late(reader.records)} keys landed after their new owner's "
          f"result) at offsets {{{spans}}} (the cut member held "
          f"{sorted(held_at_cut)}); group offsets at the cut {offsets_at_cut}, at the end "
          f"{offsets}; logs in {tmp_path}")
    assert codes == [0, 0]
    assert "partitions lost" in log, "the cut member never found its partitions lost"
    # Commits refused while the group re-joins are expected: one line per re-balance, not a
    # warning per try (there were dozens, every 0.3 s).
    assert not [line for line in log.splitlines()
                if "WARNING" in line and "RebalanceInProgressError" in line]
    assert log.count("commits wait for the group's re-balance") <= log.count("partitions ")
    assert set(counts) == set(stream.keys)
    # Every record got a result, so the last one read per partition ends its log. (The
    # embedded broker's own end offsets can lag its log: ListOffsets, not used here.)
    ends = {p: max(read) + 1 for p, read in outputs_by_partition(reader.records).items()}
    assert offsets == ends, "not everything was committed"
    assert_order_kept(reader.records)
    # Only what the cut member held can repeat: its uncommitted results, done again by the peer.
    assert repeated_partitions <= held_at_cut
    reader.close()
