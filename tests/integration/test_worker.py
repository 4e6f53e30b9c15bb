"""The worker against the real broker: results, dead letters, metrics, probes, restarts."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from tests.conftest import TopicReader, http_get, metric_value, poll_until, results_by_key
from worker.app import Worker
from worker.broker import free_port
from worker.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HAM = "Hi Sam, the quarterly report is attached; can we review it on Monday morning?"
SPAM = "WINNER!! You have won a FREE cash prize of $1000. Call 0800 123 now to claim!"


def settings(broker: str, names: dict[str, str], port: int, group: str | None = None) -> list[str]:
    return [
        f"kafka.bootstrap_servers={broker}",
        f"kafka.input_topics=[{names['input']}]",
        f"kafka.output_topic={names['output']}",
        f"kafka.dlq_topic={names['dlq']}",
        f"kafka.group_id={group or 'g-' + uuid.uuid4().hex[:8]}",
        "kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000}",
        "metrics.host=127.0.0.1",
        f"metrics.port={port}",
        "model.threads=1",
        "batching.max_wait_ms=10",
    ]


class RunningWorker:
    """A worker in a thread of the test process, with its own metrics port."""

    def __init__(self, broker: str, names: dict[str, str], group: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        config = load_config(None, [*settings(broker, names, self.port, group), *extra],
                             environ={})
        self.worker = Worker(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.exit_code: int | None = None

    def _run(self) -> None:
        self.exit_code = self.worker.run()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> RunningWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "worker did not stop"


def produce(broker: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
            headers: list | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=broker, max_request_size=16 * 1024 * 1024)
    for key, value in records:
        producer.send(topic, key=key, value=value, headers=headers or [])
    producer.flush()
    producer.close()


def keyed_messages(n: int, prefix: str = "m") -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}{i}".encode(),
         json.dumps({"id": f"{prefix}{i}", "text": SPAM if i % 2 else HAM}).encode())
        for i in range(n)
    ]


def test_every_keyed_message_gets_exactly_one_result(broker, topics):
    names = topics()
    n = 300
    produce(broker, names["input"], keyed_messages(n), headers=[("trace-id", b"t-1")])
    reader = TopicReader(broker, names["output"])
    with RunningWorker(broker, names) as running:
        records = reader.wait_for(n)
        poll_until(lambda: metric_value(http_get(running.url("/metrics"))[1],
                                        "streamclf_offsets_committed_total") >= n,
                   what="offsets committed")
    assert running.exit_code == 0
    assert len(records) == n
    results = results_by_key(records)
    assert set(results) == {f"m{i}".encode() for i in range(n)}
    for key, result in results.items():
        assert result["id"] == key.decode()
        assert result["label"] in ("ham", "spam")
        assert set(result["scores"]) == {"ham", "spam"}
        assert result["score"] == result["scores"][result["label"]]
        assert result["source"]["topic"] == names["input"]
    # Keyed as any Kafka client keys: the partition the Java client's partitioner picks.
    assert {r.partition for r in records} == {0, 1, 2}
    for r in records:
        assert r.partition == (kafka_python_murmur2(r.key) & 0x7FFFFFFF) % 3, r.key
    headers = dict(records[0].headers)
    assert headers["trace-id"] == b"t-1"
    assert headers["streamclf-label"].decode() == results[records[0].key]["label"]
    # The bundled model tells these two apart.
    assert results[b"m1"]["label"] == "spam" and results[b"m0"]["label"] == "ham"
    reader.close()


@pytest.mark.parametrize("lanes", [1, 2])
def test_results_keep_input_order_per_partition(broker, topics, lanes):
    names = topics(partitions=1)
    produce(broker, names["input"], keyed_messages(200, "o"))
    reader = TopicReader(broker, names["output"])
    with RunningWorker(broker, names, extra=(f"model.lanes={lanes}",)):
        records = reader.wait_for(200)
    offsets = [json.loads(r.value)["source"]["offset"] for r in records]
    assert offsets == sorted(offsets)
    reader.close()


HOSTILE = [
    (b"tombstone", None, "empty"),
    (b"empty", b"", "empty"),
    (b"truncated", b'{"id": "t", "text": "cut off', "decode"),
    (b"array", b"[1, 2, 3]", "decode"),
    (b"number-text", b'{"id": "n", "text": 42}', "decode"),
    (b"bad-utf8", b"\xff\xfe\xfa not utf-8", "decode"),
    (b"huge", b"x" * 2_500_000, "too_large"),
]


def test_malformed_records_go_to_the_dead_letter_topic(broker, topics):
    names = topics()
    good = keyed_messages(20, "g")
    hostile = [(key, value) for key, value, _ in HOSTILE]
    produce(broker, names["input"], good + hostile + [(None, b" ")],
            headers=[("origin", b"test")])
    outputs = TopicReader(broker, names["output"])
    dead = TopicReader(broker, names["dlq"])
    with RunningWorker(broker, names, extra=("input.max_bytes=2000000",)) as running:
        # The last record (no key, a blank value) is a dead letter too.
        letters = dead.wait_for(len(HOSTILE) + 1)
        results = outputs.wait_for(len(good))
        poll_until(lambda: metric_value(http_get(running.url("/metrics"))[1],
                                        "streamclf_offsets_committed_total") >= 28,
                   what="offsets committed past the dead letters")
    assert {r.key for r in results} == {key for key, _ in good}
    by_key = {r.key: r for r in letters}
    for key, value, reason in HOSTILE:
        headers = dict(by_key[key].headers)
        assert headers["streamclf-error"].decode() == reason, key
        assert headers["streamclf-error-detail"]
        assert headers["origin"] == b"test"
        assert headers["streamclf-source"].decode().startswith(names["input"] + ":")
        if value is not None:  # too_large too: the producer's limit follows input.max_bytes
            assert by_key[key].value == value, key
            assert "streamclf-value-dropped" not in headers, key
    assert len(letters) == len(HOSTILE) + 1
    outputs.close()
    dead.close()


class _NotUtf8HeaderKey(str):
    """A header key kafka-python's producer writes as bytes that are not UTF-8, as other
    clients can; kafka-python's consumer then cannot parse the record at all."""

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"\xff\xfe-key"


