"""Broker outages, a model slower than max_poll_interval_ms, output failures, shutdown under load
and backpressure on a large backlog — all against the real broker, the worker as a subprocess."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
from kafka import KafkaProducer

from tests.conftest import TopicReader, poll_until
from tests.faults.harness import (
    Proxy,
    Stream,
    WorkerProcess,
    committed_offsets,
    repeated_results,
)
from worker.kafka import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# After the drain deadline: the last commit and the client closes (at most 9 s, README), plus a
# few seconds for the process to exit on a busy machine.
_CLOSE_SLACK_S = 9 + 3


def test_broker_link_cut_and_restored(broker, topics, tmp_path):
    names = topics()
    group = "cut-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    stream = Stream(broker, names["input"], count=100_000, rate=100).start()
    reader = TopicReader(broker, names["output"])
    worker = WorkerProcess(proxy.bootstrap, names, group, log_dir=tmp_path).start()
    try:
        reader.wait_for(200, timeout_s=120)
        poll_until(lambda: worker.status("/readyz") == 200, what="ready before the cut")
        proxy.stop()
        cut_at = time.monotonic()
        cpu_before = worker.cpu_seconds()
        poll_until(lambda: worker.status("/readyz") == 503, timeout_s=30, what="503 in the cut")
        unready_after_s = time.monotonic() - cut_at
        # Stay cut for 20 s in all, checking the worker keeps running.
        poll_until(lambda: time.monotonic() - cut_at >= 20 or not worker.alive, timeout_s=30,
                   what="the end of the cut")
        assert worker.alive, "the worker died during the outage"
        cpu_share = (worker.cpu_seconds() - cpu_before) / (time.monotonic() - cut_at)
        proxy.start()  # same port: the worker's bootstrap address comes back
        restored_at = time.monotonic()
        poll_until(lambda: worker.status("/readyz") == 200, timeout_s=90, what="ready again")
        ready_again_s = time.monotonic() - restored_at
        reader.wait_for(len(reader.read()) + 100, timeout_s=120)  # streaming again
        stream.stop()
        poll_until(lambda: set(stream.keys) <= {r.key.decode() for r in reader.read()},
                   timeout_s=180, what="every key after the outage")
        errors = worker.metric("streamclf_produce_errors_total", {"topic": names["output"]})
        consumed = worker.metric("streamclf_messages_consumed_total")
    finally:
        code = worker.terminate()
        proxy.stop()
    assert code == 0
    counts = Counter(r.key.decode() for r in reader.read())
    assert set(counts) == set(stream.keys)
    # Where duplicates come from (docs/reliability.md): resent unchanged, the produce request in
    # flight at the cut; classified again, input read twice (with `consumed` above `sent`).
    resent, again = repeated_results(reader.read())
    print(f"link cut: readyz 503 after {unready_after_s:.1f} s, 200 again {ready_again_s:.1f} s "
          f"after restore; worker CPU during cut {cpu_share:.0%} of a core; "
          f"{sum(n - 1 for n in counts.values())} duplicates ({resent} resent unchanged, "
          f"{again} classified again); {consumed:.0f} records consumed of {len(stream.keys)} "
          f"sent; produce errors {errors:.0f}; worker log in {tmp_path}")
    assert cpu_share < 0.5, "the worker spins while the broker is away"
    reader.close()


def test_an_outage_longer_than_stuck_after_s_does_not_fail_liveness_once_it_ends(
        broker, topics, tmp_path):
    """The no-progress clock ran on through an outage: the first lag reading after it found lag
    and no commit for longer than stuck_after_s, and liveness failed at once (every pod of a
    deployment, restarted together just as the broker came back)."""
    names = topics()
    group = "outage-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    stream = Stream(broker, names["input"], count=100_000, rate=20).start()
    reader = TopicReader(broker, names["output"])
    # Batches of a second: after the outage the lag is read before the first commit. The cut
    # (14 s) is longer than stuck_after_s (8 s), which leaves the worker 8 s to reconnect.
    worker = WorkerProcess(proxy.bootstrap, names, group, slow_ms=1000, log_dir=tmp_path,
                           extra=("health.stuck_after_s=8", "kafka.lag_refresh_ms=200")).start()
    unhealthy: list[str] = []
    try:
        reader.wait_for(20, timeout_s=120)
        proxy.stop()
        cut_at = time.monotonic()
        poll_until(lambda: worker.status("/readyz") == 503, timeout_s=30, what="503 in the cut")
        poll_until(lambda: time.monotonic() - cut_at >= 14, timeout_s=20, what="a 14 s cut")
        proxy.start()
        restored_at = time.monotonic()
        done_before = len(reader.read())
        first_result_s: list[float] = []

        def caught_up() -> bool:
            if worker.status("/healthz") != 200:  # liveness: Kubernetes would restart it
                unhealthy.append(f"{time.monotonic() - restored_at:.1f} s after the restore")
            done = len(reader.read())
            if done > done_before and not first_result_s:
                first_result_s.append(time.monotonic() - restored_at)
            return done >= done_before + 60

        poll_until(caught_up, timeout_s=120, what="results after the outage")
    finally:
        stream.stop()
        code = worker.terminate()
        proxy.stop()
        reader.close()
    assert code == 0
    print(f"14 s outage: first result {first_result_s[0]:.1f} s after the restore")
    assert not unhealthy, f"liveness failed after the outage: {unhealthy[:3]}"


def test_slow_model_keeps_membership_and_pauses(broker, topics, tmp_path):
    names = topics()
    group = "slow-" + uuid.uuid4().hex[:6]
    an_hour_ago_ms = int(time.time() * 1000) - 3_600_000
    produce_backlog(broker, names["input"], 120, timestamp_ms=an_hour_ago_ms)
    reader = TopicReader(broker, names["output"])
    worker = WorkerProcess(
        broker, names, group, slow_ms=7000, log_dir=tmp_path,
        extra=("kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000, "
               "max_poll_interval_ms: 6000}",
               "batching.max_batch_size=40", "batching.max_in_flight=50",
               "health.stuck_after_s=3"),
    ).start()
    try:
        # Lag without a commit for longer than health.stuck_after_s: liveness says so...
        poll_until(lambda: worker.status("/healthz") == 503, timeout_s=60, what="stuck")
        # ...and the age of the oldest record not yet done is the records' age (an hour), read
        # from their timestamps, not from when the worker got them.
        oldest_age_s = max(worker.metric("streamclf_consumer_lag_seconds", {"partition": str(p)})
                           for p in range(3))
        reader.wait_for(120, timeout_s=120)
        # ...and recovers once the work is done and committed.
        poll_until(lambda: worker.status("/healthz") == 200, timeout_s=30, what="alive again")
        poll_until(lambda: worker.metric("streamclf_offsets_committed_total") >= 120,
                   what="all committed")
        # Everything done: no partition has a record waiting, so no age.
        poll_until(lambda: worker.metric("streamclf_consumer_lag_seconds") == 0,
                   timeout_s=10, what="lag seconds back to 0")
        rebalances = worker.metric("streamclf_rebalances_total")
        failures = worker.metric("streamclf_commit_failures_total")
        pauses = worker.metric("streamclf_pauses_total")
        batches = worker.metric("streamclf_inference_duration_seconds_count")
        slowest = worker.metric("streamclf_inference_duration_seconds_sum") / batches
    finally:
        assert worker.terminate() == 0
    print(f"slow model: {batches:.0f} batches of ~{slowest:.1f} s each; {rebalances:.0f} "
          f"rebalance events, {failures:.0f} commit failures, {pauses:.0f} pauses; oldest "
          f"record not done while stuck {oldest_age_s:.0f} s old")
    assert 3_600 <= oldest_age_s < 3_600 + 120
    assert slowest > 6.0, "each batch took longer than max_poll_interval_ms"
    assert rebalances == 1, "only the first assignment: the membership survived"
    assert failures == 0
    assert pauses >= 1
    assert Counter(r.key for r in reader.read()) == Counter(
        f"b{i}".encode() for i in range(120))
    reader.close()


def worker_with_output_cut(broker: str, names: dict[str, str], group: str, tmp_path,
                           proxy: Proxy, producer_extra: str = "",
                           delivery_timeout_ms: int = 4000,
                           extra: tuple[str, ...] = ()) -> WorkerProcess:
    """A ready worker whose producer (short timeouts) goes through *proxy*, and the proxy cut."""
    producer_settings = (f"kafka.producer={{bootstrap_servers: [{proxy.bootstrap}], "
                         f"{producer_extra}request_timeout_ms: 2000, "
                         f"delivery_timeout_ms: {delivery_timeout_ms}, max_block_ms: 2000}}")
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path,
                           extra=(producer_settings,
                                  "kafka.produce_retry_max_backoff_ms=2000", *extra)).start()
    try:
        poll_until(lambda: worker.status("/readyz") == 200, timeout_s=60, what="ready")
    except BaseException:
        worker.terminate()
        proxy.stop()
        raise
    proxy.stop()
    return worker


def produce_backlog(broker: str, topic: str, count: int, text: str = "see you at noon",
                    timestamp_ms: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=broker, linger_ms=20, batch_size=256 * 1024)
    for i in range(count):
        producer.send(topic, key=f"b{i}".encode(),
                      value=json.dumps({"id": f"b{i}", "text": f"{text} {i}"}).encode(),
                      timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def test_results_too_large_for_the_output_become_dead_letters(broker, topics, tmp_path):
    names = topics()
    group = "large-" + uuid.uuid4().hex[:6]
    producer = KafkaProducer(bootstrap_servers=broker)
    big_header = [("blob", b"h" * 20_000)]
    producer.send(names["input"], key=b"fat-headers", headers=big_header,
                  value=b'{"id": "fat", "text": "hello there"}')
    producer.send(names["input"], key=b"normal", value=b'{"id": "n", "text": "hello"}')
    producer.flush()
    producer.close()
    reader = TopicReader(broker, names["output"], names["dlq"])
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path,
                           extra=("kafka.producer={max_request_size: 10000}",)).start()
    try:
        records = reader.wait_for(2, timeout_s=120)
        poll_until(lambda: worker.metric("streamclf_offsets_committed_total") >= 2,
                   what="both committed")
        errors = worker.metric("streamclf_produce_errors_total")
    finally:
        assert worker.terminate() == 0
    where = {r.key: r for r in records}
    assert where[b"normal"].topic == names["output"]
    letter = where[b"fat-headers"]
    assert letter.topic == names["dlq"]
    headers = dict(letter.headers)
    assert headers["streamclf-error"] == b"output_too_large"
    assert headers["streamclf-headers-dropped"] == b"1"  # the input's headers did not fit
    assert "blob" not in headers
    assert errors >= 2
    reader.close()


def test_a_result_too_large_is_done_only_once_its_dead_letter_is_acknowledged(
        broker, topics, tmp_path):
    """The producer refuses the result at once (client-side size check); the dead letter that
    replaces it goes to a cut link. Until the link is back and the dead letter acknowledged,
    the record stays in flight and its offset uncommitted; it never counts as classified."""
    names = topics()
    group = "large-cut-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    reader = TopicReader(broker, names["dlq"])
    worker = worker_with_output_cut(broker, names, group, tmp_path, proxy,
                                    "max_request_size: 10000, ")
    try:
        producer = KafkaProducer(bootstrap_servers=broker)
        producer.send(names["input"], key=b"fat-headers", headers=[("blob", b"h" * 20_000)],
                      value=b'{"id": "fat", "text": "hello there"}')
        producer.flush()
        producer.close()
        # The result is refused, then the dead letter fails on the cut link (delivery timeout).
        poll_until(lambda: worker.metric("streamclf_produce_errors_total",
                                         {"topic": names["dlq"]}) >= 1,
                   timeout_s=60, what="the dead letter failing while cut")
        assert worker.metric("streamclf_produce_errors_total", {"topic": names["output"]}) >= 1
        assert worker.metric("streamclf_in_flight_messages") == 1
        assert worker.metric("streamclf_messages_classified_total") == 0
        assert sum(committed_offsets(broker, group).values()) == 0
        proxy.start()
        letters = reader.wait_for(1, timeout_s=120)
        poll_until(lambda: sum(committed_offsets(broker, group).values()) >= 1,
                   timeout_s=60, what="committed once the dead letter is acknowledged")
        dead = worker.metric("streamclf_messages_dead_lettered_total",
                             {"reason": "output_too_large"})
        classified = worker.metric("streamclf_messages_classified_total")
    finally:
        code = worker.terminate()
        proxy.stop()
    assert code == 0
    assert letters[0].key == b"fat-headers"
    assert dict(letters[0].headers)["streamclf-error"] == b"output_too_large"
    assert dead == 1 and classified == 0
    reader.close()


def test_a_routed_result_too_large_for_both_topics_makes_one_dead_letter(broker, topics,
                                                                         tmp_path):
    names = topics()
    routed = names["output"] + "-routed"
    ensure_topics(broker, [routed], partitions=3)
    group = "large-routed-" + uuid.uuid4().hex[:6]
    producer = KafkaProducer(bootstrap_servers=broker)
    producer.send(names["input"], key=b"fat-headers", headers=[("blob", b"h" * 20_000)],
                  value=b'{"id": "fat", "text": "hello there"}')
    producer.send(names["input"], key=b"normal", value=b'{"id": "n", "text": "hello"}')
    producer.flush()
    producer.close()
    reader = TopicReader(broker, names["output"], routed, names["dlq"])
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path,
                           extra=("kafka.producer={max_request_size: 10000}",
                                  f"output.routes={{ham: {routed}, spam: {routed}}}")).start()
    try:
        reader.wait_for(3, timeout_s=120)  # the normal result twice, one dead letter
        poll_until(lambda: worker.metric("streamclf_offsets_committed_total") >= 2,
                   what="both committed")
        dead = worker.metric("streamclf_messages_dead_lettered_total")
        records = reader.read()
    finally:
        assert worker.terminate() == 0
    topics_of = Counter((r.key, r.topic) for r in records)
    assert topics_of == {(b"normal", names["output"]): 1, (b"normal", routed): 1,
                         (b"fat-headers", names["dlq"]): 1}
    assert dead == 1
    reader.close()


def test_drain_deadline_with_the_output_away_still_exits_0(broker, topics, tmp_path):
    """SIGTERM while no result can be acknowledged: the drain gives up at its deadline, commits
    nothing it should not, and exits 0 (the records are classified again after a restart)."""
    names = topics()
    group = "drain-cut-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    producer_settings = (f"kafka.producer={{bootstrap_servers: [{proxy.bootstrap}], "
                         "request_timeout_ms: 30000, delivery_timeout_ms: 60000}")
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path,
                           extra=(producer_settings, "shutdown.drain_timeout_s=3")).start()
    try:
        poll_until(lambda: worker.status("/readyz") == 200, timeout_s=60, what="ready")
        proxy.stop()
        produce_backlog(broker, names["input"], 50)
        poll_until(lambda: worker.metric("streamclf_messages_consumed_total") >= 50,
                   what="consumed")
        code = worker.terminate(timeout_s=30)
    finally:
        proxy.stop()
    log = (tmp_path / "worker-1.log").read_text()
    assert code == 0, log[-2000:]
    assert "drain deadline reached: 50 records not acknowledged" in log
    assert sum(committed_offsets(broker, group).values()) == 0


def test_output_outage_never_commits_past_unacknowledged(broker, topics, tmp_path):
    """Only the producer goes through a proxy: while it is cut the worker still consumes and
    could commit, but no offset moves until the results are acknowledged; then it recovers."""
    names = topics()
    group = "outage-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    reader = TopicReader(broker, names["output"])
    worker = worker_with_output_cut(broker, names, group, tmp_path, proxy)
    try:
        produce_backlog(broker, names["input"], 300)
        poll_until(lambda: worker.metric("streamclf_messages_consumed_total",
                                         {"topic": names["input"]}) >= 300, what="consumed")
        poll_until(lambda: worker.metric("streamclf_produce_errors_total",
                                         {"topic": names["output"]}) >= 2,
                   timeout_s=60, what="produce errors while cut")
        assert sum(committed_offsets(broker, group).values()) == 0
        assert worker.metric("streamclf_in_flight_messages") == 300
        assert len(reader.read()) == 0
        assert worker.alive
        proxy.start()
        reader.wait_for(300, timeout_s=120)
        poll_until(lambda: sum(committed_offsets(broker, group).values()) >= 300,
                   timeout_s=60, what="offsets caught up")
        errors = worker.metric("streamclf_produce_errors_total", {"topic": names["output"]})
    finally:
        code = worker.terminate()
        proxy.stop()
    assert code == 0
    counts = Counter(r.key for r in reader.read())
    assert set(counts) == {f"b{i}".encode() for i in range(300)}
    print(f"output outage: {errors:.0f} produce errors retried, "
          f"{sum(counts.values()) - 300} duplicates, offsets held until acknowledged")
    reader.close()


def test_the_producer_delivers_again_after_the_broker_was_silent_past_the_delivery_timeout(
        broker, topics, tmp_path):
    """A broker that stops answering (hung, or a network partition that keeps connections
    open) while produce requests are out. Once their batches expired, kafka-python's idempotent
    producer (the worker's client default before) dropped its producer id and never asked for a
    new one, or asked the silent broker, timed out and turned fatal: either way, after the broker
    was back it delivered nothing, and the worker held those records until liveness restarted it
    (health.stuck_after_s later). Here the producer's proxy is frozen (SIGSTOP), not cut."""
    import signal

    names = topics()
    group = "silent-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    reader = TopicReader(broker, names["output"])
    producer_settings = (f"kafka.producer={{bootstrap_servers: [{proxy.bootstrap}], "
                         "request_timeout_ms: 1500, delivery_timeout_ms: 3000, "
                         "max_block_ms: 2000}")
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path,
                           extra=(producer_settings,
                                  "kafka.produce_retry_max_backoff_ms=1000")).start()
    assert proxy.process is not None
    try:
        produce_backlog(broker, names["input"], 100)
        reader.wait_for(100, timeout_s=120)  # the producer has its id
        proxy.process.send_signal(signal.SIGSTOP)
        try:
            produce_backlog(broker, names["input"], 200, text="sent while the broker is silent")
            poll_until(lambda: worker.metric("streamclf_produce_errors_total",
                                             {"topic": names["output"]}) >= 1,
                       timeout_s=60, what="a batch expired while the broker was silent")
            # The outage goes on past the client's request timeout (1.5 s): a producer that
            # asks the silent broker for a new producer id meanwhile has that request time out.
            time.sleep(4)
        finally:
            proxy.process.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        poll_until(lambda: sum(committed_offsets(broker, group).values()) >= 300,
                   timeout_s=60, what="every record acknowledged and committed after the silence")
        recovered_s = time.monotonic() - resumed_at
        errors = worker.metric("streamclf_produce_errors_total", {"topic": names["output"]})
        assert worker.alive
    finally:
        code = worker.terminate()
        proxy.stop()
    assert code == 0
    keys = {r.key for r in reader.read()}
    assert {f"b{i}".encode() for i in range(200)} <= keys
    print(f"silent broker: recovered {recovered_s:.1f} s after it answered again, "
          f"{errors:.0f} produce errors retried")
    reader.close()


