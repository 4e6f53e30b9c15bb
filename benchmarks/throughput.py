"""Kafka-path figures: the naive loop, the worker draining a backlog, and sessions in general.

A *session* is one worker process on fresh topics: an optional pre-produced backlog that it
drains (throughput), then optional paced phases (latency, see latency.py). Results are read
from the output topic afterwards, so nothing in this process competes with the worker while it
runs except the paced producer. Times come from the records themselves: the input's timestamp
(set when the benchmark sent it) and the output's (set when the worker sent the result).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Message,
    WorkerProcess,
    histogram_buckets,
    histogram_quantile,
    new_topics,
    percentile,
    produce_all,
    producer,
    rate,
    read_topic,
    results_of,
)


def paced(bootstrap: str, topic: str, messages: Sequence[Message], msgs_per_s: float,
          seconds: float, prefix: str) -> dict[str, Any]:
    """Send `msgs_per_s` × `seconds` messages at an even pace (the offered load)."""
    prod = producer(bootstrap, linger_ms=0)
    count = max(1, int(msgs_per_s * seconds))
    started = time.monotonic()
    try:
        for i in range(count):
            ahead = started + i / msgs_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the offered load
            m = messages[i % len(messages)]
            prod.send(topic, key=f"{prefix}{i}-".encode() + m.key, value=m.value)
        prod.flush()
    finally:
        prod.close()
    return {"offered_msgs_per_s": msgs_per_s, "sent": count,
            "achieved_msgs_per_s": rate(count, time.monotonic() - started)}


def session(bootstrap: str, settings: dict[str, Any], backlog: Sequence[tuple[bytes, bytes]],
            *, phases: Sequence[float] = (), phase_messages: Sequence[Message] = (),
            phase_seconds: float = 8.0, noop: bool = False, profile_s: float = 0.0,
            batch_times: bool = False, read_outputs: bool = True,
            log_dir: Path | None = None, flags: Sequence[str] = (),
            env: dict[str, str] | None = None) -> dict[str, Any]:
    """One worker process: drain `backlog`, then one paced phase per rate in `phases`.

    Backlog keys must start with b"b" (see common.repeated / short_messages)."""
    topics = new_topics(bootstrap)
    t0 = time.monotonic()
    produce_all(bootstrap, topics["input"], backlog)
    produce_s = time.monotonic() - t0
    tmp = Path(tempfile.mkdtemp(prefix="streamclf-bench-"))
    times_path = tmp / "batch_times.json" if batch_times else None
    log_path = (log_dir / f"worker-{uuid.uuid4().hex[:6]}.log") if log_dir else None
    proc = WorkerProcess(bootstrap, topics, settings, noop=noop, batch_times=times_path,
                         log_path=log_path, flags=flags, env=env)
    out: dict[str, Any] = {"settings": settings, "flags": list(flags), "noop": noop,
                           "backlog": len(backlog),
                           "produce_backlog_s": produce_s}
    profiler = None
    try:
        ready_at = proc.wait_ready()
        out["spawn_to_ready_s"] = ready_at - proc.started_at
        out["rss_at_ready_kb"] = proc.status("VmRSS")
        if profile_s and py_spy():
            profiler = start_profile(proc.pid, profile_s, tmp / "profile.txt")
        expected = len(backlog)
        if backlog and not proc.wait_done(expected):
            out["error"] = "backlog not drained in time"
        out["ready_to_drained_s"] = time.time() - ready_at
        out["peak_rss_kb"] = proc.status("VmHWM")  # high-water mark so far: the drain's peak
        phase_info = []
        windows = []  # wall-clock span of each phase, to give it its own batch times
        for k, load in enumerate(phases):
            started = time.time()
            info = paced(bootstrap, topics["input"], phase_messages, load, phase_seconds,
                         f"p{k}-")
            expected += info["sent"]
            if not proc.wait_done(expected, timeout_s=120):
                info["error"] = "phase not drained in time"
            windows.append((started, time.time()))
            phase_info.append(info)
        metrics_text = proc.metrics()
    finally:
        if profiler is not None:
            profiler.wait(timeout=120)
        out["exit_code"] = proc.stop()
    out["worker_histograms"] = worker_histograms(metrics_text)
    if profiler is not None:
        out["profile"] = summarize_profile(tmp / "profile.txt")
    if times_path is not None and times_path.exists():
        times = json.loads(times_path.read_text())
        out["batch_times"] = batch_time_summary(times)  # the whole session, warm-up included
        for info, (start, end) in zip(phase_info, windows, strict=True):
            info["batch_times"] = batch_time_summary([t for t in times if start <= t[2] <= end])
    if read_outputs:
        records = read_topic(bootstrap, topics["output"], expected)
        out["outputs"] = len(records)
        if backlog:
            out["drain"] = drain_rate(results_of(records, b"b"), ready_at)
        for k, info in enumerate(phase_info):
            info.update(latencies(results_of(records, f"p{k}-".encode())))
    out["phases"] = phase_info
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def drain_rate(results: list[tuple[int, dict]], ready_at: float) -> dict[str, Any]:
    """Results per second from the first result to the last (the group join excluded)."""
    if len(results) < 2:
        return {"results": len(results)}
    stamps = sorted(ts for ts, _ in results)
    span_s = (stamps[-1] - stamps[0]) / 1000.0
    return {
        "results": len(results),
        "msgs_per_s": rate(len(results) - 1, span_s),
        "first_to_last_s": span_s,
    }


def latencies(results: list[tuple[int, dict]]) -> dict[str, Any]:
    """Input record timestamp → output record timestamp (the worker's send of the result)."""
    ms = [ts - r["source"]["timestamp_ms"] for ts, r in results]
    # The two parts of it: input → the publisher taking up the record's window (its batches
    # done, earlier windows published), and from there → the send of this result.
    to_window = [r["classified_at_ms"] - r["source"]["timestamp_ms"] for _, r in results]
    sending = [ts - r["classified_at_ms"] for ts, r in results]
    return {"results": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms) if ms else None,
            "to_window_p50_ms": percentile(to_window, 50),
            "to_window_p99_ms": percentile(to_window, 99),
            "sending_p50_ms": percentile(sending, 50), "sending_p99_ms": percentile(sending, 99)}