def test_a_record_the_client_cannot_parse_is_dead_lettered_and_the_partition_goes_on(
        broker, topics):
    names = topics(partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker)
    producer.send(names["input"], key=b"before", value=HAM.encode()).get(timeout=30)
    producer.send(names["input"], key=b"bad", value=SPAM.encode(),
                  headers=[(_NotUtf8HeaderKey("x"), b"v")]).get(timeout=30)
    producer.send(names["input"], key=b"after", value=SPAM.encode()).get(timeout=30)
    producer.close()
    outputs = TopicReader(broker, names["output"])
    dead = TopicReader(broker, names["dlq"])
    # Before, kafka-python raised at the record once and then spun inside every later poll:
    # the worker stopped, "before" included, and did not even stop on SIGTERM.
    with RunningWorker(broker, names) as running:
        results = outputs.wait_for(2)
        (letter,) = dead.wait_for(1)
        poll_until(lambda: metric_value(http_get(running.url("/metrics"))[1],
                                        "streamclf_offsets_committed_total") >= 3,
                   what="offsets committed past the unreadable record")
    assert [r.key for r in results] == [b"before", b"after"]
    headers = dict(letter.headers)
    assert headers["streamclf-error"] == b"decode"
    assert headers["streamclf-source"] == f"{names['input']}:0:1".encode()
    assert b"cannot read" in headers["streamclf-error-detail"]
    outputs.close()
    dead.close()


