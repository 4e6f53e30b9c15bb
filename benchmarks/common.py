"""Shared pieces of the benchmark suite: the messages, the machine, topics, and the worker process.

Every section measures the same messages: the shared test emails and SMS plus a length sweep,
in one fixed shuffled order (`load_messages`). The worker always runs as its own process
(`WorkerProcess`, via `benchmarks/worker_proc.py`) so that its threads do not share a GIL with
the load generator and the readers of this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
SWEEP_WORDS = (8, 32, 128, 512, 2048)  # words per message of the length sweep


# -- the messages -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes  # raw email bytes, or a JSON request {"id", "text"}
    kind: str  # "email", "sms" or "sweep-<words>"
    label: str | None


def load_messages(data_dir: Path = DATA_DIR, quick: bool = False) -> list[Message]:
    """The shared test emails and SMS plus a length sweep, in one fixed shuffled order."""
    from model.data import iter_examples
    from worker.cli import record_for

    out: list[Message] = []
    sms_texts: list[str] = []
    for name, kind in (("spamassassin.jsonl.gz", "email"), ("sms_spam.jsonl.gz", "sms")):
        for ex in iter_examples(data_dir / name):
            if ex.split != "test":
                continue
            key, value = record_for(ex)
            out.append(Message(key, value, kind, ex.label))
            if kind == "sms" and ex.text:
                sms_texts.append(ex.text)
    out.extend(length_sweep(sms_texts, per_length=4 if quick else 24))
    random.Random(0).shuffle(out)
    if quick:
        out = out[:300]
    return out


def length_sweep(texts: Sequence[str], per_length: int) -> list[Message]:
    """Plain-text messages of exactly SWEEP_WORDS words, made of real SMS words."""
    words = [w for t in texts for w in t.split()]
    rng = random.Random(1)
    out = []
    for n in SWEEP_WORDS:
        for i in range(per_length):
            start = rng.randrange(0, max(1, len(words) - n))
            chosen = (words * (1 + n // max(1, len(words))))[start : start + n]
            body = {"id": f"sweep-{n}-{i}", "text": " ".join(chosen)}
            out.append(Message(body["id"].encode(), json.dumps(body).encode(), f"sweep-{n}", None))
    return out


def short_messages(count: int, data_dir: Path = DATA_DIR) -> list[tuple[bytes, bytes]]:
    """`count` short SMS-like JSON requests (every SMS of the corpus, cycled), keys unique."""
    from model.data import iter_examples

    texts = [ex.text for ex in iter_examples(data_dir / "sms_spam.jsonl.gz") if ex.text]
    out = []
    for i in range(count):
        key = f"b{i}"  # "b": a backlog record (see throughput.session)
        out.append((key.encode(),
                    json.dumps({"id": key, "text": texts[i % len(texts)]}).encode()))
    return out


def repeated(messages: Sequence[Message], times: int, prefix: str) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs of `messages` repeated `times` times, every key unique."""
    return [(f"{prefix}{r}-".encode() + m.key, m.value)
            for r in range(times) for m in messages]


# -- the machine ------------------------------------------------------------------------------


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    import kafka
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": _mem_total_gb(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "kafka_python": kafka.__version__,
        # kafka-python checksums every record batch in pure Python unless `crc32c` is installed
        "kafka_python_crc32c": ("C (crc32c package)" if importlib.util.find_spec("crc32c")
                                else "pure Python"),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "broker": "embedded (worker.broker.EmbeddedBroker, in memory, loopback)",
    }
    return info


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest rank: the smallest value with at least q % of the
    values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return ordered[rank]


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


# -- topics -----------------------------------------------------------------------------------


def new_topics(bootstrap: str, partitions: int = 3) -> dict[str, str]:
    from worker.kafka import ensure_topics

    tag = uuid.uuid4().hex[:8]
    names = {"input": f"bench-in-{tag}", "output": f"bench-out-{tag}", "dlq": f"bench-dlq-{tag}"}
    ensure_topics(bootstrap, list(names.values()), partitions=partitions)
    return names


def producer(bootstrap: str, **settings: Any) -> Any:
    from kafka import KafkaProducer

    options = {"linger_ms": 20, "max_request_size": 16 * 1024 * 1024, "batch_size": 256 * 1024}
    options.update(settings)
    return KafkaProducer(bootstrap_servers=bootstrap, **options)


