"""The worker loop: poll → decode → batch → classify → produce → acknowledge → commit.

Threads and what they own:
- the main thread owns the consumer (kafka-python's consumer is not thread-safe): it polls,
  decodes and tokenizes (or has `worker.decoding`'s processes do it), batches, pauses/resumes
  partitions and commits offsets;
- the inference thread sorts queued batches by length and hands them to `model.lanes` lane
  threads, each running the model on one batch at a time (the next batch starts as soon as a
  lane is free);
- the publisher thread (`worker.publisher`) encodes results and hands them to the producer, in
  input order, with the dead letters of every thread, and sends again what failed;
- the producer's IO thread acknowledges sends; its callbacks only mark offsets done.
Because inference never runs on the main thread, a slow batch never keeps the consumer from
polling, so the group membership survives it.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CorruptRecordError,
    FencedInstanceIdError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
)
from kafka.structs import OffsetAndMetadata

from worker import codec
from worker.batcher import Batcher
from worker.codec import InputSettings, Rejection, Request, SourceRecord
from worker.config import Config, ModelConfig
from worker.decoding import DecodePool, read
from worker.errors import ConfigError, MemberFenced
from worker.kafka import (
    consumer_settings,
    group_state,
    make_consumer,
    make_producer,
    producer_settings,
    source_record,
    unreadable_partition,
)
from worker.metrics import Health, Metrics, MetricsServer, ProgressClock
from worker.offsets import CommitClaim, OffsetTracker, Partition
from worker.publisher import Prediction, Publisher
from worker.stop import StopRequest

log = logging.getLogger(__name__)

_POLL_MS = 100  # the longest the loop waits in poll(); bounds reaction time to signals
# kafka-python 3.0 can sleep out a whole poll timeout with a fetched response already in its
# buffer (a fetch completing between its drain and its wait leaves "nothing in flight", and it
# backs off): at half load, 100 ms stalls made most of the p99 (199 → 126-135 ms in 20 ms
# slices). While records flow the loop polls in short slices; idle, in long ones (each slice
# costs CPU: an idle worker took 3.5 % of a core at 100 ms, 7 % at 20).
_BUSY_POLL_MS = 20
_BUSY_FOR_S = 1.0  # the loop counts as busy this long after a poll returned records
_DECODING_POLL_MS = 5  # while decoding processes hold records, the loop looks back this often
# A commit waits at most this long, so that a broker outage cannot stall the loop (and the
# probes it updates) for the client's default minute.
_COMMIT_TIMEOUT_MS = 5_000
# Each client's close after the drain. Shutdown ends within drain_timeout_s + the final commit
# (_COMMIT_TIMEOUT_MS) + both closes: 20 + 5 + 2 × 2 s with the defaults (README, Operations).
_CLOSE_TIMEOUT_MS = 2_000
_DRAIN_POLL_MS = 20  # the drain's polls: they only drive the group membership
_SORT_WINDOW_BATCHES = 8  # batches sorted together by length when a backlog queues them
# Paused partitions resume once in-flight records fall to this share of max_in_flight. At half
# (the former rule) the consumer sat idle while a thousand records drained: passthrough on short
# messages 13,800 → 17,700 msgs/s (median of four runs each; 0.75 was no better than half).
_RESUME_AT = 0.9
# Python's default (5 ms) is how long a thread may wait for the GIL while another runs Python:
# a forward pass re-takes the GIL between its steps and queued behind the main loop's decoding
# and tokenizing. 0.5 ms: backlog drain 617–621 → 658–686 msgs/s (docs/performance.md). Only
# while batches are handed out or run (_ShortGilSwitch): otherwise the Kafka path's threads
# hand the GIL to each other ten times as often for nothing (passthrough 13-16 % slower).
_GIL_SWITCH_INTERVAL_S = 0.0005


class Classifier(Protocol):
    """What the worker needs of a model (`model.predictor.Predictor` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def labels(self) -> tuple[str, ...]: ...

    @property
    def device(self) -> Any: ...

    def tokenize(self, text: str) -> list[int]: ...

    # With `input.decode_processes`, the classifier also needs `text_tokenizer`: `tokenize` as a
    # picklable callable (model.predictor.Predictor has one).

    def predict_ids(self, seqs: Sequence[Sequence[int]]) -> Sequence[Prediction]: ...


class _ShortGilSwitch:
    """Entered around forward passes and the hand-out of their batches: while any is inside, a
    thread waiting for the GIL gets it after `interval_s`; otherwise after the interval there
    was before. The interval is process-wide, so the process has one of these (_FORWARD_PASSES)."""

    def __init__(self, interval_s: float) -> None:
        self._short_s = interval_s
        self._usual_s = sys.getswitchinterval()
        self._running = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self._running += 1
            if self._running == 1:
                sys.setswitchinterval(self._short_s)

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                sys.setswitchinterval(self._usual_s)


_FORWARD_PASSES = _ShortGilSwitch(_GIL_SWITCH_INTERVAL_S)


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: those it may run on, capped by a container's CPU limit
    (a pod limited to 2 CPUs on a 32-core node gets 2, not 32)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup)
    return max(1, min(cores, limit)) if limit else cores