def test_an_id_with_a_lone_surrogate_gets_its_result_and_so_do_later_records(broker, topics):
    """JSON allows "\\ud800" in a string, UTF-8 does not: the result carries the same escape, and
    the records after it are published as usual."""
    names = topics(partitions=1)
    odd = b'{"id": "odd-\\ud800", "text": "see you at noon"}'
    produce(broker, names["input"], [(b"odd", odd), *keyed_messages(5, "after")])
    outputs = TopicReader(broker, names["output"])
    with RunningWorker(broker, names):
        results = outputs.wait_for(6)
    by_key = results_by_key(results)
    assert by_key[b"odd"]["id"] == "odd-\ud800"
    assert b"odd-\\ud800" in next(r.value for r in results if r.key == b"odd")
    assert {f"after{i}".encode() for i in range(5)} <= set(by_key)
    outputs.close()


def test_metrics_count_what_was_sent(broker, topics):
    names = topics()
    good = keyed_messages(50, "c")
    produce(broker, names["input"], good + [(b"bad", b"{\"nope")])
    with RunningWorker(broker, names) as running:
        def counted():
            text = http_get(running.url("/metrics"))[1]
            classified = (metric_value(text, "streamclf_messages_classified_total",
                                       {"label": "spam"})
                          + metric_value(text, "streamclf_messages_classified_total",
                                         {"label": "ham"}))
            return text if classified == 50 and metric_value(
                text, "streamclf_offsets_committed_total") == 51 else None

        text = poll_until(counted, what="all records counted")
    assert metric_value(text, "streamclf_messages_consumed_total",
                        {"topic": names["input"]}) == 51
    assert metric_value(text, "streamclf_messages_dead_lettered_total", {"reason": "decode"}) == 1
    assert metric_value(text, "streamclf_batch_size_count") >= 1
    assert metric_value(text, "streamclf_batch_size_sum") == 50
    assert metric_value(text, "streamclf_end_to_end_latency_seconds_count") == 50
    assert metric_value(text, "streamclf_in_flight_messages") == 0
    assert metric_value(text, "streamclf_rebalances_total") >= 1
    assert metric_value(text, "streamclf_model_info") == 1


def test_offsets_committed_counts_the_commits_made_as_partitions_are_revoked(broker, topics):
    """The commits the re-balance listener sends for revoked partitions count too: between
    them, the two members' counters cover every record exactly once."""
    names = topics()  # three partitions
    n = 90
    produce(broker, names["input"], keyed_messages(n, "r"))
    group = "g-" + uuid.uuid4().hex[:8]
    reader = TopicReader(broker, names["output"])
    # No timed commits: what the first member has done is committed as partitions leave it.
    slow_commits = ("kafka.commit_interval_ms=600000",)
    first = RunningWorker(broker, names, group, slow_commits)
    second = RunningWorker(broker, names, group, slow_commits)

    def counted(running: RunningWorker) -> float:
        return running.worker.metrics.registry.get_sample_value(
            "streamclf_offsets_committed_total") or 0.0

    def assigned(running: RunningWorker) -> float:
        return running.worker.metrics.registry.get_sample_value(
            "streamclf_assigned_partitions") or 0.0

    try:
        with first:
            reader.wait_for(n)
            second.__enter__()
            poll_until(lambda: assigned(second) >= 1 and assigned(first) + assigned(second) == 3,
                       what="the partitions shared by the two members")
            poll_until(lambda: counted(first) > 0, timeout_s=20,
                       what="the commit of the revoked partitions counted")
        # The first member's drain committed the rest; the second takes its partitions over.
        poll_until(lambda: assigned(second) == 3, what="the second member owning every partition")
        consumer = KafkaConsumer(bootstrap_servers=broker, group_id=group,
                                 enable_auto_commit=False)
        try:
            committed = {p: consumer.committed(TopicPartition(names["input"], p))
                         for p in range(3)}
        finally:
            consumer.close()
    finally:
        second.__exit__()
        reader.close()
    assert sum(committed.values()) == n, committed
    assert counted(first) + counted(second) == n


