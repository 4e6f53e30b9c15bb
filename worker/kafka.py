"""Thin wrappers around kafka-python: client settings, consumer, producer, topic creation.

Only this module, `app` and `publisher` import kafka-python. Nothing here depends on a particular
broker.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Collection
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaConfigurationError, TopicAlreadyExistsError

from worker.codec import Headers, SourceRecord
from worker.config import KafkaConfig
from worker.errors import ConfigError

log = logging.getLogger(__name__)

# The security settings of KafkaConfig, passed to every client as they are (the password file
# is read into sasl_plain_password instead).
_SECURITY_KEYS = tuple(
    f.name for f in dataclasses.fields(KafkaConfig)
    if f.name.startswith(("security_", "sasl_", "ssl_")) and f.name != "sasl_plain_password_file"
)
# Files the clients read when they connect: one that is missing would look like an unreachable
# broker, retried for ever, instead of the config error it is.
_SECURITY_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile")
# Settings the worker's delivery guarantee depends on; a pass-through may not change them.
_CONSUMER_FIXED = {"enable_auto_commit": False}
# Short, so that a worker started while the broker is away still answers SIGTERM promptly; the
# worker retries with backoff.
_BOOTSTRAP_TIMEOUT_MS = 5_000
# kafka-python's default (500 ms) is how long a fetch may wait for data: at low and moderate
# load it becomes most of the end-to-end latency (p99 at half load 644 → 156 ms with 50 ms and the
# publisher thread, docs/performance.md, "Levers measured"). 50 ms keeps that gain while an idle
# worker sends at most ~20 fetches/s.
_FETCH_MAX_WAIT_MS = 50
# kafka-python backs off up to 30 s between reconnects to a broker that keeps refusing: after an
# outage of a few seconds a worker sat idle for seconds more. 1 s (the Java client's default)
# brings every connection back within about a second of the broker.
_RECONNECT_BACKOFF_MAX_MS = 1_000
_MIB = 1024 * 1024
# Client settings with a numeric default that also take words (acks: "all").
_NUMBERS_OR_WORDS = frozenset({"acks"})
# Client settings that take Python objects (functions, classes, an SSL context): a config file
# cannot give one, and the worker's bytes in and out and its keyed partitioning (see
# key_partition) rely on the client's defaults for the (de)serializers and the partitioner.
_PYTHON_OBJECTS = frozenset({
    "key_serializer", "value_serializer", "key_deserializer", "value_deserializer",
    "partitioner", "partition_assignment_strategy", "default_offset_commit_callback",
    "ssl_context", "sasl_oauth_token_provider", "metric_reporters", "selector", "kafka_client",
})


def client_settings(config: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by consumer, producer and admin client."""
    settings: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "reconnect_backoff_max_ms": _RECONNECT_BACKOFF_MAX_MS,
    }
    for key in _SECURITY_KEYS:
        value = getattr(config, key)
        if value is not None:
            settings[key] = value
    for key in _SECURITY_FILES:
        path = getattr(config, key)
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"kafka.{key}: cannot read {path} ({exc.strerror})") from exc
    if config.sasl_plain_password_file:
        try:
            password = Path(config.sasl_plain_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"kafka.sasl_plain_password_file: cannot read it ({exc.strerror})"
            ) from exc
        settings["sasl_plain_password"] = password
    return settings


def consumer_settings(config: KafkaConfig) -> dict[str, Any]:
    settings = client_settings(config)
    settings.update(
        group_id=config.group_id,
        auto_offset_reset="earliest",  # a new group classifies what is already there
        partition_assignment_strategy=(CooperativeStickyAssignor,),
        max_poll_records=500,
        fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
        bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
    )
    if config.group_instance_id:
        settings["group_instance_id"] = config.group_instance_id
    _check_known("kafka.consumer", config.consumer, KafkaConsumer.DEFAULT_CONFIG)
    for key, value in config.consumer.items():
        if key in _CONSUMER_FIXED and value != _CONSUMER_FIXED[key]:
            raise ConfigError(
                f"kafka.consumer.{key}: must stay {_CONSUMER_FIXED[key]!r}; the worker commits "
                "offsets itself once results are acknowledged"
            )
        settings[key] = value
    settings.update(_CONSUMER_FIXED)
    _fit_heartbeat(settings)
    return settings


