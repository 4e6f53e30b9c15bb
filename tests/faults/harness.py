"""Helpers for the fault suite: workers as subprocesses, a live input stream, group offsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from tests.conftest import http_get, metric_value
from worker.broker import broker_binary, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("launch_worker.py")


def worker_settings(bootstrap: str, names: dict[str, str], group: str, port: int) -> list[str]:
    return [
        f"kafka.bootstrap_servers={bootstrap}",
        f"kafka.input_topics=[{names['input']}]",
        f"kafka.output_topic={names['output']}",
        f"kafka.dlq_topic={names['dlq']}",
        f"kafka.group_id={group}",
        # A member killed in the middle of a rebalance can hold the group until the rebalance
        # timeout, which kafka-python sends as max_poll_interval_ms (5 minutes by default); the
        # worker polls every 100 ms whatever inference does, so 20 s is safe and bounds the wait.
        "kafka.consumer={session_timeout_ms: 6000, heartbeat_interval_ms: 1000, "
        "max_poll_interval_ms: 20000}",
        "kafka.lag_refresh_ms=500",
        "metrics.host=127.0.0.1",
        f"metrics.port={port}",
        "model.threads=1",
        "batching.max_wait_ms=10",
        "logging.format=text",
    ]


class WorkerProcess:
    """One worker process (the CLI's code path), restartable, with its own metrics port."""

    def __init__(self, bootstrap: str, names: dict[str, str], group: str,
                 extra: tuple[str, ...] = (), slow_ms: float = 0.0, log_dir: Path | None = None,
                 name: str = "worker") -> None:
        self.bootstrap, self.names, self.group = bootstrap, names, group
        self.extra, self.slow_ms, self.name = extra, slow_ms, name
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> WorkerProcess:
        self.port = free_port()
        self.starts += 1
        args = [sys.executable, str(LAUNCHER), "--slow-ms", str(self.slow_ms)]
        for item in [*worker_settings(self.bootstrap, self.names, self.group, self.port),
                     *self.extra]:
            args += ["--set", item]
        log = subprocess.DEVNULL
        if self.log_dir is not None:
            log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric_value(http_get(self.url("/metrics"))[1], name, labels)

    def status(self, path: str) -> int:
        return http_get(self.url(path))[0]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout_s)
        if code != 0 and self.log_dir is not None:
            log = self.log_dir / f"{self.name}-{self.starts}.log"
            print(f"{self.name} exited {code}; log tail:\n" + log.read_text()[-3000:])
        return code

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class Stream:
    """Produces keyed JSON messages at `rate` per second from a background thread, until `count`
    are sent or `stop()` is called. `keys` holds the keys actually sent, so a test can keep the
    stream live for as long as its disruptions last instead of racing a fixed-length stream."""

    TEXTS = [
        "Hi, are we still meeting tomorrow at ten? Bring the slides please.",
        "WINNER! You have been selected for a FREE prize. Txt CLAIM to 80082 now!",
        "The build is green again, I merged the fix for the flaky test.",
        "URGENT: your account is suspended, verify your password at http://bad.example",
    ]

    def __init__(self, bootstrap: str, topic: str, count: int, rate: float,
                 prefix: str = "s") -> None:
        self.keys: list[str] = []
        self._count, self._prefix = count, prefix
        self._bootstrap, self._topic, self._rate = bootstrap, topic, rate
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    @property
    def sent(self) -> int:
        return len(self.keys)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
            started = time.monotonic()
            for i in range(self._count):
                if self._stopping.is_set():
                    break
                key = f"{self._prefix}{i}"
                value = json.dumps({"id": key, "text": self.TEXTS[i % len(self.TEXTS)]})
                producer.send(self._topic, key=key.encode(), value=value.encode())
                self.keys.append(key)
                ahead = started + (i + 1) / self._rate - time.monotonic()
                if ahead > 0:
                    self._stopping.wait(ahead)  # pacing the offered load
            producer.flush()
            producer.close()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def stop(self) -> None:
        """Stop sending (the keys sent so far are all flushed) and wait for the thread."""
        self._stopping.set()
        self.join()

    def join(self, timeout_s: float = 120.0) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "stream producer did not finish"
        if self.error:
            raise self.error


def committed_offsets(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offsets by partition (empty when nothing is committed)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def outputs_by_partition(records: list) -> dict[int, list[int]]:
    """Input offsets in the order their results appeared, per input partition."""
    seen: dict[int, list[int]] = defaultdict(list)
    for record in records:
        source = json.loads(record.value)["source"]
        seen[source["partition"]].append(source["offset"])
    return seen


def assert_order_kept(records: list) -> None:
    for partition, offsets in outputs_by_partition(records).items():
        firsts: list[int] = []
        known: set[int] = set()
        for offset in offsets:
            if offset not in known:
                known.add(offset)
                firsts.append(offset)
        assert firsts == sorted(firsts), f"results of partition {partition} out of order"


def repeated_results(records: list) -> tuple[int, int]:
    """The extra copies among result records, as (resent, classified_again). A copy whose value
    is an earlier copy's byte for byte (the same `classified_at_ms`) is one produce written
    twice: a request the broker wrote but whose answer was lost, resent by the producer. A copy
    with another value is the input classified a second time: its offset was read again by the
    consumer (after a crash, or partitions revoked or lost before their commit)."""
    seen: dict[bytes | None, set[bytes]] = {}
    resent = again = 0
    for record in records:
        values = seen.setdefault(record.key, set())
        if record.value in values:
            resent += 1
        elif values:
            again += 1
        values.add(record.value)
    return resent, again


class Proxy:
    """A Kafka-protocol proxy in front of the broker, to cut and restore the worker's link."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Proxy:
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [str(broker_binary()), "proxy", "--listener-url", url, "--advertised-listener-url",
             url, "--origin-url", f"tcp://{self.origin}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_port("127.0.0.1", self.port, 15), "proxy did not start"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None