def test_records_of_a_committed_transaction_leave_no_lag(broker, topics):
    """A transaction's commit marker takes an offset that no poll returns. Before, the worker
    committed the offset after the last record it was given: a lag of 1 for good, /healthz
    failing after stuck_after_s of quiet, and KEDA never scaling down."""
    from kafka.admin import KafkaAdminClient
    from kafka.consumer import KafkaConsumer

    names = topics(partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker, transactional_id=f"tx-{uuid.uuid4().hex}")
    producer.init_transactions()
    producer.begin_transaction()
    for key, value in keyed_messages(3, "t"):
        producer.send(names["input"], key=key, value=value)
    producer.commit_transaction()
    producer.close()
    probe = KafkaConsumer(bootstrap_servers=broker)
    end = probe.end_offsets([tp := TopicPartition(names["input"], 0)])[tp]
    probe.close()
    assert end == 4, "three records and the transaction's commit marker"

    group = "tx-" + uuid.uuid4().hex[:6]
    reader = TopicReader(broker, names["output"])
    with RunningWorker(broker, names, group, ("kafka.lag_refresh_ms=200",)) as running:
        reader.wait_for(3, timeout_s=60)

        def committed() -> int:
            admin = KafkaAdminClient(bootstrap_servers=broker)
            try:
                offsets = admin.list_group_offsets(group).get(group, {})
            finally:
                admin.close()
            return max((m.offset for m in offsets.values()), default=-1)

        poll_until(lambda: committed() == end, what="the marker's offset committed")
        poll_until(lambda: metric_value(http_get(running.url("/metrics"))[1],
                                        "streamclf_consumer_lag",
                                        {"topic": names["input"], "partition": "0"}) == 0,
                   what="lag 0")
    reader.close()


def test_readyz_is_503_before_assignment_and_200_after(broker, topics):
    names = topics()
    port = free_port()
    group = "ready-" + uuid.uuid4().hex[:6]
    config = load_config(None, settings(broker, names, port, group), environ={})
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    # With the model loaded and the broker answering, readiness waits for the group join
    # (about half the session timeout here), and says so.
    def waiting_for_partitions() -> tuple[int, str] | None:
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        return (status, body) if "no partitions assigned" in body else None

    before = poll_until(waiting_for_partitions, what="readyz: no partitions assigned")
    poll_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="ready")
    assert worker.health.assigned
    worker.stop()
    thread.join(timeout=60)
    assert before[0] == 503


def run_cli(broker: str, names: dict[str, str], group: str, port: int,
            extra: tuple[str, ...] = ()) -> subprocess.Popen:
    args = [sys.executable, "-m", "worker", "run"]
    for item in [*settings(broker, names, port, group), *extra]:
        args += ["--set", item]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_a_worker_waiting_for_an_absent_broker_stays_alive():
    """Started while no broker listens, the worker retries with backoff: /healthz stays 200 (a
    liveness probe must not restart it for that) while /readyz says 503."""
    names = {"input": "in", "output": "out", "dlq": "dlq"}
    with RunningWorker(f"127.0.0.1:{free_port()}", names) as running:
        health = running.worker.health
        health.loop_deadline_s = 3.0  # instead of 60 s, to keep the test short
        poll_until(lambda: "broker unreachable" in http_get(running.url("/readyz"))[1],
                   what="a failed connection attempt")
        watch_until = time.monotonic() + 3 * health.loop_deadline_s
        while time.monotonic() < watch_until:
            assert http_get(running.url("/healthz"))[0] == 200, "dead while retrying"
            assert http_get(running.url("/readyz"))[0] == 503
            time.sleep(0.2)  # sampling interval of the probes, not a synchronisation
        assert health.connecting and running.thread.is_alive()  # still retrying


def test_restart_after_sigterm_resumes_without_reprocessing(broker, topics):
    names = topics()
    group = "restart-" + uuid.uuid4().hex[:6]
    reader = TopicReader(broker, names["output"])
    first, second = keyed_messages(60, "a"), keyed_messages(40, "b")

    port = free_port()
    produce(broker, names["input"], first)
    process = run_cli(broker, names, group, port)
    reader.wait_for(60, timeout_s=120)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b"drained" in stderr

    produce(broker, names["input"], second)
    port = free_port()
    process = run_cli(broker, names, group, port)
    try:
        reader.wait_for(100, timeout_s=120)
        poll_until(lambda: metric_value(http_get(f"http://127.0.0.1:{port}/metrics")[1],
                                        "streamclf_offsets_committed_total") >= 40,
                   what="second run committed")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    keys = [r.key for r in reader.read()]
    assert len(keys) == 100, "the restarted worker reprocessed committed records"
    assert set(keys) == {k for k, _ in first + second}
    reader.close()