def test_results_keep_input_order_when_sends_time_out_before_they_are_queued(
        broker, topics, tmp_path):
    """The producer cut before it knows the output topic: each send times out after
    max_block_ms before the record is queued. Those sends are retried in place, so later
    results of the same input partition cannot overtake them (before, they went to a retry
    list and later results went out first: input offsets 2, 6, 0, 1 on one output partition)."""
    names = topics()
    # An output topic made only once the producer is cut, so it has no metadata for it.
    names["output"] = "out-later-" + uuid.uuid4().hex[:8]
    group = "order-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    # No delivery timeout within the test: only sends that time out before queueing fail.
    worker = worker_with_output_cut(broker, names, group, tmp_path, proxy,
                                    delivery_timeout_ms=120_000)
    try:
        ensure_topics(broker, [names["output"]], partitions=3)
        reader = TopicReader(broker, names["output"])
        produce_backlog(broker, names["input"], 60)
        poll_until(lambda: worker.metric("streamclf_produce_errors_total",
                                         {"topic": names["output"]}) >= 2,
                   timeout_s=60, what="sends timing out while cut")
        proxy.start()
        reader.wait_for(60, timeout_s=120)
    finally:
        code = worker.terminate()
        proxy.stop()
    assert code == 0
    seen: dict[tuple[int, int], list[int]] = {}  # (output, input partition) -> input offsets
    firsts = set()
    for record in sorted(reader.read(), key=lambda r: (r.partition, r.offset)):
        source = json.loads(record.value)["source"]
        if (source["partition"], source["offset"]) in firsts:
            continue  # a duplicate (at least once): order is about first deliveries
        firsts.add((source["partition"], source["offset"]))
        seen.setdefault((record.partition, source["partition"]), []).append(source["offset"])
    assert len(firsts) == 60
    for offsets in seen.values():
        assert offsets == sorted(offsets), offsets
    reader.close()