def worker_histograms(text: str) -> dict[str, Any]:
    """Bucket bounds of the worker's own histograms (coarse: for cross-checking)."""
    e2e = histogram_buckets(text, "streamclf_end_to_end_latency_seconds")
    inf = histogram_buckets(text, "streamclf_inference_duration_seconds")
    size = histogram_buckets(text, "streamclf_batch_size")
    return {
        "e2e_p50_le_s": histogram_quantile(e2e, 0.5),
        "e2e_p99_le_s": histogram_quantile(e2e, 0.99),
        "inference_p99_le_s": histogram_quantile(inf, 0.99),
        "batch_size_p50_le": histogram_quantile(size, 0.5),
    }


def batch_time_summary(times: list[list[float]]) -> dict[str, Any]:
    """(batch size, seconds, end time) records → count, p50/p99 and mean size."""
    seconds = [t[1] for t in times]
    sizes = [t[0] for t in times]
    return {"batches": len(times), "p50_ms": 1000 * (percentile(seconds, 50) or 0),
            "p99_ms": 1000 * (percentile(seconds, 99) or 0),
            "mean_batch_size": sum(sizes) / len(sizes) if sizes else 0}


# -- profiling --------------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy on PATH, or next to this interpreter (a virtual environment not on PATH)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def start_profile(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    """Sample the worker with py-spy: the thread holding the GIL at each sample.

    The Kafka path is bound by the GIL, not by a core: GIL samples show what competes for it,
    where CPU-busy samples would also count threads waiting in select() or on a lock. The
    sampler takes CPU itself, so a profiled run is never the one whose throughput is reported.
    """
    return subprocess.Popen(
        [py_spy() or "py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", "200", "--format", "raw", "--threads", "--nonblocking", "--gil",
         "--output", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Per-thread sample shares, and the functions with the most self and total samples."""
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        # Each stack line ends in its sample count. A line that does not (a full run once ended
        # on one ending in "(") is left out rather than losing the section's figures.
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        samples += count
        threads[_thread_name(thread, frames)] += count
        if frames:
            own[_short(frames[-1])] += count
        for name in {_short(f) for f in frames}:
            total[name] += count
    share = (lambda c: round(100.0 * c / samples, 1)) if samples else (lambda c: 0.0)
    return {
        "samples": samples,
        "threads_pct": {name: share(c) for name, c in threads.most_common()},
        "self_pct": [(name, share(c)) for name, c in own.most_common(top)],
        "total_pct": [(name, share(c)) for name, c in total.most_common(top + 10)],
    }