def run_cli_until(broker: str, names: dict[str, str], group: str, reader: TopicReader,
                  count: int, extra: tuple[str, ...]) -> bytes:
    """`streamclf run` until the output holds `count` records, then SIGTERM; its stderr."""
    process = run_cli(broker, names, group, free_port(), extra)
    try:
        reader.wait_for(count, timeout_s=120)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    return stderr


def test_sigterm_mid_stream_drains_what_the_decoding_processes_hold(broker, topics):
    """SIGTERM while records wait in decoding processes: the worker finishes them, commits and
    exits 0; a restart carries on from there, with nothing lost and nothing classified twice."""
    names = topics()
    group = "drain-" + uuid.uuid4().hex[:6]
    messages = keyed_messages(3000, "s")
    produce(broker, names["input"], messages)
    reader = TopicReader(broker, names["output"])
    extra = ("input.decode_processes=2",)
    stderr = run_cli_until(broker, names, group, reader, 100, extra)
    assert b"drained: every record acknowledged" in stderr, stderr.decode()[-2000:]
    first_run = len(reader.read())
    run_cli_until(broker, names, group, reader, 3000, extra)
    keys = [r.key for r in reader.read()]
    assert first_run < 3000, "the first run was stopped mid-stream"
    assert sorted(keys) == sorted(k for k, _ in messages), "a record lost or classified twice"
    reader.close()