def test_dead_letters_the_broker_cannot_take_do_not_hold_the_main_loop(broker, topics,
                                                                         tmp_path):
    """Dead letters were sent from the main loop, where each send to a topic whose metadata
    the producer lacks blocks for max_block_ms (2 s here): 20 of them held the loop, and the
    SIGTERM, for 40 s. Now the publisher sends them and the drain ends at its deadline."""
    names = topics()
    group = "blocked-" + uuid.uuid4().hex[:6]
    proxy = Proxy(broker).start()
    worker = worker_with_output_cut(broker, names, group, tmp_path, proxy,
                                    extra=("shutdown.drain_timeout_s=3",))
    try:
        producer = KafkaProducer(bootstrap_servers=broker)
        for i in range(20):
            producer.send(names["input"], key=f"blank{i}".encode(), value=b"   ")
        producer.flush()
        producer.close()
        poll_until(lambda: worker.metric("streamclf_messages_consumed_total",
                                         {"topic": names["input"]}) >= 20, what="consumed")
        started = time.monotonic()
        code = worker.terminate(timeout_s=90)
        took = time.monotonic() - started
    finally:
        proxy.stop()
    print(f"dead letters blocked: exit {code} after {took:.1f} s")
    assert code == 0
    assert took < 3 + _CLOSE_SLACK_S, "the drain ended at its deadline (not after 40 s)"
    assert sum(committed_offsets(broker, group).values()) == 0  # none acknowledged: none done