def cgroup_cpu_limit(root: Path) -> int | None:
    """The CPU limit of this process's cgroup in whole CPUs (rounded up), None when unlimited."""
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:  # cgroup v1: a quota of -1 means no limit
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    return -(-q // p) if q > 0 and p > 0 else None


def plan_for(model: ModelConfig, device: Any) -> tuple[int, int]:
    """(lanes, torch threads per lane) for `model.lanes`/`model.threads` on this device."""
    on_gpu = str(device).startswith("cuda")
    return inference_plan(model.lanes, model.threads, available_cores(), on_gpu)


def inference_plan(lanes: int, threads: int, cores: int, on_gpu: bool) -> tuple[int, int]:
    """(lanes, torch threads per lane) for the configured values, 0 meaning auto.

    Measured on 2 cores (docs/performance.md): two lanes of one torch thread each classify a
    backlog ~1.4× faster than one lane of one thread, and one lane of two threads is ~0.6× as
    fast (intra-op threads wait for each other whenever the Kafka path takes a core). A GPU
    runs one batch at a time anyway.
    """
    if lanes <= 0:
        lanes = 1 if on_gpu else max(1, min(cores, _SORT_WINDOW_BATCHES))
    if threads <= 0:
        threads = 1 if lanes > 1 else max(1, cores - 1)
    return lanes, threads


def poll_timeout_ms(since_records_s: float, until_due_s: float | None) -> int:
    """How long the next poll may wait: until the pending batch is due, and no longer than a
    short slice while records flow (`_BUSY_POLL_MS`) or a long one when idle."""
    longest = _BUSY_POLL_MS if since_records_s < _BUSY_FOR_S else _POLL_MS
    return longest if until_due_s is None else min(longest, int(until_due_s * 1000))


def routes_for(routes: dict[str, str], labels: Sequence[str], model_id: str) -> dict[str, str]:
    """`output.routes` keyed by the model's own labels. A key matches its label exactly, or
    else ignoring case when that is unambiguous (environment variables are read lower-cased:
    STREAMCLF__OUTPUT__ROUTES__FR gives `fr`). A key that names no label is a config error, not
    a route that never fires."""
    resolved = {}
    for key, topic in routes.items():
        if key in labels:
            resolved[key] = topic
            continue
        matches = [label for label in labels if label.lower() == key.lower()]
        if len(matches) != 1:
            hint = ""
            if key in ("true", "false"):  # YAML 1.1: `no:` (Norwegian) is the boolean false
                hint = "; YAML reads an unquoted yes/no/on/off as a boolean: quote the label"
            raise ConfigError(f"output.routes.{key}: not a label of {model_id} "
                              f"(labels: {', '.join(labels)}){hint}")
        resolved[matches[0]] = topic
    return resolved


def _finite(prediction: Prediction) -> bool:
    # A NaN or an infinity makes the sum non-finite (probabilities cannot overflow it).
    total = prediction.score + sum(prediction.scores.values())
    return total - total == 0.0


def _kafka_offsets(offsets: dict[Partition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


def _in_partitions(partitions: set[Partition], request: Request) -> bool:
    return (request.record.topic, request.record.partition) in partitions


# A re-balance event for the main loop: its kind, the partitions, and for a revocation the
# commit the listener sent for them (None if it sent none).
RebalanceEvent = tuple[str, set[TopicPartition], CommitClaim | None]


class _RebalanceEvents(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread, so it must not block: it queues the events for the main
    loop and, for revoked partitions, sends their commit without waiting for it
    (``commit_revoked``, which returns the commit's claim or None)."""

    def __init__(self, commit_revoked: Callable[[set[TopicPartition]], CommitClaim | None]
                 ) -> None:
        self.events: queue.SimpleQueue[RebalanceEvent] = queue.SimpleQueue()
        self._commit_revoked = commit_revoked

    def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = set(revoked)
        sent = None
        try:
            sent = self._commit_revoked(partitions)
        except Exception as exc:  # never into kafka-python's re-balance: the event must queue
            log.warning("commit of revoked partitions not sent: %s", exc)
        self.events.put(("revoked", partitions, sent))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.events.put(("assigned", set(assigned), None))

    def on_partitions_lost(self, lost: Any) -> None:
        self.events.put(("lost", set(lost), None))


class Worker:
    def __init__(
        self,
        config: Config,
        classifier: Classifier | None = None,
        metrics: Metrics | None = None,
        stop_event: StopRequest | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.health = Health()
        self._classifier = classifier
        self._stop = stop_event or StopRequest()
        # Built now so that a bad setting stops the worker before it loads the model.
        self._consumer_settings = consumer_settings(config.kafka)
        self._producer_settings = producer_settings(config.kafka, config.input.max_bytes)
        self._max_poll_records = int(self._consumer_settings["max_poll_records"])
        self._tracker = OffsetTracker()
        self._batcher: Batcher[Request] = Batcher(
            config.batching.max_batch_size, config.batching.max_wait_ms / 1000.0
        )
        self._input = InputSettings(
            format=config.input.format,
            text_fields=tuple(config.input.text_fields),
            id_field=config.input.id_field,
            max_bytes=config.input.max_bytes,
        )
        self._batches: queue.Queue[list[Request] | None] = queue.Queue()
        # Every produce, on its own thread: results, routed copies, dead letters.
        self._publisher = Publisher(config.kafka, self.metrics, self._tracker,
                                    lambda: self._owned)
        self._listener = _RebalanceEvents(self._commit_revoked_at_once)
        self._closing = False  # kafka-python's close revokes too: no commit from the listener then
        # The listener's commits of partitions revoked during the drain, for its last word.
        self._drain_revoked_commits: list[CommitClaim] = []
        self._paused = False
        self._last_tracked: dict[Partition, int] = {}
        # The partitions assigned now; the inference and publisher threads skip the records of
        # any other (revoked or lost: no longer tracked or counted, the new owner redoes them).
        # Replaced whole, so those threads read it without a lock.
        self._owned: frozenset[Partition] = frozenset()
        # Set by the drain: the partitions whose work it finishes (not those assigned during it).
        self._drain_owned: frozenset[Partition] | None = None
        self._last_commit_at = 0.0
        self._commit_failures = 0  # the drain's last word needs them, revocations' included
        self._commits_wait_for_rebalance = False  # said once per re-balance, not per try
        self._last_lag_at = 0.0
        self._progress = ProgressClock(time.monotonic())
        self._records_at = float("-inf")  # when a poll last returned records
        self._lag_total = 0
        self._server: MetricsServer | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._lanes = 1
        self._decoding: DecodePool | None = None
        self.metrics_port: int | None = None
        # Series that exist from the start, so rate() sees their first increase.
        for topic in config.kafka.input_topics:
            self.metrics.consumed.labels(topic)
        for topic in {config.kafka.output_topic, config.kafka.dlq_topic,
                      *config.output.routes.values()}:
            self.metrics.produce_errors.labels(topic)

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain and exit (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Run until `stop()`; drain, commit and return the exit code."""
        cfg = self.config
        if cfg.metrics.enabled:
            try:
                self._server = MetricsServer(self.metrics, self.health, cfg.metrics.host,
                                             cfg.metrics.port)
            except OSError as exc:  # e.g. the port is taken
                raise ConfigError(f"metrics.port: cannot listen on {cfg.metrics.host}:"
                                  f"{cfg.metrics.port}: {exc.strerror or exc}") from exc
            self._server.start()
            self.metrics_port = self._server.port
            log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, self.metrics_port)
        try:
            self.health.starting, self.health.last_loop_at = True, time.monotonic()
            try:
                classifier = self._load_classifier()
                self._start_decoding(classifier)
            finally:
                self.health.starting, self.health.last_loop_at = False, time.monotonic()
            if self._stop.is_set() or not self._connect():
                return 0  # stopped before the broker was reachable: nothing was consumed
            inference = threading.Thread(
                target=self._inference_loop, args=(classifier,), name="inference", daemon=True
            )
            publisher = threading.Thread(target=self._publisher.run, name="publisher",
                                         daemon=True)
            inference.start()
            publisher.start()
            log.info("consuming %s as group %s", cfg.kafka.input_topics, cfg.kafka.group_id)
            try:
                while not self._stop.is_set():
                    self._step()
                self._drain(inference, publisher)
            except MemberFenced as exc:
                # Its partitions belong to the other member now: nothing more to drain or commit.
                log.error("%s", exc)
                return 1
        finally:
            self._close()
        return 0

    def _connect(self) -> bool:
        """Create producer and consumer, retrying while the broker is unreachable."""
        # Retrying is being alive: /healthz must not have the pod restarted while the broker is
        # away (one attempt can take longer than the loop deadline allows a loop step).
        self.health.connecting = True
        try:
            return self._connect_with_retries()
        finally:
            self.health.connecting = False
            self.health.last_loop_at = time.monotonic()

    def _connect_with_retries(self) -> bool:
        backoff_s = 1.0
        while not self._stop.is_set():
            try:
                self._producer = self._producer or make_producer(self._producer_settings)
                self._publisher.producer = self._producer
                self._consumer = make_consumer(self._consumer_settings)
            except KafkaError as exc:
                self.health.connected = False
                log.warning("cannot reach the broker (retry in %.0f s): %s", backoff_s, exc)
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, 30.0)
                continue
            self.health.connected = True
            self._consumer.subscribe(self.config.kafka.input_topics, listener=self._listener)
            return True
        return False

    def _load_classifier(self) -> Classifier:
        loaded = None  # the model this worker loads itself, if it was not given one
        if self._classifier is None:
            from model.artifact import ArtifactError
            from model.predictor import Predictor

            m = self.config.model
            try:
                loaded = Predictor.load(
                    m.path, device=m.device, max_tokens=m.max_tokens, threshold=m.threshold,
                    quantize=m.quantize,
                )
            except ArtifactError as exc:
                raise ConfigError(f"model.path: {exc}") from exc
            except ValueError as exc:  # e.g. cuda requested on a machine without it
                raise ConfigError(f"model: {exc}") from exc
            if m.threshold is not None and not loaded.has_threshold_decision:
                raise ConfigError(f"model.threshold: {loaded.name}@{loaded.version} (labels "
                                  f"{list(loaded.labels)}) has no positive label to cut on; it "
                                  "gives the most probable label")
            self._classifier = loaded
        c = self._classifier
        self._lanes, threads = plan_for(self.config.model, c.device)
        if loaded is not None:  # a classifier passed in keeps the torch settings it came with
            import torch

            torch.set_num_threads(threads)
            loaded.warm_up()  # before readiness: the first forward passes are the slowest
        model_id = f"{c.name}@{c.version}"
        self._publisher.model_id = model_id
        self._publisher.routes = routes_for(self.config.output.routes, c.labels, model_id)
        self.metrics.model_info.labels(c.name, c.version, str(c.device)).set(1)
        for label in c.labels:
            self.metrics.classified.labels(label)
        self.health.model_loaded = True
        log.info("model %s loaded on %s%s, labels %s, %d lane(s)", model_id, c.device,
                 " (int8)" if getattr(c, "quantized", False) else "", list(c.labels), self._lanes)
        return c

    def _start_decoding(self, classifier: Classifier) -> None:
        processes = self.config.input.decode_processes
        if not processes:
            return
        tokenizer = getattr(classifier, "text_tokenizer", None)
        if tokenizer is None:
            raise ConfigError("input.decode_processes: the classifier has no text_tokenizer to "
                              "give the decoding processes; set it to 0")
        try:
            pickle.dumps(tokenizer)
        except Exception as exc:
            raise ConfigError("input.decode_processes: the classifier's text_tokenizer cannot be "
                              f"sent to another process ({type(exc).__name__}: {exc})") from exc
        self._decoding = DecodePool(processes, self._input, tokenizer,
                                    self.metrics.decode_process_failures.inc)
        self._decoding.start()  # before readiness, like the model's warm-up
        log.info("decoding and tokenizing in %d process(es)", processes)

    # -- the main loop -------------------------------------------------------------------------

    def _step(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._apply_rebalance_events()
        now = time.monotonic()
        timeout_ms = poll_timeout_ms(now - self._records_at, self._batcher.seconds_until_due(now))
        decoding = self._decoding
        if decoding is not None and decoding.pending:
            timeout_ms = min(timeout_ms, _DECODING_POLL_MS)
        room = self.config.batching.max_in_flight - self._tracker.in_flight()
        try:
            polled = consumer.poll(timeout_ms=timeout_ms,
                                   max_records=max(1, min(self._max_poll_records, room)))
        except CorruptRecordError as exc:
            self._skip_unreadable_record(exc)
            polled = {}
        except KafkaError as exc:
            self._stop_if_fenced(exc)
            log.warning("poll failed: %s", exc)
            polled = {}
        if polled:
            self._records_at = time.monotonic()
        # Events queued during this poll: a partition lost or revoked in it must not be
        # committed by this step's commit below.
        self._apply_rebalance_events()
        for tp, records in polled.items():
            self._accept(tp.topic, tp.partition, records)
        if decoding is not None:
            self._take_decoded(decoding)
        batch = self._batcher.due(time.monotonic())
        if batch:
            self._submit(batch)
        self._commit()
        self._apply_backpressure()
        self._refresh_lag()
        self.health.last_loop_at = time.monotonic()

    def _accept(self, topic: str, partition: int, records: list[Any]) -> None:
        """Track, decode and batch the records polled from one partition (in offset order)."""
        last = self._last_tracked.get((topic, partition), -1)
        # Records re-fetched after a re-assignment are already being handled.
        fresh = [r for r in records if r.offset > last]
        if not fresh:
            return
        self._last_tracked[(topic, partition)] = fresh[-1].offset
        self._tracker.track_many((topic, partition), [r.offset for r in fresh],
                                 [r.timestamp for r in fresh])
        self.metrics.consumed.labels(topic).inc(len(fresh))
        if self._decoding is not None:
            self._decoding.submit((topic, partition), [source_record(r) for r in fresh])
            return
        now = time.monotonic()
        classifier = self._classifier
        assert classifier is not None
        # Tokenized here, not on the inference thread: that thread then holds the GIL only
        # briefly between forward passes, and this Python work runs on the other core.
        for raw in fresh:
            self._take(read(source_record(raw), self._input, classifier.tokenize), now)

    def _skip_unreadable_record(self, exc: CorruptRecordError) -> None:
        """Dead-letter a record the Kafka client cannot parse, and read on after it.

        Its key, value and headers cannot be had, so the dead letter carries only where it was
        (``streamclf-source``) and why; it counts like any record, so the offset is committed
        once that dead letter is acknowledged."""
        consumer = self._consumer
        assert consumer is not None
        tp = unreadable_partition(consumer)
        if tp is None or tp not in consumer.assignment():
            log.error("poll failed on a record the client cannot read, partition unknown: %s",
                      exc)
            return
        offset = consumer.position(tp)
        partition = (tp.topic, tp.partition)
        consumer.seek(tp, offset + 1)
        if offset <= self._last_tracked.get(partition, -1):
            return  # already dead-lettered before a re-assignment
        self._last_tracked[partition] = offset
        self._tracker.track_many(partition, [offset])
        self.metrics.consumed.labels(tp.topic).inc()
        stand_in = SourceRecord(tp.topic, tp.partition, offset, -1, None, None, ())
        self._publisher.dead_letter(Rejection(stand_in, codec.DECODE,
                                    f"the Kafka client cannot read this record: {exc}"[:500]))

    def _take_decoded(self, decoding: DecodePool) -> None:
        for polled_at, results in decoding.take_ready():
            for result in results:
                self._take(result, polled_at)  # the batch timer runs from the poll

    def _take(self, result: Request | Rejection, now: float) -> None:
        if isinstance(result, Rejection):
            self._publisher.dead_letter(result)
            return
        batch = self._batcher.add(result, now)
        if batch:
            self._submit(batch)

    def _submit(self, batch: list[Request]) -> None:
        self._batches.put(batch)

    # -- inference (its own thread) ------------------------------------------------------------

    def _inference_loop(self, classifier: Classifier) -> None:
        lanes = None
        if self._lanes > 1:
            lanes = ThreadPoolExecutor(self._lanes, thread_name_prefix="inference-lane")
        try:
            self._classify_batches(classifier, lanes)
        finally:
            if lanes is not None:
                lanes.shutdown()
            self._publisher.windows.put(None)  # the publisher finishes what it has, then stops

    def _classify_batches(self, classifier: Classifier, lanes: ThreadPoolExecutor | None) -> None:
        # One permit per lane: a batch is handed to a lane only when one is free, so under a
        # backlog the batches wait here, in the queue, where the next window can sort them.
        free_lanes = threading.Semaphore(self._lanes)
        while True:
            window = self._batches.get()
            if window is None:
                return
            window = list(window)
            # Under a backlog several batches are waiting: classify them together, sorted by
            # length, so each model batch pads less. Results still go out in input order.
            stopping = False
            for _ in range(_SORT_WINDOW_BATCHES - 1):
                try:
                    more = self._batches.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                window.extend(more)
            window = self._owned_only(window)
            if not window:
                if stopping:
                    return
                continue
            predictions: list[Prediction | None] = [None] * len(window)
            # Handing batches to lanes counts as forward-pass time: a lane waits on this thread
            # (short GIL waits) for its next batch, so a backlog runs at the short interval.
            with _FORWARD_PASSES:
                running = self._classify_window(classifier, window, predictions, lanes,
                                                free_lanes)
            # Publishing runs on its own thread: its Python work (encoding, the producer's
            # record building) overlaps the forward passes, which release the GIL. The
            # publisher waits for the window's batches still running on lanes; this thread
            # goes on to the next window, so a lane that is free takes the next batch at once
            # instead of waiting for the whole window before it.
            self._publisher.windows.put((window, predictions, running))
            if stopping:
                return

    def _owned_only(self, window: list[Request]) -> list[Request]:
        """The requests of *window* whose partitions are still assigned: records of a revoked
        partition are the new owner's to classify, and are no longer counted in flight here."""
        owned = self._owned
        kept = [r for r in window if (r.record.topic, r.record.partition) in owned]
        if len(kept) < len(window):
            log.info("dropped %d records of partitions taken from this worker (revoked or "
                     "lost) before classifying them", len(window) - len(kept))
        return kept

    def _classify_window(
        self,
        classifier: Classifier,
        window: list[Request],
        out: list[Prediction | None],
        lanes: ThreadPoolExecutor | None,
        free_lanes: threading.Semaphore,
    ) -> list[Future[None]]:
        """Classify the window into `out` (window order; None where the record went to the
        dead-letter topic), in batches sorted by length. Without lanes this returns when all are
        done; with lanes, once every batch has a lane, with the batches still running."""
        seqs = [request.ids for request in window]
        order = sorted(range(len(window)), key=lambda i: len(seqs[i]))
        size = self.config.batching.max_batch_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        classify = partial(self._classify_chunk, classifier, window, seqs, out)
        if lanes is None:
            for chunk in chunks:
                classify(chunk)
            return []
        running = []
        for chunk in chunks:
            # The forward pass releases the GIL, so the lanes run on separate cores. Each
            # batch fills its own slots of `out`.
            free_lanes.acquire()
            batch = lanes.submit(classify, chunk)
            batch.add_done_callback(lambda _batch: free_lanes.release())
            running.append(batch)
        return running

    def _classify_chunk(
        self,
        classifier: Classifier,
        window: list[Request],
        seqs: list[Sequence[int]],
        out: list[Prediction | None],
        chunk: list[int],
        retry: bool = False,
    ) -> None:
        """Classify window[i] for i in chunk into out[i]. A failing batch is retried in halves,
        down to single records: one bad record in a batch of n (or a batch too large for GPU
        memory) costs about 2·log2(n) more model calls instead of n, and only a record that
        fails on its own goes to the dead-letter topic."""
        try:
            predictions = self._classify(classifier, [seqs[i] for i in chunk])
            if len(predictions) != len(chunk):  # checked first: no record gets both
                raise ValueError(f"the model gave {len(predictions)} predictions for "
                                 f"{len(chunk)} texts")
            for i, prediction in zip(chunk, predictions, strict=True):
                if _finite(prediction):
                    out[i] = prediction
                else:  # NaN is not JSON: such a result would break its consumers
                    self._inference_failed(window[i], ValueError(
                        f"the model gave non-finite scores {prediction.scores}"))
            return
        except Exception as exc:
            if not retry:  # the traceback once per batch, not once per halving
                log.exception("inference failed for a batch of %d", len(chunk))
            if len(chunk) == 1:
                self._inference_failed(window[chunk[0]], exc)
                return
        half = len(chunk) // 2
        self._classify_chunk(classifier, window, seqs, out, chunk[:half], retry=True)
        self._classify_chunk(classifier, window, seqs, out, chunk[half:], retry=True)

    def _inference_failed(self, request: Request, exc: Exception) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        self._publisher.dead_letter(Rejection(request.record, codec.INFERENCE, detail))

    def _classify(
        self, classifier: Classifier, seqs: Sequence[Sequence[int]]
    ) -> Sequence[Prediction]:
        started = time.perf_counter()
        with _FORWARD_PASSES:
            predictions = classifier.predict_ids(seqs)
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(seqs))
        longest = max((len(s) for s in seqs), default=0)
        if longest:
            self.metrics.padding_efficiency.observe(
                sum(len(s) for s in seqs) / (longest * len(seqs))
            )
        return predictions

    # -- offsets, rebalances, backpressure, lag ------------------------------------------------

    def _commit(self, force: bool = False, only: set[Partition] | None = None,
                timeout_ms: int = _COMMIT_TIMEOUT_MS) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit_at < self.config.kafka.commit_interval_ms / 1e3:
            return
        if only is None:  # a commit on revoke runs before this step's records are tracked
            self._last_commit_at = now  # and leaves the other partitions' timer as it was
            self._skip_unreturned_offsets()
        offsets = self._tracker.committable()
        if only is not None:
            offsets = {p: o for p, o in offsets.items() if p in only}
        if not offsets:
            if self._lag_total == 0:
                self._progress.progressed(now)
            return
        consumer = self._consumer
        assert consumer is not None
        try:
            consumer.commit(_kafka_offsets(offsets), timeout_ms=timeout_ms)
        except KafkaError as exc:
            self._stop_if_fenced(exc)
            self.metrics.commit_failures.inc()
            self._commit_failures += 1
            if not isinstance(exc, RebalanceInProgressError):
                log.warning("offset commit failed (will retry): %s", exc)
            elif not self._commits_wait_for_rebalance:
                # Refused at every try until the group's join is over (seconds): say it once.
                self._commits_wait_for_rebalance = True
                log.info("offset commits wait for the group's re-balance to finish")
            if isinstance(exc, (KafkaTimeoutError, KafkaConnectionError)):
                self._set_connected(False)
            return
        self._set_connected(True)
        self._commits_wait_for_rebalance = False
        covered = self._tracker.mark_committed(offsets)
        self.metrics.offsets_committed.inc(covered)
        self.metrics.commits.inc()
        self.metrics.last_commit.set(time.time())
        self._progress.progressed(now)

    def _stop_if_fenced(self, exc: KafkaError) -> None:
        """Raise MemberFenced for a fencing error. A fenced member would otherwise go on
        classifying partitions the broker has given to the other, its commits refused for
        good, and kafka-python has stopped its heartbeats."""
        if isinstance(exc, FencedInstanceIdError):
            raise MemberFenced(
                f"kafka.group_instance_id {self.config.kafka.group_instance_id!r}: another "
                f"member of group {self.config.kafka.group_id!r} joined with the same id, and "
                "the broker fenced this one; give each member its own id") from exc

    def _commit_revoked_at_once(self, revoked: set[TopicPartition]) -> CommitClaim | None:
        """On kafka-python's IO thread, as partitions are revoked: send the commit of what is
        done of them before the group's next join starts, and return its claim (None if there
        was nothing to send). From the main loop, the commit came after kafka-python had begun
        that join within the same poll and was refused (it refuses commits until a join is
        over), and the new owner classified those records again. Not waited for: this thread
        must not block."""
        consumer = self._consumer
        gone = {(tp.topic, tp.partition) for tp in revoked}
        offsets = {p: o for p, o in self._tracker.committable().items() if p in gone}
        if consumer is None or self._closing or not offsets:
            return None
        # Claimed now: the partitions may be forgotten by the time the broker answers, or
        # given back within the same poll, and then committed further from the main loop.
        # The claim, not the returned future, tells when it is answered: with the coordinator
        # unknown, that future is the coordinator lookup's.
        claim = self._tracker.claim_commit(offsets)
        try:
            consumer.commit_async(_kafka_offsets(offsets),
                                  callback=partial(self._revoked_commit_done, claim))
        except Exception:
            self._tracker.settle_claim(claim, accepted=False)  # the main loop commits them
            raise
        return claim

    def _revoked_commit_done(self, claim: CommitClaim, offsets: dict[TopicPartition, Any],
                             response: Any) -> None:
        """Called by kafka-python within a later poll or commit (any thread): never raises."""
        try:
            accepted = not isinstance(response, Exception)
            self.metrics.offsets_committed.inc(self._tracker.settle_claim(claim, accepted))
            if not accepted:
                self.metrics.commit_failures.inc()
                log.warning("commit of revoked partitions refused: %s; their new owner will "
                            "classify again what was done since their last commit", response)
            else:
                self.metrics.commits.inc()
                self.metrics.last_commit.set(time.time())
                log.debug("committed revoked partitions: %s",
                          {f"{tp.topic}:{tp.partition}": m.offset for tp, m in offsets.items()})
        except Exception:  # noqa: BLE001 - a metric or log failure must not reach kafka-python
            pass

    def _skip_unreturned_offsets(self) -> None:
        """Let idle partitions commit the consumer's position. A transactional producer's commit
        marker takes an offset no poll returns; committing only after the last record returned
        would leave a lag of 1 for good (KEDA would never scale down, and /healthz would fail
        after ``stuck_after_s`` of quiet). Main thread only: every record polled is tracked."""
        consumer = self._consumer
        assert consumer is not None
        for tp in consumer.assignment():
            partition = (tp.topic, tp.partition)
            if self._drain_owned is not None and partition not in self._drain_owned:
                continue  # assigned during the drain: nothing of it was read here
            done_to = self._tracker.position(partition)
            highwater = consumer.highwater(tp)
            if highwater is None or (done_to is not None and done_to >= highwater):
                continue  # nothing fetched yet, or no offsets beyond those done
            if self._tracker.in_flight({partition}):
                continue
            try:
                position = consumer.position(tp, timeout_ms=0)  # known: no broker round-trip
            except KafkaError:
                continue
            if position is not None:
                self._tracker.skip_to(partition, position)

    def _set_connected(self, connected: bool) -> None:
        self.health.connected = connected
        self.metrics.ready.set(1 if self.health.ready()[0] else 0)

    def _apply_rebalance_events(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        changed = False
        while True:
            try:
                kind, tps, sent = self._listener.events.get_nowait()
            except queue.Empty:
                break
            changed = True
            self.metrics.rebalances.inc()
            log.info("partitions %s: %s", kind, sorted(f"{tp.topic}:{tp.partition}" for tp in tps))
            if kind == "assigned":
                if self._paused and tps:
                    # A later event of the same poll may have taken some back already.
                    consumer.pause(*(tps & consumer.assignment()))
                self._progress.progressed(time.monotonic())
                continue
            current = consumer.assignment()
            gone = {(tp.topic, tp.partition) for tp in tps if tp not in current}
            if not gone:
                continue
            if self._decoding is not None:
                self._decoding.forget(gone)
            self._batcher.discard(partial(_in_partitions, gone))
            if kind == "revoked":
                if sent is None:
                    self._commit(force=True, only=gone)  # the listener had nothing to send
                elif self._drain_owned is not None:
                    self._drain_revoked_commits.append(sent)
            self._tracker.forget(gone)
            for topic, partition in gone:
                self._last_tracked.pop((topic, partition), None)
                for gauge in (self.metrics.lag, self.metrics.lag_seconds):
                    try:
                        gauge.remove(topic, str(partition))
                    except KeyError:
                        pass
        if changed:
            assigned = consumer.assignment()
            self._owned = frozenset((tp.topic, tp.partition) for tp in assigned)
            self.health.assigned = bool(assigned)
            self.metrics.assigned_partitions.set(len(assigned))
            self.metrics.ready.set(1 if self.health.ready()[0] else 0)

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        in_flight = self._tracker.in_flight()
        self.metrics.in_flight.set(in_flight)
        limit = self.config.batching.max_in_flight
        if not self._paused and in_flight >= limit:
            consumer.pause(*consumer.assignment())
            self._paused = True
            self.metrics.paused.set(1)
            self.metrics.pauses.inc()
        elif self._paused and in_flight <= limit * _RESUME_AT:
            consumer.resume(*consumer.paused())
            self._paused = False
            self.metrics.paused.set(0)

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_at < self.config.kafka.lag_refresh_ms / 1000.0:
            return
        self._last_lag_at = now
        consumer = self._consumer
        assert consumer is not None
        assigned = list(consumer.assignment())
        if not assigned:
            self.health.connected = True
            return
        # The age needs no broker: it keeps growing while the broker is away.
        wall_now = time.time()
        for tp in assigned:
            oldest = self._tracker.oldest_timestamp_ms((tp.topic, tp.partition))
            age = 0.0 if oldest is None else max(0.0, wall_now - oldest / 1000.0)
            self.metrics.lag_seconds.labels(tp.topic, str(tp.partition)).set(age)
        try:
            ends = consumer.end_offsets(assigned, timeout_ms=2000)
        except KafkaError as exc:
            log.warning("cannot read end offsets (broker unreachable?): %s", exc)
            self._set_connected(False)
            self._progress.unreachable()
            return
        self._set_connected(True)
        self._progress.reachable(now)
        total = 0
        for tp in assigned:
            end = max(ends.get(tp) or 0, consumer.highwater(tp) or 0)
            position = self._tracker.position((tp.topic, tp.partition))
            if position is None:
                try:
                    position = consumer.position(tp, timeout_ms=1000)
                except KafkaError:
                    continue
            lag = max(0, end - (position or 0))
            total += lag
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        self._lag_total = total
        self.metrics.ready.set(1 if self.health.ready()[0] else 0)
        stuck_for = self._progress.stalled_for(now)
        if total > 0 and stuck_for > self.config.health.stuck_after_s:
            self.health.stuck_reason = (
                f"lag {total} but no offset committed for {stuck_for:.0f} s"
            )
        else:
            self.health.stuck_reason = None

    # -- shutdown ------------------------------------------------------------------------------

    def _drain(self, inference: threading.Thread, publisher: threading.Thread) -> None:
        consumer = self._consumer
        assert consumer is not None
        # From the stop request: the loop step it interrupted (a commit or an end-offsets
        # request to an unreachable broker can take seconds) counts against the deadline.
        stopped_at = self._stop.requested_at or time.monotonic()
        deadline = stopped_at + self.config.shutdown.drain_timeout_s
        log.info("draining: %d records in flight", self._tracker.in_flight())
        self._drain_owned = self._owned
        consumer.pause(*consumer.assignment())  # stop fetching; keep the membership
        decoding = self._decoding
        while decoding is not None and decoding.pending and time.monotonic() < deadline:
            decoding.wait(deadline - time.monotonic())
            self._take_decoded(decoding)
        batch = self._batcher.flush()
        if batch:
            self._submit(batch)
        self._batches.put(None)
        while self._tracker.in_flight() > 0 and time.monotonic() < deadline:
            if group_state(consumer) == "joining":
                self._drain_poll()  # commits are refused until the join is over
                continue
            # A commit to a broker that is away must not run past the deadline.
            self._commit(timeout_ms=max(100, int((deadline - time.monotonic()) * 1000)))
            # The publisher sends what is left (results, dead letters, retries) and
            # acknowledgements arrive on the producer's thread; the consumer's IO thread keeps
            # heartbeating meanwhile. No poll: a re-join the group asks for would start, and
            # stop the commits until it is over (3 s and more on the embedded broker).
            time.sleep(0.02)
        self._publisher.stop()
        inference.join(timeout=max(0.0, deadline - time.monotonic()))
        publisher.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._producer is not None:
            try:
                self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            except KafkaError as exc:  # the deadline came first: commit what is acknowledged
                log.warning("producer flush at the drain deadline: %s", exc)
        while group_state(consumer) == "joining" and time.monotonic() < deadline:
            self._drain_poll()
        failures_before = self._commit_failures
        self._commit(force=True)
        # Join again if the group asks for it, and only then leave: a member that left with
        # the group waiting for it to re-join left it re-joining for good on the embedded
        # broker (the next generation's leader was the member gone, so nobody got partitions).
        while group_state(consumer) in ("joining", "rejoin") and time.monotonic() < deadline:
            self._drain_poll()
        # The commits the listener sent for partitions revoked in these joins: their answers
        # reach the claims through kafka-python's callbacks, which run within a poll.
        while (any(not claim.settled for claim in self._drain_revoked_commits)
               and time.monotonic() < deadline):
            self._drain_poll()
        revoked_commit_failed = not all(claim.accepted for claim in self._drain_revoked_commits)
        left = self._tracker.in_flight()
        uncommitted = self._tracker.committable()
        if left:
            log.warning("drain deadline reached: %d records not acknowledged; they will be "
                        "classified again after restart", left)
        elif uncommitted or self._commit_failures > failures_before or revoked_commit_failed:
            # A partition revoked in the re-join above is forgotten even when its commit failed.
            log.warning("drained, but the last commit failed: %s will repeat what they did "
                        "since their last commit",
                        f"{len(uncommitted)} partitions" if uncommitted else "revoked partitions")
        else:
            log.info("drained: every record acknowledged and committed")

    def _drain_poll(self) -> None:
        """Poll with every partition paused, only so that kafka-python completes a re-join of
        the group (a member that joined or left): without it the others wait for this member
        and the broker refuses its commits. A partition assigned in the poll may return
        records all the same: they are its next owner's, so they are not tracked, and the
        consumer is set back to the first of them."""
        consumer = self._consumer
        assert consumer is not None
        try:
            polled = consumer.poll(timeout_ms=_DRAIN_POLL_MS)
        except KafkaError as exc:
            self._stop_if_fenced(exc)
            log.warning("poll while draining failed: %s", exc)
            polled = {}
        for tp, records in polled.items():
            consumer.seek(tp, records[0].offset)
        self._apply_rebalance_events()  # commits and forgets what was revoked
        consumer.pause(*consumer.assignment())

    def _close(self) -> None:
        self._closing = True
        if self._consumer is not None:
            try:
                # Bounded: the default waits up to request_timeout_ms for a broker that is away.
                self._consumer.close(autocommit=False, timeout_ms=_CLOSE_TIMEOUT_MS)
            except Exception as exc:
                log.warning("consumer close: %s", exc)
        if self._producer is not None:
            try:
                # Flushed at the drain deadline already: what is still unacknowledged is
                # classified again after the restart, so do not wait long for it.
                self._producer.close(timeout=_CLOSE_TIMEOUT_MS / 1000)
            except Exception as exc:
                log.warning("producer close: %s", exc)
        # After the consumer has left the group: a process still reading a chunk is waited for,
        # and the group must not wait with it.
        if self._decoding is not None:
            self._decoding.close()
        if self._server is not None:
            self._server.stop()
