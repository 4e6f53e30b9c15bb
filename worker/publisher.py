"""Publishing: every produce of the worker (results, their routed copies, dead letters) on
one thread, retried until the broker takes it, and the acknowledgements that mark records done
(the offset tracker, the per-record metrics).

A send can block (up to `max_block_ms`) on a missing topic or a full buffer, so no other thread
produces: the main loop and the inference lanes hand their dead letters over (`dead_letter`),
and the inference thread its classified windows (`windows`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from worker import codec
from worker.codec import Rejection, Request, SourceRecord
from worker.config import KafkaConfig
from worker.kafka import key_partition
from worker.metrics import Metrics
from worker.offsets import OffsetTracker, Partition

log = logging.getLogger(__name__)

_PUBLISH_QUEUE_WINDOWS = 4
_RESEND_CHECK_S = 0.1  # how often an idle publisher looks for produces due again


class Prediction(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def scores(self) -> dict[str, float]: ...


# A classified window: its requests, their predictions (None where the record was dead-lettered
# instead) and the lanes' batches still running for it (their failures are dead-lettered).
Window = tuple[list[Request], list[Prediction | None], list[Future[None]]]


@dataclass(slots=True)
class Outgoing:
    """One record to produce, and what to do once the broker acknowledges it."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    on_ack: Callable[[object], None]  # called with the broker's acknowledgement (unused)
    source: SourceRecord
    is_result: bool
    attempts: int = 0
    completion: Completion | None = None  # shared by a result and its routed copy


class Completion:
    """Marks a record done once all its outputs (result and routed copy) are acknowledged, each
    itself or through the one dead letter that stands in for the copies too large to produce."""

    def __init__(self, parts: int, done: Callable[[object], None],
                 replaced: Callable[[object], None]) -> None:
        self._left = parts
        self._published = False
        self._replaced_parts = 0  # copies the dead letter stands in for
        self._dead_letter = "none"  # none | sent | acknowledged
        self._lock = threading.Lock()
        self._done = done  # at least one copy was published
        self._replaced = replaced  # every copy was replaced by the dead letter

    def ack(self, metadata: object) -> None:
        self._parts_done(1, metadata, published=True)

    def replace(self) -> bool:
        """A copy is too large to produce. True for the first one: the caller sends the dead
        letter; later copies are done together with it."""
        with self._lock:
            state = self._dead_letter
            if state != "acknowledged":
                self._replaced_parts += 1
                self._dead_letter = "sent"
        if state == "acknowledged":
            self._parts_done(1, None, published=False)
        return state == "none"

    def dead_letter_acknowledged(self) -> None:
        with self._lock:
            self._dead_letter = "acknowledged"
            parts, self._replaced_parts = self._replaced_parts, 0
        self._parts_done(parts, None, published=False)

    def _parts_done(self, parts: int, metadata: object, published: bool) -> None:
        with self._lock:
            self._left -= parts
            self._published = self._published or published
            finished, published = self._left == 0, self._published
        if finished:
            (self._done if published else self._replaced)(metadata)


def smaller_dead_letter(out: Outgoing) -> Outgoing | None:
    """A dead letter the broker refused for its size, without the value, then without the input's
    own headers, then without the key; the reason and source headers always stay. None when
    nothing is left to drop."""
    ours = [(n, v) for n, v in out.headers if n.startswith("streamclf-")]
    if out.value:
        dropped = ("streamclf-value-dropped", str(len(out.value)).encode())
        return replace(out, value=b"", headers=[*out.headers, dropped], attempts=0)
    if len(ours) < len(out.headers):
        return replace(out, headers=[*ours, ("streamclf-headers-dropped", b"1")], attempts=0)
    if out.key:
        dropped = ("streamclf-key-dropped", str(len(out.key)).encode())
        return replace(out, key=None, headers=[*out.headers, dropped], attempts=0)
    return None


