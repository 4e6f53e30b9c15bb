"""`streamclf demo`: embedded broker, bundled model, a sample stream, a table of results."""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from worker.broker import EmbeddedBroker, free_port, port_free
from worker.config import load_config
from worker.kafka import ensure_topics

INPUT, OUTPUT, DLQ = "demo-input", "demo-output", "demo-dlq"

_SAMPLE_EMAILS = [
    (
        "mail-offer",
        b"From: \"Prize Centre\" <claims@win-big-prizes.example>\r\n"
        b"To: you@example.org\r\nSubject: =?utf-8?q?You_have_WON_=E2=82=AC1,000,000!?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><h1>CONGRATULATIONS!!!</h1><p>You are our lucky winner. Click "
        b"<a href='http://win-big-prizes.example/claim'>here</a> to claim your cash prize "
        b"now. Limited time offer, act now! Send your bank details to receive the money."
        b"</p></body></html>\r\n",
    ),
    (
        "mail-meeting",
        b"From: Alice Martin <alice@example.org>\r\nTo: team@example.org\r\n"
        b"Subject: Notes from Tuesday's design review\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hi all,\r\n\r\nThanks for the discussion yesterday. I pushed the revised schema to "
        b"the branch; please look at the migration script before Friday. Bob raised a good "
        b"point about the index on the orders table, let's measure it first.\r\n\r\n"
        b"Alice\r\n",
    ),
    (
        "mail-pills",
        b"From: pharmacy <sales@cheap-meds.example>\r\nTo: friend@example.org\r\n"
        b"Subject: Lowest prices on meds - 80% OFF\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/alternative; boundary=XX\r\n\r\n--XX\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nBuy cheap meds online, no "
        b"prescription needed! Discreet shipping worldwide. Order today and save 80%. "
        b"Visit http://cheap-meds.example now. To unsubscribe reply REMOVE.\r\n--XX\r\n"
        b"Content-Type: text/html\r\n\r\n<p>Buy cheap meds online!</p>\r\n--XX--\r\n",
    ),
    (
        "mail-invoice",
        b"From: Billing <billing@hosting.example>\r\nTo: ops@example.org\r\n"
        b"Subject: Your invoice for November\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Hello,\r\n\r\nYour invoice for November is attached to your account page. The "
        b"amount will be charged to the card on file on the 5th. If you have questions, "
        b"reply to this message.\r\n\r\nRegards,\r\nThe billing team\r\n",
    ),
]

_SAMPLE_TEXTS = [
    ("sms-prize", "URGENT! You have won a 1 week FREE membership in our £100,000 prize "
                  "Jackpot! Txt the word CLAIM to 81010 now. T&C apply. 18+"),
    ("sms-dinner", "Hey, are we still on for dinner tonight? I can pick you up at 7."),
    ("sms-ringtone", "Congratulations! Ur awarded a free ringtone. Reply YES to 87066 to "
                     "get it now. 150p/msg"),
    ("sms-late", "Running 10 min late, sorry! Save me a seat."),
]

# A record no model can classify, to show the dead-letter topic at work.
_SAMPLE_BAD = [("bad-json", b'{"id": "bad-json", "text": "this JSON was cut off'),
               ("bad-utf8", b"\xff\xfe not UTF-8 \xc3\x28")]


def _sample_records() -> list[tuple[str, bytes, str]]:
    """(key, value, kind) for the demo's own samples."""
    records = [(key, raw, "email") for key, raw in _SAMPLE_EMAILS]
    records += [(key, json.dumps({"id": key, "text": text}).encode(), "sms")
                for key, text in _SAMPLE_TEXTS]
    records += [(key, value, "hostile") for key, value in _SAMPLE_BAD]
    return records


def _shared_records(data_dir: Path, limit: int) -> list[tuple[str, bytes, str]]:
    """Up to `limit` test-split messages from the shared data, alternating emails and SMS."""
    if limit <= 0 or not data_dir.is_dir():
        return []
    from model.data import iter_examples
    from worker.cli import record_for

    per_file: list[list[tuple[str, bytes, str]]] = []
    rng = random.Random(0)  # the same sample every run
    for path in sorted(data_dir.glob("*.jsonl*")):
        rows = []
        for example in iter_examples(path):
            if example.split == "test":
                key, value = record_for(example)
                kind = "email" if example.raw is not None else "sms"
                rows.append((key.decode(), value, f"{kind}:{example.label}"))
        per_file.append(rng.sample(rows, min(limit, len(rows))))
    mixed: list[tuple[str, bytes, str]] = []
    for group in zip(*per_file, strict=False) if per_file else []:
        mixed.extend(group)
    return mixed[:limit]


