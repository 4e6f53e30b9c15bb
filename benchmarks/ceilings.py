"""What bounds the passthrough (section 4): reading email, and the Kafka client's per-record cost.

    python benchmarks/ceilings.py [--messages 50000] [--rounds 3] [--skip-reading]

1. Reading: CPU time per benchmark message (the fixed mix of section 1, emails and JSON
   requests together) for the worker's reader (`model.email.email_to_text`) and for the standard
   library's modern-policy parse alone (`email.message_from_bytes(raw, policy=default)`), best
   of three passes, one thread. At 20,000 msgs/s a 2-core machine has 100 µs of CPU per message
   for everything.
2. Drains of `--messages` short SMS-like messages through the embedded broker, the variants
   alternating for `--rounds` rounds:
   - `worker`: the worker with a no-op model (section 4's short-message passthrough);
   - `copy loop`: section 4's bare kafka-python loop (poll, send a fixed result, commit);
   - `copy loop, producer in a child process`: the same with the sends made by a second
     process fed each poll's keys and headers through a pipe (the Kafka path spread over two
     processes; a ceiling only: it commits without waiting for acknowledgements);
   - `copy loop, librdkafka`: the same loop on confluent-kafka (a Kafka client with a C core),
     with the worker's producer settings; skipped when confluent-kafka is not installed
     (`pip install confluent-kafka`; it is not a dependency of the worker).
   Each is timed from the first record polled to the last acknowledgement (the worker: from
   ready to the last result).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from email import message_from_bytes, policy
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    load_messages,
    new_topics,
    produce_all,
    rate,
    short_messages,
)
from benchmarks.throughput import (  # noqa: E402
    _COPY_VALUE,
    COPY_HEADERS,
    client_config,
    copy_loop,
    poll_backlog,
    session,
)

# -- reading ----------------------------------------------------------------------------------


def reading_costs() -> dict[str, Any]:
    """µs of one thread per benchmark message: the worker's reader and the stdlib parse."""
    from model.email import email_to_text

    messages = load_messages()
    emails = [m.value for m in messages if m.kind == "email"]

    def best_of_three(read: Callable[[bytes], object]) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for raw in emails:
                read(raw)
            best = min(best, time.perf_counter() - started)
        return best

    worker_s = best_of_three(email_to_text)
    stdlib_s = best_of_three(lambda raw: message_from_bytes(raw, policy=policy.default))
    return {"messages": len(messages), "emails": len(emails),
            "reader_us_per_email": worker_s / len(emails) * 1e6,
            "reader_us_per_message": worker_s / len(messages) * 1e6,
            "stdlib_parse_us_per_email": stdlib_s / len(emails) * 1e6,
            "stdlib_parse_us_per_message": stdlib_s / len(messages) * 1e6}


# -- the Kafka path ---------------------------------------------------------------------------


def _send_in_child(bootstrap: str, topic: str, conn: Connection, expected: int) -> None:
    """The child of `split_copy_loop`: send what the pipe brings, then report the acknowledged
    count and the time of the last acknowledgement."""
    from worker.kafka import make_producer, producer_settings

    producer = make_producer(producer_settings(client_config(bootstrap, "split")))
    acked, last = 0, 0.0

    def ack(_metadata: object) -> None:
        nonlocal acked, last
        acked += 1
        last = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the parent's

    sent = 0
    while sent < expected:
        window = conn.recv()
        if window is None:  # the parent gave up
            break
        for key, headers in window:
            producer.send(topic, key=key, value=_COPY_VALUE, headers=headers).add_callback(ack)
        sent += len(window)
    producer.flush()
    conn.send((acked, last))
    producer.close()


def split_copy_loop(bootstrap: str, backlog: Sequence[tuple[bytes, bytes]],
                    timeout_s: float = 300.0) -> dict[str, Any]:
    """`copy_loop` with the producer in a child process, fed each poll's keys and headers."""
    from worker.kafka import consumer_settings, make_consumer

    topics = new_topics(bootstrap)
    produce_all(bootstrap, topics["input"], backlog)
    consumer = make_consumer(consumer_settings(client_config(bootstrap, "split")))
    consumer.subscribe([topics["input"]])
    parent, child = multiprocessing.Pipe()
    sender = multiprocessing.get_context("fork").Process(
        target=_send_in_child, args=(bootstrap, topics["output"], child, len(backlog)))
    sender.start()
    sent = 0

    def send(records: list[Any]) -> None:
        nonlocal sent
        parent.send([(r.key, [*(r.headers or ()), *COPY_HEADERS]) for r in records])
        sent += len(records)

    try:
        first = poll_backlog(consumer, len(backlog), timeout_s, send)
        if sent < len(backlog):
            parent.send(None)
        acked, last = parent.recv() if parent.poll(timeout_s) else (0, 0.0)
        consumer.commit()
    finally:
        consumer.close()
        sender.join(timeout=30)
        if sender.is_alive():
            sender.kill()
    if acked < len(backlog):
        return {"error": f"{acked} of {len(backlog)} acknowledged in time"}
    return {"results": acked, "msgs_per_s": rate(acked - 1, last - first),
            "output_topic": topics["output"]}