def produce_all(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Send everything as fast as the client goes and wait for the acknowledgements."""
    prod = producer(bootstrap)
    sent = 0
    try:
        for key, value in records:
            prod.send(topic, key=key, value=value)
            sent += 1
        prod.flush()
    finally:
        prod.close()
    return sent


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0) -> list[Any]:
    """Every record of `topic` from the start, once `expected` are there (or at the deadline)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None,
                             fetch_max_bytes=64 * 1024 * 1024)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


# -- the worker as a process ------------------------------------------------------------------


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample called `name` (all label values) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """[(upper bound, cumulative count)] of a histogram in Prometheus text."""
    out = []
    prefix = name + "_bucket{"
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le),
                        float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the bucket holding quantile q (0-1): a bound, not an estimate."""
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    for bound, count in buckets:
        if count >= target:
            return bound
    return None


def consumer_settings(**extra: Any) -> str:
    """A `kafka.consumer` mapping for --set: the short session timeout plus `extra`."""
    items = {"session_timeout_ms": 6000, **extra}
    return "{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}"


# kafka-python's consumer waits up to fetch_max_wait_ms (default 500) in each fetch; with the
# embedded broker that wait shows up in end-to-end latency (see docs/performance.md).
FAST_FETCH = consumer_settings(fetch_max_wait_ms=10)


class WorkerProcess:
    """`benchmarks/worker_proc.py` (the worker, optionally with a no-op model) as a subprocess."""

    def __init__(self, bootstrap: str, topics: dict[str, str], settings: dict[str, Any],
                 noop: bool = False, batch_times: Path | None = None,
                 log_path: Path | None = None, flags: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> None:
        from worker.broker import free_port

        self.metrics_port = free_port()
        overrides = {
            "kafka.bootstrap_servers": bootstrap,
            "kafka.input_topics": topics["input"],
            "kafka.output_topic": topics["output"],
            "kafka.dlq_topic": topics["dlq"],
            "kafka.group_id": f"bench-{uuid.uuid4().hex[:8]}",
            "metrics.host": "127.0.0.1",
            "metrics.port": self.metrics_port,
            "logging.level": "WARNING",
            "logging.format": "text",
            "model.device": "cpu",
            # The embedded broker holds a new member's JoinGroup for half the session timeout
            # (kafka-python 3's default 45 s: a 23 s join); 6 s makes it 3 s.
            "kafka.consumer": consumer_settings(),
            **settings,
        }
        cmd = [sys.executable, str(ROOT / "benchmarks" / "worker_proc.py")]
        if noop:
            cmd.append("--noop")
        if batch_times is not None:
            cmd += ["--batch-times", str(batch_times)]
        cmd += list(flags)
        for key, value in overrides.items():
            cmd += ["--set", f"{key}={value}"]
        self.started_at = time.time()
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            env={**os.environ, **(env or {})})
        finally:
            if log_path:
                log.close()  # type: ignore[union-attr]
        self.pid = self.process.pid

    def _get(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}{path}"
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def metrics(self) -> str:
        return self._get("/metrics")[1]

    def done_count(self) -> int:
        """Records whose result or dead letter the broker acknowledged."""
        text = self.metrics()
        return int(metric_sum(text, "streamclf_messages_classified_total")
                   + metric_sum(text, "streamclf_messages_dead_lettered_total"))

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Wait for /readyz (model loaded, partitions assigned); returns the wall time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}")
            if self._get("/readyz")[0] == 200:
                return time.time()
            time.sleep(0.1)  # polling a readiness probe
        raise RuntimeError("worker not ready in time")

    def wait_done(self, expected: int, timeout_s: float = 300.0,
                  on_tick: Any = None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}")
            if on_tick is not None:
                on_tick()
            if self.done_count() >= expected:
                return True
            time.sleep(0.25)  # polling the worker's own counters
        return False

    def status(self, field: str) -> int | None:
        """A /proc/PID/status field in kB (VmHWM: peak RSS, VmRSS: current)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def results_of(records: Sequence[Any], prefix: bytes = b"") -> list[tuple[int, dict[str, Any]]]:
    """(output record timestamp in ms, parsed result) of the output records whose key has prefix."""
    out = []
    for record in records:
        if record.key is not None and record.key.startswith(prefix):
            out.append((int(record.timestamp), json.loads(record.value)))
    return out