def test_sigterm_during_a_full_batch_drains_within_the_deadline(broker, topics, tmp_path):
    names = topics()
    group = "drain-" + uuid.uuid4().hex[:6]
    produce_backlog(broker, names["input"], 200)
    reader = TopicReader(broker, names["output"])
    worker = WorkerProcess(broker, names, group, slow_ms=2000, log_dir=tmp_path,
                           extra=("batching.max_batch_size=100", "shutdown.drain_timeout_s=10"),
                           ).start()
    poll_until(lambda: worker.metric("streamclf_in_flight_messages") >= 100,
               timeout_s=60, what="a full batch in flight")
    started = time.monotonic()
    code = worker.terminate(timeout_s=30)
    took = time.monotonic() - started
    assert code == 0
    results = {r.key for r in reader.read()}
    committed = sum(committed_offsets(broker, group).values())
    print(f"drain: exit {code} after {took:.1f} s, {len(results)} results, {committed} committed")
    assert took < 10 + _CLOSE_SLACK_S, "drained within the deadline"
    assert committed >= 100 and len(results) >= committed
    reader.close()


def test_a_forward_pass_running_past_the_drain_deadline_does_not_hold_the_exit(
        broker, topics, tmp_path):
    names = topics()
    group = "hung-" + uuid.uuid4().hex[:6]
    produce_backlog(broker, names["input"], 50)
    # Forward passes of 30 s on two lanes (thread-pool threads, which the interpreter waits for
    # at exit) against a 2 s drain deadline: before, the process exited when the pass ended.
    worker = WorkerProcess(broker, names, group, slow_ms=30_000, log_dir=tmp_path,
                           extra=("model.lanes=2", "shutdown.drain_timeout_s=2")).start()
    poll_until(lambda: worker.metric("streamclf_inference_duration_seconds_count") == 0
               and worker.metric("streamclf_in_flight_messages") >= 50,
               timeout_s=60, what="records in flight, no batch finished")
    started = time.monotonic()
    code = worker.terminate(timeout_s=60)
    took = time.monotonic() - started
    print(f"hung forward pass: exit {code} after {took:.1f} s")
    assert code == 0
    assert took < 2 + _CLOSE_SLACK_S, "exited at the drain deadline, not after the 30 s pass"
    assert sum(committed_offsets(broker, group).values()) == 0  # nothing was done


