"""`streamclf run` as a subprocess: unseen mail and hostile records each come out exactly once,
on the output or the dead-letter topic, while the worker keeps running; SIGTERM exits 0."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.conftest import TopicReader, http_get, metric_value, poll_until
from worker.broker import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def nested_mime(depth: int) -> bytes:
    head = b"From: deep@example.org\r\nSubject: nesting\r\nMIME-Version: 1.0\r\n"
    parts = []
    for level in range(depth):
        parts.append(f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n")
    inner = "Content-Type: text/plain\r\n\r\nhello from the bottom\r\n"
    tail = "".join(f"--b{level}--\r\n" for level in reversed(range(depth)))
    return head + ("".join(parts) + inner + tail).encode()


def attachment_mail(megabytes: int) -> bytes:
    blob = base64.encodebytes(os.urandom(megabytes * 1024 * 1024))
    return (b"From: files@example.org\r\nSubject: the archive you asked for\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=ZZ\r\n\r\n--ZZ\r\n"
            b"Content-Type: text/plain\r\n\r\nSee the attached archive.\r\n--ZZ\r\n"
            b"Content-Type: application/zip; name=data.zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--ZZ--\r\n")


def odd_charset_mail() -> bytes:
    return (b"From: x@example.org\r\nSubject: =?x-klingon?q?qapla?=\r\n"
            b"Content-Type: text/plain; charset=x-unknown-charset\r\n\r\n"
            b"Caf\xe9 \xff\xfe prices fall\r\n")


def lying_charset_mail() -> bytes:
    return ("From: y@example.org\r\nSubject: lies\r\nContent-Type: text/plain; charset=us-ascii"
            "\r\n\r\nЗдравствуйте, это письмо в UTF-8 😀\r\n").encode()


def html_only_mail() -> bytes:
    return (b"From: news@shop.example\r\nSubject: Sale\r\nContent-Type: text/html\r\n\r\n"
            b"<html><head><style>p{color:red}</style><script>alert(1)</script></head>"
            b"<body><p>Huge SALE today only, click here</p></body></html>")


def many_parts_mail(parts: int) -> bytes:
    body = "".join(f"--P\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(parts))
    return (b"From: bomb@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=P\r\n\r\n" + body.encode() + b"--P--\r\n")


HOSTILE: dict[str, bytes | None] = {
    "unseen-ham": json.dumps({"id": "u1", "subject": "Lunch?",
                              "body": "Shall we meet at noon near the station?"}).encode(),
    "unseen-spam": b"FREE entry! Win a brand new phone, txt WIN to 80082 now. 18+ only.",
    "invalid-utf8": b"\xc3\x28\xa0\xa1 broken bytes",
    "tombstone": None,
    "truncated-json": b'{"id": "t", "text": "no end',
    "json-number": b"12345",
    "json-null-text": b'{"text": null}',
    "two-mb-text": ("spam offer " * 200_000).encode(),
    "deep-mime": nested_mime(300),
    "big-attachment": attachment_mail(3),
    "unknown-charset": odd_charset_mail(),
    "lying-charset": lying_charset_mail(),
    "html-only": html_only_mail(),
    "control-chars": "\x00\x01\x02 hello \u202e RTL \u200f emoji 🎉".encode(),
    "empty": b"",
    "fifty-mb": b"A" * 50_000_000,
    "many-parts": many_parts_mail(5000),
    "million-chars": ("Ünïcödé ✉ " * 100_000).encode(),
    "rtl-and-emoji": "مرحبا بالعالم 👋 שלום עולם 🎉 click here".encode(),
}


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_hostile_records_come_out_exactly_once(broker, topics):
    names = topics()
    port = free_port()
    args = [sys.executable, "-m", "worker", "run",
            "--set", f"kafka.bootstrap_servers={broker}",
            "--set", f"kafka.input_topics=[{names['input']}]",
            "--set", f"kafka.output_topic={names['output']}",
            "--set", f"kafka.dlq_topic={names['dlq']}",
            "--set", f"kafka.group_id=hostile-{uuid.uuid4().hex[:6]}",
            "--set", "kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000}",
            "--set", "metrics.host=127.0.0.1", "--set", f"metrics.port={port}",
            "--set", "model.threads=1"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    producer = KafkaProducer(bootstrap_servers=broker, max_request_size=64 * 1024 * 1024)
    for key, value in HOSTILE.items():
        producer.send(names["input"], key=key.encode(), value=value)
    producer.flush()
    producer.close()
    out = TopicReader(broker, names["output"], names["dlq"])
    try:
        records = out.wait_for(len(HOSTILE), timeout_s=180)
        poll_until(lambda: metric_value(http_get(f"http://127.0.0.1:{port}/metrics")[1],
                                        "streamclf_offsets_committed_total") >= len(HOSTILE),
                   what="every offset committed")
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        peak_rss = peak_rss_bytes(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-3000:]
    counts = Counter(r.key.decode() for r in out.read())
    assert counts == Counter(HOSTILE.keys()), "each record exactly once"
    where = {r.key.decode(): r.topic for r in records}
    for key in ("unseen-ham", "unseen-spam", "deep-mime", "big-attachment", "unknown-charset",
                "lying-charset", "html-only", "two-mb-text", "control-chars", "many-parts",
                "million-chars", "rtl-and-emoji"):
        assert where[key] == names["output"], key
    for key in ("invalid-utf8", "tombstone", "truncated-json", "json-null-text", "empty",
                "fifty-mb"):
        assert where[key] == names["dlq"], key
    fifty = next(r for r in records if r.key == b"fifty-mb")
    headers = dict(fifty.headers)
    assert headers["streamclf-error"] == b"too_large"
    assert headers["streamclf-value-dropped"] == b"50000000"  # the broker limit, not the worker
    assert peak_rss < 2 * 2**30, f"peak RSS {peak_rss / 2**20:.0f} MiB"
    out.close()