class SlowTokenizer:
    """A text tokenizer that takes 20 ms per text, as a slow reader of large emails would."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, text: str) -> list[int]:
        time.sleep(0.02)  # stands for work, not a wait for anything
        return self.inner(text)


class SlowReadingModel:
    """The bundled model, read slowly in the decoding processes."""

    def __init__(self) -> None:
        from model.predictor import Predictor

        self.inner = Predictor.load("bundled", device="cpu")
        self.name, self.version, self.labels = "slow", "1", self.inner.labels
        self.device = self.inner.device
        self.text_tokenizer = SlowTokenizer(self.inner.text_tokenizer)
        self.tokenize, self.predict_ids = self.inner.tokenize, self.inner.predict_ids


def test_a_stopping_worker_finishes_the_records_its_decoding_processes_hold(broker, topics,
                                                                             caplog):
    caplog.set_level(logging.INFO, logger="worker.app")
    names = topics(partitions=1)
    produce(broker, names["input"], keyed_messages(300, "h"))
    reader = TopicReader(broker, names["output"])
    config = load_config(None, [*settings(broker, names, free_port()),
                                "input.decode_processes=1", "shutdown.drain_timeout_s=15"],
                         environ={})
    worker = Worker(config, classifier=SlowReadingModel())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        reader.wait_for(20)
        assert worker._decoding is not None and worker._decoding.pending, "records being read"
    finally:
        worker.stop()
        thread.join(timeout=60)
    assert "drained: every record acknowledged and committed" in caplog.text
    # Every record polled before the stop was read, classified and published, once and in order.
    offsets = [json.loads(r.value)["source"]["offset"] for r in reader.read()]
    assert len(offsets) >= 20 and offsets == list(range(len(offsets)))
    reader.close()


def outcomes_with(classifier, broker, names, out, count, lanes=1):
    """Run a worker with *classifier* in this process until *out* holds *count* records."""
    config = load_config(None, [*settings(broker, names, free_port()), f"model.lanes={lanes}"],
                         environ={})
    worker = Worker(config, classifier=classifier)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        return out.wait_for(count)
    finally:
        worker.stop()
        thread.join(timeout=60)


class PoisonedModel:
    """The bundled model, except that it fails on any batch holding the word POISON."""

    def __init__(self) -> None:
        from model.predictor import Predictor

        self.inner = Predictor.load("bundled", device="cpu")
        self.name, self.version, self.labels = "poisoned", "1", self.inner.labels
        self.device = self.inner.device

    def tokenize(self, text: str) -> list[int]:
        return [-1] if "POISON" in text else self.inner.tokenize(text)

    def predict_ids(self, seqs):
        if any(-1 in s for s in seqs):
            raise RuntimeError("model blew up")
        return self.inner.predict_ids(seqs)


def test_decoding_processes_give_every_record_the_result_the_main_thread_would(broker, topics):
    """input.decode_processes: emails, texts and hostile values read in two other processes get
    the bundled model's own verdict or their dead letter, in input order per partition."""
    import multiprocessing

    from model.predictor import Predictor
    from worker.codec import InputSettings, Request, SourceRecord, decode
    from worker.demo import _sample_records

    names = topics(partitions=2)
    good = [(k.encode(), v) for k, v, kind in _sample_records() if kind != "hostile"]
    good += keyed_messages(150, "d")
    produce(broker, names["input"], [*good, *((k, v) for k, v, _ in HOSTILE)])
    out = TopicReader(broker, names["output"], names["dlq"])
    before = {p.pid for p in multiprocessing.active_children()}
    extra = ("input.decode_processes=2", "input.max_bytes=2000000")
    with RunningWorker(broker, names, extra=extra):
        got = out.wait_for(len(good) + len(HOSTILE))
        decoding = {p.pid for p in multiprocessing.active_children()} - before
    out.close()
    assert len(decoding) == 2, "the worker's two decoding processes"
    results = {r.key: json.loads(r.value) for r in got if r.topic == names["output"]}
    dead = {r.key: dict(r.headers)["streamclf-error"].decode()
            for r in got if r.topic == names["dlq"]}
    assert dead == {k: reason for k, _, reason in HOSTILE}
    assert set(results) == {k for k, _ in good}
    predictor = Predictor.load("bundled", device="cpu")
    requests = [decode(SourceRecord("t", 0, i, 0, k, v, ()), InputSettings())
                for i, (k, v) in enumerate(good)]
    assert all(isinstance(r, Request) for r in requests)
    expected = predictor.predict_ids([predictor.tokenize(r.text) for r in requests])
    for (key, _), prediction in zip(good, expected, strict=True):
        assert results[key]["label"] == prediction.label, key
        assert results[key]["score"] == pytest.approx(prediction.score, abs=1e-5), key
    for partition in (0, 1):
        offsets = [json.loads(r.value)["source"]["offset"] for r in got
                   if r.topic == names["output"] and r.partition == partition]
        assert offsets == sorted(offsets)


@pytest.mark.parametrize("lanes", [1, 2])
def test_inference_failures_dead_letter_only_the_culprit(broker, topics, lanes):
    names = topics(partitions=1)
    records = keyed_messages(100, "p")
    records[37] = (b"p37", json.dumps({"id": "p37", "text": "POISON pill"}).encode())
    produce(broker, names["input"], records)
    out = TopicReader(broker, names["output"], names["dlq"])
    got = outcomes_with(PoisonedModel(), broker, names, out, 100, lanes)
    where = {r.key: r.topic for r in got}
    assert len(got) == 100
    assert where[b"p37"] == names["dlq"]
    assert dict(next(r for r in got if r.key == b"p37").headers)["streamclf-error"] == b"inference"
    assert sum(1 for t in where.values() if t == names["output"]) == 99
    # Results of the one partition still come out in input order around the failure.
    offsets = [json.loads(r.value)["source"]["offset"] for r in got if r.topic == names["output"]]
    assert offsets == sorted(offsets)
    out.close()


class MiscountingModel(PoisonedModel):
    """The bundled model, except that it drops the last prediction of every batch."""

    def predict_ids(self, seqs):
        return self.inner.predict_ids(seqs)[:-1]