def run_demo(messages: int, data_dir: Path, metrics_port: int) -> int:
    from worker.app import Worker

    records = _sample_records() + _shared_records(data_dir, messages)
    print(f"starting the embedded broker and the worker ({len(records)} records to classify)")
    with EmbeddedBroker() as broker:
        ensure_topics(broker.bootstrap, [INPUT, OUTPUT, DLQ], partitions=3)
        port = metrics_port if port_free(metrics_port) else free_port()
        if port != metrics_port:
            print(f"port {metrics_port} is taken: metrics on {port}")
        config = load_config(None, [
            f"kafka.bootstrap_servers={broker.bootstrap}",
            f"kafka.input_topics=[{INPUT}]",
            f"kafka.output_topic={OUTPUT}",
            f"kafka.dlq_topic={DLQ}",
            f"kafka.group_id=demo-{uuid.uuid4().hex[:8]}",
            "kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000}",
            "metrics.host=127.0.0.1",
            f"metrics.port={port}",
            "model.threads=1",
        ], environ={})
        worker = Worker(config)
        thread = threading.Thread(target=worker.run, name="worker", daemon=True)
        thread.start()
        interrupted = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            interrupted.set()  # the first: finish in order; a second one interrupts at once
            signal.signal(signum, signal.default_int_handler)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        try:
            _produce(broker.bootstrap, records, interrupted)
            results, dead = _collect(broker.bootstrap, len(records), interrupted)
            _print_table(records, results, dead)
            url = f"http://127.0.0.1:{port}/metrics"
            print(f"\nmetrics, served while the demo runs: {url}  (health: /healthz, "
                  "readiness: /readyz)")
            _print_metrics(url)
        finally:
            worker.stop()
            thread.join(timeout=30)
    committed = worker.metrics.registry.get_sample_value("streamclf_offsets_committed_total")
    print(f"demo finished: worker drained ({committed or 0:.0f} offsets committed), "
          "broker stopped")
    return 0 if len(results) + len(dead) == len(records) else 1


def _produce(bootstrap: str, records: list[tuple[str, bytes, str]],
             interrupted: threading.Event, timeout_s: float = 60.0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for key, value, _ in records:
            producer.send(INPUT, key=key.encode(), value=value)
        deadline = time.monotonic() + timeout_s
        while not interrupted.is_set():  # flushed in slices, so Ctrl-C is heard
            try:
                producer.flush(timeout=0.5)
                return
            except KafkaTimeoutError:
                if time.monotonic() > deadline:
                    raise
    finally:
        producer.close(timeout=1)


def _collect(
    bootstrap: str, expected: int, interrupted: threading.Event, timeout_s: float = 180.0
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    consumer = KafkaConsumer(OUTPUT, DLQ, bootstrap_servers=bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    results: dict[str, dict[str, Any]] = {}
    dead: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    shown = 0
    try:
        while len(results) + len(dead) < expected and time.monotonic() < deadline:
            if interrupted.is_set():
                print("\ninterrupted", file=sys.stderr)
                break
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    key = (record.key or b"").decode("utf-8", "replace")
                    if record.topic == OUTPUT:
                        results[key] = json.loads(record.value)
                    else:
                        headers = dict(record.headers or [])
                        dead[key] = headers.get("streamclf-error", b"?").decode()
            done = len(results) + len(dead)
            if done - shown >= 50 or done == expected:
                print(f"  {done}/{expected} records out", flush=True)
                shown = done
    finally:
        consumer.close()
    return results, dead


def _print_table(
    records: list[tuple[str, bytes, str]],
    results: dict[str, dict[str, Any]],
    dead: dict[str, str],
) -> None:
    print(f"\n{'key':<24} {'kind':<10} {'label':<8} {'score':>6}  text")
    print("-" * 102)
    shown = 0
    for key, value, kind in records:
        if shown >= 24 and kind not in ("email", "sms", "hostile"):
            continue
        shown += 1
        preview = _preview(value)
        if key in results:
            r = results[key]
            print(f"{key[:24]:<24} {kind:<10} {r['label']:<8} {r['score']:>6.3f}  "
                  f"{preview[:50]}")
        elif key in dead:
            print(f"{key[:24]:<24} {kind:<10} {'DLQ':<8} {'':>6}  "
                  f"dead letter: {dead[key]}")
        else:
            print(f"{key[:24]:<24} {kind:<10} {'(none)':<8}")
    scored = [(kind, results[key]["label"]) for key, _, kind in records
              if key in results and kind.endswith((":spam", ":ham"))]
    if scored:
        right = sum(1 for kind, label in scored if kind.endswith(":" + label))
        print(f"\nshared test messages: {right}/{len(scored)} labelled as in the data set "
              f"(score: the model's probability for the label it chose)")
    print(f"results: {len(results)}  dead letters: {len(dead)}  "
          f"missing: {len(records) - len(results) - len(dead)}")


def _preview(value: bytes) -> str:
    """What a person would call the message's text, on one line."""
    from worker.codec import InputSettings, Request, SourceRecord, decode

    decoded = decode(SourceRecord("demo", 0, 0, 0, None, value, ()), InputSettings())
    text = decoded.text if isinstance(decoded, Request) else value.decode("utf-8", "replace")
    return " ".join(text.split())


def _print_metrics(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        print(f"(metrics not reachable: {exc})")
        return
    wanted = ("streamclf_messages_consumed_total", "streamclf_messages_classified_total",
              "streamclf_messages_dead_lettered_total")
    for line in text.splitlines():
        if line.startswith(wanted) and not line.endswith(" 0.0"):
            print("  " + line)