def _short(frame: str) -> str:
    """`function (path/to/file.py:123)` → `file.py:function`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit("/", 1)[-1].split(":", 1)[0]
    pkg = where.rsplit("/", 2)[-2] if where.count("/") >= 1 else ""
    return f"{pkg}/{file}:{name}" if pkg else f"{file}:{name}"


def _thread_name(thread: str, frames: list[str]) -> str:
    joined = ";".join(frames)
    if "_inference_loop" in joined:
        return "inference"
    if "_publish_loop" in joined:
        return "publisher"
    if "sender.py" in joined:
        return "producer IO (kafka-python)"
    if "_step" in joined or "app.py:run" in joined or "run (" in (frames[1] if len(frames) > 1
                                                                else ""):
        return "main loop"
    if "heartbeat" in joined:
        return "consumer heartbeat (kafka-python)"
    if "serve_forever" in joined or "http" in joined:
        return "metrics HTTP"
    return "other"


# -- the naive loop ---------------------------------------------------------------------------


def naive(bootstrap: str, messages: Sequence[Message], predictor: Any,
          limit_s: float) -> dict[str, Any]:
    """What a tutorial writes: poll one record, pad to max_tokens, predict one, produce and
    wait, commit that record. Runs in this process with one torch thread."""
    import torch
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from benchmarks.offline import torch_threads
    from worker import codec
    from worker.kafka import source_record

    topics = new_topics(bootstrap)
    produce_all(bootstrap, topics["input"], [(m.key, m.value) for m in messages])
    consumer = KafkaConsumer(topics["input"], bootstrap_servers=bootstrap,
                             group_id=f"naive-{uuid.uuid4().hex[:8]}",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=1, session_timeout_ms=6000)  # see common.py
    prod = producer(bootstrap, linger_ms=0, acks="all")
    settings = codec.InputSettings()
    width = predictor.max_tokens
    done, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + limit_s + 60  # + the group join
    try:
        with torch_threads(1), torch.inference_mode():
            while done < len(messages) and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=1000, max_records=1).items():
                    for record in records:
                        if not first:
                            first = time.perf_counter()
                            deadline = time.monotonic() + limit_s
                        request = codec.decode(source_record(record), settings)
                        value = b'{"error": "undecodable"}'
                        if isinstance(request, codec.Request):
                            ids = predictor.tokenize(request.text)[:width]
                            x = torch.tensor([ids + [0] * (width - len(ids))])
                            logits = predictor.model(x, torch.tensor([width]))
                            probs = torch.softmax(logits / predictor.temperature, -1)[0].tolist()
                            label = predictor.labels[max(range(len(probs)), key=probs.__getitem__)]
                            value = json.dumps({"id": request.id, "label": label}).encode()
                        prod.send(topics["output"], key=record.key, value=value).get(timeout=30)
                        consumer.commit({TopicPartition(tp.topic, tp.partition):
                                         OffsetAndMetadata(record.offset + 1, "", -1)})
                        done += 1
                        last = time.perf_counter()
    finally:
        consumer.close()
        prod.close()
    return {"messages": done, "of": len(messages), "seconds": last - first, "max_tokens": width,
            "naive_msgs_per_s": rate(done - 1, last - first),
            "note": "timed from the first record received (group join excluded); 1 torch thread"}


# A result of typical size (the worker's output for a short message is ~230 bytes).
_COPY_VALUE = (b'{"id": "b0-000000", "label": "ham", "score": 0.999123, '
               b'"scores": {"ham": 0.999123, "spam": 0.000877}, "model": "noop@0", '
               b'"source": {"topic": "bench-in-00000000", "partition": 0, "offset": 0, '
               b'"timestamp_ms": 0}, "classified_at_ms": 0}')


COPY_HEADERS = [("streamclf-label", b"ham"), ("streamclf-model", b"noop@0")]


def client_config(bootstrap: str, group_prefix: str) -> Any:
    """The worker's Kafka settings for a copy loop: a new group, the tests' session timeout."""
    from worker.config import KafkaConfig

    return KafkaConfig(bootstrap_servers=[bootstrap],
                       group_id=f"{group_prefix}-{uuid.uuid4().hex[:8]}",
                       consumer={"session_timeout_ms": 6000})  # see common.consumer_settings


def poll_backlog(consumer: Any, expected: int, timeout_s: float,
                 handle: Callable[[list[Any]], None]) -> float:
    """Poll until *expected* records went to *handle* (a partition's records of one poll at a
    time) or *timeout_s* passed, committing after each poll; return when the first came
    (`time.perf_counter`)."""
    seen, first = 0, 0.0
    deadline = time.monotonic() + timeout_s
    while seen < expected and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=100)
        for records in polled.values():
            first = first or time.perf_counter()
            handle(records)
            seen += len(records)
        if polled:
            consumer.commit_async()
    return first


def copy_loop(bootstrap: str, backlog: Sequence[tuple[bytes, bytes]],
              timeout_s: float = 300.0) -> dict[str, Any]:
    """The Kafka client's own ceiling: the least a consume → produce service does per record
    with kafka-python and the worker's client settings — poll, send one fixed result keyed and
    headed like the worker's with an acknowledgement callback, commit after each poll — and
    nothing else (no decoding, no result building, no offset bookkeeping, no metrics). One
    thread plus the producer's own; timed from the first record polled to the last
    acknowledgement."""
    from worker.kafka import consumer_settings, make_consumer, make_producer, producer_settings

    topics = new_topics(bootstrap)
    produce_all(bootstrap, topics["input"], backlog)
    config = client_config(bootstrap, "copy")
    consumer = make_consumer(consumer_settings(config))
    prod = make_producer(producer_settings(config))
    consumer.subscribe([topics["input"]])
    acked = 0

    def ack(_metadata: object) -> None:
        nonlocal acked
        acked += 1

    def send(records: list[Any]) -> None:
        for r in records:
            prod.send(topics["output"], key=r.key, value=_COPY_VALUE,
                      headers=[*(r.headers or ()), *COPY_HEADERS]).add_callback(ack)

    try:
        first = poll_backlog(consumer, len(backlog), timeout_s, send)
        prod.flush()
        last = time.perf_counter()
        consumer.commit()
    finally:
        consumer.close()
        prod.close()
    if acked < len(backlog):
        return {"error": f"{acked} of {len(backlog)} acknowledged in time"}
    return {"results": acked, "msgs_per_s": rate(acked - 1, last - first),
            "first_to_last_s": last - first, "output_topic": topics["output"]}