def _fit_heartbeat(settings: dict[str, Any]) -> None:
    """A third of a session timeout shorter than kafka-python's 3 s heartbeat allows, unless the
    heartbeat is given: kafka-python warns at every start above a third, and refuses a heartbeat
    not below the timeout."""
    session = settings.get("session_timeout_ms")
    default = KafkaConsumer.DEFAULT_CONFIG["heartbeat_interval_ms"]
    if "heartbeat_interval_ms" in settings or not isinstance(session, int):
        return
    if session < 3 * default:
        settings["heartbeat_interval_ms"] = max(1, session // 3)


def producer_settings(config: KafkaConfig, max_input_bytes: int = 0) -> dict[str, Any]:
    """Producer settings; *max_input_bytes* (``input.max_bytes``) sizes the largest record the
    client sends, so that a dead letter carrying such an input is the broker's to refuse."""
    settings = client_settings(config)
    settings.update(
        acks="all",
        # kafka-python refuses records over 1 MiB by default: a 2 MB input would lose its value
        # in the dead letter even where the broker takes it. Headers and key get 1 MiB more.
        max_request_size=max(_MIB, max_input_bytes + _MIB),
        # Results are small: a few ms of linger and large batches save requests and wake-ups.
        linger_ms=10,
        batch_size=256 * 1024,
        max_block_ms=10_000,  # a missing topic must not block the inference thread for a minute
        # kafka-python 3.0.12's idempotent producer does not survive a broker that stops
        # answering for longer than delivery_timeout_ms: once batches it had sent expire it
        # drops its producer id and never asks for another (it then sends and fails nothing
        # again), or, when that request times out too, turns fatal and fails every send. The
        # worker's own retries and offset watermark already make delivery at least once; one
        # request in flight per broker keeps a partition's results in order across retries.
        enable_idempotence=False,
        max_in_flight_requests_per_connection=1,
        bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
    )
    _check_known("kafka.producer", config.producer, KafkaProducer.DEFAULT_CONFIG)
    if str(config.producer.get("acks", "all")) == "0":
        raise ConfigError("kafka.producer.acks: 0 asks the broker for no acknowledgement, and "
                          "the worker commits an input's offset once its output is "
                          "acknowledged; use 1 or all")
    settings.update(config.producer)
    return settings


def _check_known(path: str, given: dict[str, Any], known: dict[str, Any]) -> None:
    """Name a key the client does not know, or a value of the wrong kind, before the worker
    loads its model (kafka-python's own errors do not say which key)."""
    for key, value in given.items():
        if key not in known:
            raise ConfigError(f"{path}.{key}: not a kafka-python setting of this client")
        if key in _PYTHON_OBJECTS:
            raise ConfigError(f"{path}.{key}: takes a Python object, which a config file "
                              "cannot give; the worker sets what it needs itself")
        default = known[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}.{key}: {value!r} is not true or false")
        elif isinstance(default, (int, float)) and key not in _NUMBERS_OR_WORDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{path}.{key}: {value!r} is not a number")


def make_consumer(settings: dict[str, Any]) -> KafkaConsumer:
    """A consumer from `consumer_settings(...)` (built first, so bad settings fail early)."""
    try:
        return KafkaConsumer(**settings)
    except (TypeError, AssertionError, ValueError, KafkaConfigurationError) as exc:
        # An unknown or bad key; an unreachable broker raises other KafkaErrors (retried).
        raise ConfigError(f"kafka.consumer: {exc}") from exc


def make_producer(settings: dict[str, Any]) -> KafkaProducer:
    """A producer from `producer_settings(...)`."""
    try:
        return KafkaProducer(**settings)
    except (TypeError, AssertionError, ValueError, KafkaConfigurationError) as exc:
        raise ConfigError(f"kafka.producer: {exc}") from exc


# murmur2 (the Java client's key hash) reads a key as little-endian 32-bit words; one unpacker
# per word count, so that hashing a key builds no format string.
_MURMUR2_M = 0x5BD1E995
_U32 = 0xFFFFFFFF
_WORDS = tuple(struct.Struct(f"<{n}I").unpack_from for n in range(65))


def murmur2(key: bytes) -> int:
    """The 32-bit murmur2 hash of *key* (seed 0x9747b28c), as Kafka's clients compute it to pick
    a keyed record's partition. Equal to kafka-python's `kafka.partitioner.default.murmur2`, in
    half its time: it unpacks the words at once instead of assembling them byte by byte."""
    length = len(key)
    words = length >> 2
    unpack = _WORDS[words] if words < len(_WORDS) else struct.Struct(f"<{words}I").unpack_from
    m = _MURMUR2_M
    h = 0x9747B28C ^ length
    for k in unpack(key):
        k = (k * m) & _U32
        h = ((h * m) & _U32) ^ (((k ^ (k >> 24)) * m) & _U32)
    tail = length & ~3
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= key[tail + 2] << 16
        if extra >= 2:
            h ^= key[tail + 1] << 8
        h = ((h ^ key[tail]) * m) & _U32
    h ^= h >> 13
    h = (h * m) & _U32
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: Collection[int]) -> int:
    """The partition Kafka's default partitioner (Java's, and kafka-python's) gives a record
    keyed *key* in a topic with *partitions*: records of one key land together, on the same
    partition as any other client would put them. The worker picks it itself because
    kafka-python's partitioner takes ~15 µs per record (the hash byte by byte, and three sets
    of the topic's partitions built per call), a third of what sending a result costs."""
    ordered = sorted(partitions)
    return ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]