def test_a_model_that_miscounts_its_predictions_gives_no_record_two_outcomes(broker, topics):
    names = topics(partitions=1)
    produce(broker, names["input"], keyed_messages(20, "q"))
    out = TopicReader(broker, names["output"], names["dlq"])
    port = free_port()
    config = load_config(None, [*settings(broker, names, port), "model.lanes=1"], environ={})
    worker = Worker(config, classifier=MiscountingModel())
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        poll_until(lambda: metric_value(http_get(f"http://127.0.0.1:{port}/metrics")[1],
                                        "streamclf_offsets_committed_total") >= 20,
                   what="every record done")
        got = out.wait_for(20)
        out.read()  # anything produced before the commit is on the topics by now
        got = out.records
    finally:
        worker.stop()
        thread.join(timeout=60)
    # Each batch down to single records is short of one prediction: every record ends as an
    # inference dead letter. Before, a batch's predictions were written until the count ran
    # out, so those records got a result too.
    assert sorted(r.key for r in got) == sorted(f"q{i}".encode() for i in range(20))
    assert {r.topic for r in got} == {names["dlq"]}
    out.close()


class NanModel(PoisonedModel):
    """The bundled model, except that texts holding NAN score NaN (a broken model would)."""

    def tokenize(self, text: str) -> list[int]:
        return [-2] if "NAN" in text else self.inner.tokenize(text)

    def predict_ids(self, seqs):
        from model.predictor import Prediction

        good = self.inner.predict_ids([[1] if -2 in s else s for s in seqs])
        nan = float("nan")
        return [Prediction("ham", nan, {"ham": nan, "spam": nan}) if -2 in s else p
                for s, p in zip(seqs, good, strict=True)]


def test_non_finite_scores_are_dead_letters_not_results(broker, topics):
    """NaN is not JSON: a result carrying it would break the consumers of the output topic."""
    names = topics(partitions=1)
    produce(broker, names["input"], [(f"n{i}".encode(), json.dumps(
        {"text": "NAN here" if i % 4 == 0 else f"hello number {i}"}).encode()) for i in range(12)])
    out = TopicReader(broker, names["output"], names["dlq"])
    got = outcomes_with(NanModel(), broker, names, out, 12)
    where = {r.key: r for r in got}
    dead = {k for k, r in where.items() if r.topic == names["dlq"]}
    assert dead == {b"n0", b"n4", b"n8"}
    assert all(dict(where[k].headers)["streamclf-error"] == b"inference" for k in dead)
    for record in got:
        if record.topic == names["output"]:
            json.loads(record.value, parse_constant=lambda c: pytest.fail(f"{c} in a result"))
    out.close()


def test_worker_serves_a_three_label_model_unchanged(broker, topics, tmp_path):
    """Labels come from the artifact: a topic model trained here runs through the same worker."""
    from model.train import train
    from tests.unit.test_model_train import TOPICS, _options, _write_data

    train(_options(_write_data(tmp_path / "topics.jsonl"), tmp_path / "topics-model"))
    names = topics()
    texts = {b"t-sports": "striker goal team referee", b"t-cooking": "bake flour butter oven",
             b"t-tech": "python server cache cpu"}
    produce(broker, names["input"], [(k, json.dumps({"text": v}).encode())
                                     for k, v in texts.items()])
    reader = TopicReader(broker, names["output"])
    with RunningWorker(broker, names, extra=(f"model.path={tmp_path / 'topics-model'}",)) as run:
        records = reader.wait_for(3)
        poll_until(lambda: metric_value(http_get(run.url("/metrics"))[1],
                                        "streamclf_messages_classified_total",
                                        {"label": "tech"}) == 1, what="the tech label counted")
    results = results_by_key(records)
    assert {k: r["label"] for k, r in results.items()} == {
        b"t-sports": "sports", b"t-cooking": "cooking", b"t-tech": "tech"}
    assert all(set(r["scores"]) == set(TOPICS) for r in results.values())
    reader.close()