def test_backpressure_keeps_memory_flat_on_a_large_backlog(broker, topics, tmp_path):
    names = topics()
    group = "backlog-" + uuid.uuid4().hex[:6]
    produce_backlog(broker, names["input"], 200_000, text="short message")
    worker = WorkerProcess(broker, names, group, slow_ms=20, log_dir=tmp_path,
                           extra=("batching.max_in_flight=1000",)).start()
    try:
        poll_until(lambda: worker.metric("streamclf_offsets_committed_total") >= 2000,
                   timeout_s=120, what="steady draining")
        samples = []
        for _ in range(8):
            committed = worker.metric("streamclf_offsets_committed_total")
            poll_until(lambda c=committed: worker.metric(
                "streamclf_offsets_committed_total") >= c + 1500, timeout_s=60, what="progress")
            samples.append((worker.rss_bytes(), worker.metric("streamclf_in_flight_messages")))
        lag = sum(worker.metric("streamclf_consumer_lag", {"partition": str(p)})
                  for p in range(3))
        done = sum(committed_offsets(broker, group).values())
        pauses = worker.metric("streamclf_pauses_total")
    finally:
        assert worker.terminate() == 0
    rss = [r for r, _ in samples]
    print(f"backlog: RSS {min(rss) / 2**20:.0f}-{max(rss) / 2**20:.0f} MiB over "
          f"{len(samples)} samples, in flight ≤ {max(i for _, i in samples):.0f}, "
          f"lag metric {lag:.0f} vs broker {200_000 - done}, pauses {pauses:.0f}")
    assert max(i for _, i in samples) <= 1000 + 500  # max_in_flight plus one poll
    assert max(rss) - min(rss) < 64 * 2**20, "memory grows with the backlog"
    assert pauses >= 1
    # The worker's lag (end offset − next offset to commit) matches the broker's view within
    # what it drains between the two readings and one lag refresh.
    assert abs(lag - (200_000 - done)) < 5000