class Publisher:
    """Runs on the publisher thread (`run`) once the worker has set `producer`, `model_id` and
    `routes`; `dead_letter` may be called from any thread."""

    def __init__(self, kafka: KafkaConfig, metrics: Metrics, tracker: OffsetTracker,
                 owned: Callable[[], frozenset[Partition]]) -> None:
        self._kafka = kafka
        self._metrics = metrics
        self._tracker = tracker
        # The partitions the worker holds now: results of any other are its new owner's.
        self._owned = owned
        self.producer: KafkaProducer | None = None
        self.model_id = ""
        self.routes: Mapping[str, str] = {}
        # Classified windows from the inference thread (None: no more); bounded, so a publisher
        # that falls behind slows inference down instead of piling results up in memory.
        self.windows: queue.Queue[Window | None] = queue.Queue(maxsize=_PUBLISH_QUEUE_WINDOWS)
        self._retries: list[tuple[float, Outgoing]] = []
        self._retries_lock = threading.Lock()
        # Dead letters from the other threads (main loop, lanes, the producer's callbacks).
        self._outbox: queue.SimpleQueue[Outgoing] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._classified_counters: dict[str, Any] = {}

    def stop(self) -> None:
        """End `run` once it has sent what it holds; a send waiting to be retried is left undone
        (the drain is over)."""
        self._stop.set()

    def run(self) -> None:
        """Publish classified windows in the order they were classified (input order), the dead
        letters of the other threads, and failed produces again when their backoff is over.
        Every produce happens here, not on the main thread: a send can block (up to
        `max_block_ms`) on a missing topic or a full buffer, and the main thread must keep
        polling. Runs until the drain is over (`stop`)."""
        while True:
            self._resend_due()
            self._send_outbox()
            try:
                item = self.windows.get(timeout=_RESEND_CHECK_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if item is None:
                continue  # no more windows; dead letters and retries may still come
            window, predictions, running = item
            for batch in running:
                batch.result()  # the batch's own failures were dead-lettered by the lane
            classified_at_ms = int(time.time() * 1000)  # the window's forward passes are done
            owned = self._owned()
            for request, prediction in zip(window, predictions, strict=True):
                if prediction is None or (request.record.topic,
                                          request.record.partition) not in owned:
                    continue  # dead-lettered, or its partition was revoked meanwhile
                try:
                    self._publish(request, prediction, classified_at_ms)
                except Exception as exc:  # one record must not stop every later result
                    log.exception("cannot publish the result of %s", request.record.ref)
                    self.dead_letter(Rejection(request.record, codec.OUTPUT,
                                               f"the result could not be built: {exc!r}"))

    def _publish(self, request: Request, prediction: Prediction, classified_at_ms: int) -> None:
        label = prediction.label
        value, headers = codec.encode_result(
            request, label, prediction.score, prediction.scores, self.model_id, classified_at_ms
        )
        record = request.record
        done: Callable[[object], None] = partial(self._done_classified, record, label)
        routed = self.routes.get(label)
        completion = None
        if routed:  # the record is done once both copies are acknowledged
            completion = Completion(2, done, partial(self._ack_record, record))
            done = completion.ack
        self._send(Outgoing(self._kafka.output_topic, record.key, value, headers, done,
                            record, True, 0, completion))
        if routed:
            self._send(Outgoing(routed, record.key, value, headers, done, record, True, 0,
                                completion))

    def dead_letter(self, rejection: Rejection, completion: Completion | None = None) -> None:
        """Produce *rejection* to the dead-letter topic; once acknowledged, the record is done
        (or, with *completion*, the result copy it stands in for is)."""
        record = rejection.record
        log.info("dead letter %s: %s (%s)", record.ref, rejection.reason, rejection.detail[:200])
        value = record.value if record.value is not None or record.key is not None else b""
        self._outbox.put(Outgoing(
            self._kafka.dlq_topic,
            record.key,
            value,
            codec.dead_letter_headers(rejection),
            partial(self._done_dead_letter, record, rejection.reason, completion),
            record,
            False,
        ))

    def _send_outbox(self) -> None:
        while True:
            try:
                out = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._send(out)

    def _send(self, out: Outgoing) -> None:
        """Hand *out* to the producer (publisher thread only). A send that times out before the
        record is even queued (no metadata for the topic, a full buffer: the broker is away) is
        retried right here, so later results of the same partition cannot overtake it."""
        producer = self.producer
        assert producer is not None
        while True:
            try:
                partition = None
                if out.key is not None:  # kafka-python's partitioner, in half the time
                    # Waits for the topic's metadata as send() would (KafkaTimeoutError).
                    partition = key_partition(out.key, producer.partitions_for(out.topic))
                future = producer.send(out.topic, key=out.key, value=out.value,
                                       headers=out.headers, partition=partition)
                break
            except KafkaTimeoutError as exc:
                if self._stop.is_set():  # the drain is over: leave it undone
                    return
                self._metrics.produce_errors.labels(out.topic).inc()
                backoff_s = self._backoff_s(out.attempts)
                log.warning("produce to %s timed out (attempt %d, retry in %.1f s): %s",
                            out.topic, out.attempts + 1, backoff_s, exc)
                out = replace(out, attempts=out.attempts + 1)
                self._stop.wait(backoff_s)
            except Exception as exc:  # e.g. a record too large for the producer
                self._send_failed(out, exc)
                return
        future.add_callback(out.on_ack)  # no wrapper: one call less per record
        future.add_errback(partial(self._send_failed, out))

    def _backoff_s(self, attempts: int) -> float:
        return min(self._kafka.produce_retry_max_backoff_ms / 1000.0,
                   0.1 * 2 ** min(attempts, 16))

    def _send_failed(self, out: Outgoing, exc: BaseException) -> None:
        self._metrics.produce_errors.labels(out.topic).inc()
        if isinstance(exc, MessageSizeTooLargeError):
            if out.is_result:
                # The result itself is too large (huge input headers): the input goes to the
                # dead-letter topic in its place, and counts as done once that is acknowledged.
                if out.completion is None or out.completion.replace():
                    self.dead_letter(Rejection(out.source, codec.OUTPUT_TOO_LARGE, str(exc)),
                                     out.completion)
                return
            smaller = smaller_dead_letter(out)
            if smaller is not None:
                self._outbox.put(smaller)
                return
        backoff_s = self._backoff_s(out.attempts)
        log.warning("produce to %s failed (attempt %d, retry in %.1f s): %s",
                    out.topic, out.attempts + 1, backoff_s, exc)
        with self._retries_lock:
            self._retries.append((time.monotonic() + backoff_s,
                                  replace(out, attempts=out.attempts + 1)))

    def _resend_due(self) -> None:
        now = time.monotonic()
        with self._retries_lock:
            due = [out for at, out in self._retries if at <= now]
            self._retries = [(at, out) for at, out in self._retries if at > now]
        for out in due:
            self._send(out)

    def _done_classified(self, record: SourceRecord, label: str, _metadata: object) -> None:
        counter = self._classified_counters.get(label)
        if counter is None:  # labels() takes a lock and builds a key: once per label
            counter = self._classified_counters[label] = self._metrics.classified.labels(label)
        counter.inc()
        if record.timestamp_ms >= 0:
            self._metrics.end_to_end_seconds.observe(
                max(0.0, time.time() - record.timestamp_ms / 1000.0)
            )
        self._tracker.ack((record.topic, record.partition), record.offset)

    def _done_dead_letter(self, record: SourceRecord, reason: str,
                          completion: Completion | None, _metadata: object) -> None:
        self._metrics.dead_lettered.labels(reason).inc()
        if completion is not None:
            completion.dead_letter_acknowledged()
        else:
            self._ack_record(record)

    def _ack_record(self, record: SourceRecord, _metadata: object = None) -> None:
        self._tracker.ack((record.topic, record.partition), record.offset)
