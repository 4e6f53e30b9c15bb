"""Prometheus metrics and the HTTP endpoints `/metrics`, `/healthz` and `/readyz`.

The registry is injected so tests read exact values. Everything is recorded in base units
(seconds, messages).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

from worker.codec import REASONS

log = logging.getLogger(__name__)

_CLIENT_TIMEOUT_S = 10.0
# A probe or a scrape sends a few hundred bytes of request. http.server alone accepts 100 header
# lines of 64 KiB each, held per connection: 300 slow clients took a worker to 1.9 GB.
_MAX_REQUEST_BYTES = 16 * 1024
_REQUEST_DEADLINE_S = 10.0


class _BoundedRequest:
    """The read side of one connection, refusing a request larger than *limit* bytes or one whose
    lines still arrive after *deadline* (``http.server`` answers 431 or drops the connection)."""

    def __init__(self, raw: io.BufferedIOBase, limit: int, deadline: float) -> None:
        self._raw = raw
        self._left = limit
        self._deadline = deadline

    def readline(self, size: int = -1) -> bytes:
        if time.monotonic() > self._deadline:
            raise TimeoutError("request not complete in time")
        if self._left <= 0:
            raise http.client.LineTooLong("request headers")
        line = self._raw.readline(self._left if size < 0 else min(size, self._left))
        self._left -= len(line)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away mid-answer: nothing to fix here
            log.debug("metrics client %s: %s", client_address, exc)
        else:
            log.error("metrics request from %s failed", client_address, exc_info=exc)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The worker's metrics, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            process_collector.ProcessCollector(registry=registry)
            platform_collector.PlatformCollector(registry=registry)
            gc_collector.GCCollector(registry=registry)
        self.registry = registry
        r = registry
        self.consumed = Counter(
            "streamclf_messages_consumed", "Records read from input topics.", ["topic"], registry=r
        )
        self.classified = Counter(
            "streamclf_messages_classified",
            "Records classified and acknowledged on the output topic, by label.",
            ["label"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "streamclf_messages_dead_lettered",
            "Records sent to the dead-letter topic and acknowledged, by reason.",
            ["reason"],
            registry=r,
        )
        for reason in REASONS:
            self.dead_lettered.labels(reason)
        self.batch_size = Histogram(
            "streamclf_batch_size", "Records per inference batch.", buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "streamclf_inference_duration_seconds",
            "Time to pad and classify one batch (tokenizing excluded).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "streamclf_end_to_end_latency_seconds",
            "From the input record's timestamp to the acknowledged output.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.padding_efficiency = Histogram(
            "streamclf_padding_efficiency_ratio",
            "Share of real (non-pad) tokens in each inference batch.",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
            registry=r,
        )
        self.lag = Gauge(
            "streamclf_consumer_lag",
            "Records not yet done per assigned partition: end offset minus the next offset to "
            "commit.",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "streamclf_consumer_lag_seconds",
            "Age of the oldest record not yet done per assigned partition (now minus its record "
            "timestamp); 0 when every record read is done.",
            ["topic", "partition"],
            registry=r,
        )
        self.in_flight = Gauge(
            "streamclf_in_flight_messages", "Records polled but not yet acknowledged.",
            registry=r,
        )
        self.offsets_committed = Counter(
            "streamclf_offsets_committed",
            "Records whose offsets were committed (sum of commit advances).",
            registry=r,
        )
        self.commits = Counter("streamclf_commits", "Successful offset commits.", registry=r)
        self.commit_failures = Counter(
            "streamclf_commit_failures", "Offset commits the broker refused.", registry=r
        )
        self.last_commit = Gauge(
            "streamclf_last_commit_timestamp_seconds",
            "Unix time of the last successful commit.",
            registry=r,
        )
        self.rebalances = Counter(
            "streamclf_rebalances", "Partition assignment changes seen by this worker.",
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "streamclf_assigned_partitions", "Partitions assigned to this worker.", registry=r
        )
        self.paused = Gauge(
            "streamclf_paused", "1 while fetching is paused for backpressure.", registry=r
        )
        self.pauses = Counter(
            "streamclf_pauses", "Times fetching was paused because max_in_flight was reached.",
            registry=r,
        )
        self.decode_process_failures = Counter(
            "streamclf_decode_process_failures",
            "Decoding process failures: a chunk of records read on the main thread instead, or a "
            "process found dead and replaced. No record is lost either way.",
            registry=r,
        )
        self.produce_errors = Counter(
            "streamclf_produce_errors",
            "Produce attempts the broker refused or that timed out (retried).",
            ["topic"],
            registry=r,
        )
        self.model_info = Gauge(
            "streamclf_model_info",
            "The loaded model (value 1).",
            ["model", "version", "device"],
            registry=r,
        )
        self.ready = Gauge(
            "streamclf_ready", "1 when the worker is ready (model loaded, partitions assigned).",
            registry=r,
        )


@dataclass
class Health:
    """What the probes report. Written by the worker loop, read by the HTTP threads."""

    model_loaded: bool = False
    assigned: bool = False
    connected: bool = True
    last_loop_at: float = field(default_factory=time.monotonic)
    connecting: bool = False  # creating the Kafka clients, retrying while the broker is away
    starting: bool = False  # loading the model (and starting decoding processes)
    stuck_reason: str | None = None
    loop_deadline_s: float = 60.0
    # A large model on a cold node or a first CUDA start can take minutes; a load that hangs
    # still fails liveness, later.
    start_deadline_s: float = 600.0

    def ready(self) -> tuple[bool, str]:
        if not self.model_loaded:
            return False, "model not loaded"
        if not self.connected:
            return False, "broker unreachable"
        if not self.assigned:
            return False, "no partitions assigned"
        return True, "ready"

    def alive(self) -> tuple[bool, str]:
        waited = time.monotonic() - self.last_loop_at
        if self.starting:
            if waited > self.start_deadline_s:
                return False, f"model not loaded after {self.start_deadline_s:.0f} s"
        elif not self.connecting and waited > self.loop_deadline_s:
            return False, f"worker loop has not run for {self.loop_deadline_s:.0f} s"
        if self.stuck_reason:
            return False, self.stuck_reason
        return True, "alive"


class ProgressClock:
    """How long the worker has gone without progress (a commit, or nothing left to commit).

    The count starts afresh when the broker is back after an outage: the worker gets a whole
    `health.stuck_after_s` to reconnect and catch up, instead of failing liveness (every pod at
    once) the moment the broker returns. An outage is noticed only at the next lag reading, so
    "time before the outage plus time after" would still count part of it."""

    def __init__(self, now: float) -> None:
        self._since = now
        self._away = False

    def progressed(self, now: float) -> None:
        self._since = now

    def unreachable(self) -> None:
        self._away = True

    def reachable(self, now: float) -> None:
        if self._away:
            self._since = now
            self._away = False

    def stalled_for(self, now: float) -> float:
        return now - self._since


class MetricsServer:
    """A small threaded HTTP server for the metrics and probe endpoints."""

    def __init__(self, metrics: Metrics, health: Health, host: str, port: int) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            # A connection that sends nothing is closed after this long, so idle or slow
            # clients cannot pile up threads (one per connection).
            timeout = _CLIENT_TIMEOUT_S

            def setup(self) -> None:
                super().setup()
                self.rfile = _BoundedRequest(  # type: ignore[assignment]
                    self.rfile, _MAX_REQUEST_BYTES, time.monotonic() + _REQUEST_DEADLINE_S)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                try:
                    status, body, content_type = self._answer(self.path.split("?", 1)[0])
                except Exception:  # a failing collector: answer, and log it as the worker does
                    log.exception("%s failed", self.path[:100])
                    status, body, content_type = 500, b"internal error\n", "text/plain"
                self._send(status, body, content_type)

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET()

            def _answer(self, path: str) -> tuple[int, bytes, str]:
                if path == "/metrics":
                    return 200, generate_latest(registry), CONTENT_TYPE_LATEST
                if path in ("/healthz", "/readyz"):
                    ok, why = health.alive() if path == "/healthz" else health.ready()
                    body = json.dumps({"status": "ok" if ok else "fail", "detail": why})
                    return (200 if ok else 503), body.encode(), "application/json"
                return 404, b"not found\n", "text/plain"

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would flood the log

        self._server = _Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never started
            self._server.shutdown()
        self._server.server_close()