def unreadable_partition(consumer: KafkaConsumer) -> TopicPartition | None:
    """The partition whose next record the consumer just failed to parse, if it can tell.

    kafka-python raises ``CorruptRecordError`` at a record it cannot parse (a failed CRC, a
    header key that is not UTF-8) and leaves the position at that record. Its own state is the
    only place that names the partition (3.0.x: the fetcher's partition in line); seeking past
    the record also makes it drop that partition's spent records, at which 3.0.12's next poll
    would otherwise spin forever. None when this client keeps no such state.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    in_line = getattr(fetcher, "_next_partition_records", None)
    tp = getattr(in_line, "topic_partition", None)
    return tp if isinstance(tp, TopicPartition) else None


def group_state(consumer: KafkaConsumer) -> str:
    """The consumer's group membership as only its poll() moves it on: "stable", "rejoin" (the
    group re-balances, a member joined or left, and waits for this member to join again; its
    commits still go through), "joining" (a join under way: kafka-python refuses commits until
    it is over) or "unjoined" (not a member). kafka-python has no public call for this (3.0.x:
    the coordinator's state); "stable" when this client keeps no such state."""
    coordinator = getattr(consumer, "_coordinator", None)
    in_progress = getattr(coordinator, "rebalance_in_progress", None)
    if_stable = getattr(coordinator, "generation_if_stable", None)
    need_rejoin = getattr(coordinator, "need_rejoin", None)
    if in_progress is None or if_stable is None or need_rejoin is None:
        return "stable"
    if in_progress():
        return "joining"
    if if_stable() is None:
        return "unjoined"
    return "rejoin" if need_rejoin() else "stable"


def source_record(record: ConsumerRecord) -> SourceRecord:
    headers: Headers = ()
    if record.headers:
        headers = tuple((name, value or b"") for name, value in record.headers)
    timestamp_ms = record.timestamp if record.timestamp is not None else -1
    # Positional: this runs once per consumed record.
    return SourceRecord(
        record.topic, record.partition, record.offset, timestamp_ms, record.key, record.value,
        headers,
    )


def ensure_topics(
    bootstrap_servers: str | list[str], topics: list[str], partitions: int = 3, **settings: Any
) -> None:
    """Create topics that do not exist yet (for the demo, benchmarks and tests)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, **settings)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, partitions, 1) for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