def librdkafka_copy_loop(bootstrap: str, backlog: Sequence[tuple[bytes, bytes]],
                         timeout_s: float = 300.0) -> dict[str, Any]:
    """`copy_loop` on confluent-kafka, with the worker's producer settings (acks from all
    replicas, 10 ms linger, no idempotence, one request in flight)."""
    from confluent_kafka import Consumer, KafkaException, Producer

    topics = new_topics(bootstrap)
    produce_all(bootstrap, topics["input"], backlog)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"rd-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": 50,
                         "log_level": 3})  # errors only: its info lines report closed sockets
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 10,
                         "enable.idempotence": False,
                         "max.in.flight.requests.per.connection": 1, "log_level": 3})
    consumer.subscribe([topics["input"]])
    acked, last = 0, 0.0

    def ack(error: object, _message: object) -> None:
        nonlocal acked, last
        if error is None:
            acked += 1
            last = time.perf_counter()

    seen, first = 0, 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < len(backlog) and time.monotonic() < deadline:
            records = [m for m in consumer.consume(num_messages=500, timeout=0.1)
                       if m.error() is None]
            if not records:
                continue
            first = first or time.perf_counter()
            for m in records:
                headers = [*(m.headers() or ()), *COPY_HEADERS]
                while True:
                    try:
                        producer.produce(topics["output"], key=m.key(), value=_COPY_VALUE,
                                         headers=headers, on_delivery=ack)
                        break
                    except BufferError:  # its queue is full: serve acknowledgements first
                        producer.poll(0.01)
            seen += len(records)
            producer.poll(0)
            consumer.commit(asynchronous=True)
        producer.flush(timeout_s)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException:
            pass  # nothing new since the last asynchronous commit ("No offset stored")
    finally:
        consumer.close()
    if acked < len(backlog):
        return {"error": f"{acked} of {len(backlog)} acknowledged in time"}
    return {"results": acked, "msgs_per_s": rate(acked - 1, last - first),
            "output_topic": topics["output"]}


def worker_passthrough(bootstrap: str, backlog: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    out = session(bootstrap, {}, backlog, noop=True)
    if "error" in out:
        return {"error": out["error"]}
    return {"results": out["drain"]["results"], "msgs_per_s": out["drain"]["msgs_per_s"]}


def _has_librdkafka() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-reading", action="store_true")
    args = parser.parse_args(argv)
    from worker.broker import EmbeddedBroker

    if not args.skip_reading:
        r = reading_costs()
        print(f"Reading, one thread, {r['messages']} benchmark messages ({r['emails']} emails):")
        print(f"  the worker's reader: {r['reader_us_per_email']:.0f} µs per email, "
              f"{r['reader_us_per_message']:.0f} µs per message")
        print(f"  the stdlib parse alone: {r['stdlib_parse_us_per_email']:.0f} µs per email, "
              f"{r['stdlib_parse_us_per_message']:.0f} µs per message\n", flush=True)

    variants: list[tuple[str, Callable[[str, Sequence[tuple[bytes, bytes]]], dict[str, Any]]]]
    variants = [("worker", worker_passthrough), ("copy loop", copy_loop),
                ("copy loop, producer in a child process", split_copy_loop)]
    if _has_librdkafka():
        variants.append(("copy loop, librdkafka", librdkafka_copy_loop))
    else:
        print("confluent-kafka is not installed: no librdkafka row\n")
    backlog = short_messages(args.messages)
    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    with EmbeddedBroker() as broker:
        for round_ in range(args.rounds):
            for name, drain in variants:
                result = drain(broker.bootstrap, backlog)
                shown = result.get("error") or f"{result['msgs_per_s']:,.0f} msgs/s"
                print(f"round {round_ + 1}: {name}: {shown}", flush=True)
                if "msgs_per_s" in result:
                    rates[name].append(result["msgs_per_s"])
    base = statistics.median(rates["copy loop"]) if rates["copy loop"] else None
    print(f"\n| {args.messages:,} short messages | msgs/s per round | median | × copy loop |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values) if values else None
        ratio = f"{median / base:.2f}×" if median and base else "–"
        print(f"| {name} | {' / '.join(f'{v:,.0f}' for v in values)} | "
              f"{f'{median:,.0f}' if median else '–'} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
