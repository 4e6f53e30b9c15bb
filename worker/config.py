"""Configuration: YAML file, then `STREAMCLF__SECTION__KEY` environment overrides, then `--set`.

Every key is optional and has a default below. Unknown keys and values of the wrong type raise
`ConfigError` naming the key's dotted path; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from worker.errors import ConfigError

ENV_PREFIX = "STREAMCLF__"


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: list[str] = field(default_factory=lambda: ["localhost:9092"])
    input_topics: list[str] = field(default_factory=lambda: ["streamclf-input"])
    output_topic: str = "streamclf-output"
    dlq_topic: str = "streamclf-dlq"
    group_id: str = "streamclf"
    client_id: str = "streamclf"
    # Static membership (KIP-345): a restart with the same id does not reshuffle the group.
    group_instance_id: str | None = None
    # Security settings, passed to both consumer and producer. Secrets may also come from files.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    sasl_plain_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    ssl_crlfile: str | None = None
    ssl_ciphers: str | None = None
    sasl_kerberos_name: str | None = None  # GSSAPI (needs the gssapi package)
    sasl_kerberos_service_name: str | None = None  # kafka-python's default: kafka
    sasl_kerberos_domain_name: str | None = None
    # Passed unchanged to KafkaConsumer / KafkaProducer (they win over the settings above).
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    # The longest wait between retries of a produce the broker refused. The worker retries
    # until it succeeds; nothing past that record is committed meanwhile.
    produce_retry_max_backoff_ms: int = 10_000
    # Offsets are committed at most this often (and at shutdown and revocation); shorter means
    # fewer records classified twice after a crash, at the cost of one commit request each time.
    commit_interval_ms: int = 250
    # Consumer lag is refreshed from the broker's end offsets at this period.
    lag_refresh_ms: int = 5_000


@dataclass(frozen=True)
class ModelConfig:
    path: str = "bundled"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_tokens: int | None = None  # None: the artifact's own
    threshold: float | None = None  # None: the artifact's own (chosen on validation)
    # Batches classified at the same time, each on its own thread (a window of queued batches is
    # split between them); 0: one per core on the CPU (up to 8), one on a GPU.
    lanes: int = 0
    # torch intra-op threads of each lane; 0: 1 when there are several lanes, else one less than
    # the available cores (at least 1)
    threads: int = 0
    # none | int8 (dynamic int8 LSTM and Linear layers, CPU only) | auto (int8 on CPU, else none)
    quantize: str = "none"


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_wait_ms: float = 20.0
    # Records polled but not yet acknowledged; above it the partitions are paused.
    max_in_flight: int = 2000


@dataclass(frozen=True)
class InputConfig:
    format: str = "auto"  # auto | json | email | text
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    id_field: str = "id"
    # Values larger than this go to the dead-letter topic as too_large.
    max_bytes: int = 10_000_000
    # Processes that decode and tokenize records (worker.decoding); 0: the main thread does.
    decode_processes: int = 0


@dataclass(frozen=True)
class OutputConfig:
    # label -> extra topic that also receives that label's results.
    routes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "0.0.0.0"
    port: int = 9100
    enabled: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "json"  # json | text


@dataclass(frozen=True)
class ShutdownConfig:
    # SIGTERM: finish and flush until this long after the signal; the final commit (<= 5 s) and
    # the client closes (<= 2 s each) follow. Keep the sum below Kubernetes' grace period.
    drain_timeout_s: float = 20.0


@dataclass(frozen=True)
class HealthConfig:
    # /healthz fails when partitions have lag but nothing was committed for this long.
    stuck_after_s: float = 120.0


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    health: HealthConfig = field(default_factory=HealthConfig)


_CHOICES = {
    "model.device": None,  # checked by _check_device
    "model.quantize": ("auto", "none", "int8"),
    "input.format": ("auto", "json", "email", "text"),
    "logging.format": ("json", "text"),
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    "kafka.security_protocol": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    # OAUTHBEARER needs a token provider object, which a configuration file cannot give.
    "kafka.sasl_mechanism": (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"),
}
_POSITIVE = {
    "batching.max_batch_size",
    "batching.max_in_flight",
    "input.max_bytes",
    "model.max_tokens",
    "kafka.lag_refresh_ms",
    "kafka.commit_interval_ms",
    "kafka.produce_retry_max_backoff_ms",
    "shutdown.drain_timeout_s",
    "health.stuck_after_s",
}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration: YAML file, then environment, then `key.path=value` pairs."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML{_where(exc)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        data = loaded or {}
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            _set_path(data, dotted, _Text(value), origin=name)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            shown = "an item naming a secret" if _is_secret(item) else repr(item)
            raise ConfigError(f"--set {shown}: expected key.path=value")
        _set_path(data, key.strip(), _Text(value), origin=f"--set {key.strip()}")
    config = _build(Config, data, "")
    _validate(config)
    return config


def _where(exc: yaml.YAMLError) -> str:
    """Where and what the YAML error is, without PyYAML's quote of the line: it may hold a
    password."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{at}: {problem}" if problem else at


class _Text(str):
    """An env or --set value as typed. A string key takes it verbatim (a password `s3cret #1`,
    a group id `0123`); other keys read it as YAML: `6000`, `true`, `[a, b]`, `{k: v}`."""


def _from_text(hint: Any, text: _Text) -> Any:
    inner = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = next(a for a in typing.get_args(hint) if a is not type(None))
    if inner is str:
        return str(text)
    if typing.get_origin(inner) is list and not text.lstrip().startswith("["):
        return str(text)  # "a,b": split below, each item verbatim
    return _yaml_value(text)


def _yaml_value(value: Any) -> Any:
    """A _Text read as YAML (where no key type says otherwise); anything else unchanged."""
    if not isinstance(value, _Text):
        return value
    try:
        return yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return str(value)


def _set_path(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a section (from {origin})")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}{key}"
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if isinstance(value, _Text):
        value = _from_text(hint, value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is list:
        if isinstance(value, str):  # "a,b" (a YAML file may give one string too)
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_describe(value)}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_describe(value)}")
        # Entries may come one by one from env or --set (kafka.consumer.session_timeout_ms=6000).
        # Keys as strings: YAML reads `1:` or `yes:` (labels of a user's model) as a number or
        # a boolean, which would never equal the label "1" or "yes".
        keys = {k: str(k).lower() if isinstance(k, bool) else str(k) for k in value}
        if len(args) == 2 and args[1] is not Any:
            return {keys[k]: _coerce(args[1], v, f"{path}.{keys[k]}") for k, v in value.items()}
        return {keys[k]: _pass_through(v, f"{path}.{keys[k]}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        if _is_secret(path) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            # Not str(value): YAML has already read group_id: 012 as 10 and 1.10 as 1.1.
            raise _unquoted(path, value)
        raise ConfigError(f"{path}: expected a string, got {_describe(value, path)}")
    return value


def _pass_through(value: Any, path: str) -> Any:
    """An entry of kafka.consumer / kafka.producer, whose types only kafka-python knows."""
    if _is_secret(path):
        if isinstance(value, str):
            return str(value)  # typed in env or --set: as written, never read as YAML
        raise _unquoted(path, value)
    return _yaml_value(value)


def _unquoted(path: str, value: Any) -> ConfigError:
    """YAML reads an unquoted 0123 as 83 and 12:30 as 750: a string must be written quoted."""
    return ConfigError(f"{path}: quote the value; unquoted, YAML reads it as "
                       f"{_describe(value, path)}")


def _describe(value: Any, path: str = "") -> str:
    if _is_secret(path):
        return f"a {type(value).__name__}"  # never the value itself
    return f"{type(value).__name__} {value!r}"[:80]


def _validate(config: Config) -> None:
    for dotted, choices in _CHOICES.items():
        value = _get(config, dotted)
        if choices is not None and value not in choices:
            named = ", ".join(str(c) for c in choices if c is not None)
            raise ConfigError(f"{dotted}: must be one of {named}, got {value!r}")
    for dotted in _POSITIVE:
        value = _get(config, dotted)
        if value is not None and value <= 0:
            raise ConfigError(f"{dotted}: must be positive, got {value!r}")
    device = config.model.device
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and device[5:].isdigit()
    ):
        raise ConfigError(f"model.device: must be auto, cpu, cuda or cuda:N, got {device!r}")
    if config.batching.max_wait_ms < 0:
        raise ConfigError("batching.max_wait_ms: must be zero or more")
    if config.model.threshold is not None and not 0.0 <= config.model.threshold <= 1.0:
        raise ConfigError("model.threshold: must be between 0 and 1")
    if config.model.threads < 0:
        raise ConfigError("model.threads: must be zero (auto) or more")
    if config.model.lanes < 0:
        raise ConfigError("model.lanes: must be zero (auto) or more")
    if config.input.decode_processes < 0:
        raise ConfigError("input.decode_processes: must be zero (the main thread) or more")
    for i, server in enumerate(config.kafka.bootstrap_servers):
        address = _SCHEME.sub("", server)  # SASL_SSL://host:port is how Java clients write it
        if "@" in address:  # user:password@host: never echoed, and kafka-python cannot use it
            raise ConfigError(f"kafka.bootstrap_servers[{i}]: expected host:port, got an address "
                              "with credentials; give them as kafka.sasl_plain_username and "
                              "kafka.sasl_plain_password_file")
        if not _HOST_PORT.fullmatch(address):
            raise ConfigError(f"kafka.bootstrap_servers[{i}]: expected host:port, got {server!r}")
    if not config.kafka.input_topics:
        raise ConfigError("kafka.input_topics: at least one topic is needed")
    topics = {"kafka.output_topic": config.kafka.output_topic,
              "kafka.dlq_topic": config.kafka.dlq_topic,
              **{f"kafka.input_topics[{i}]": t for i, t in enumerate(config.kafka.input_topics)},
              **{f"output.routes.{label}": t for label, t in config.output.routes.items()}}
    for key, topic in topics.items():
        if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
            raise ConfigError(f"{key}: {topic!r} is not a topic name (1-249 of a-z A-Z 0-9 . _ -)")
    for key in ("kafka.output_topic", "kafka.dlq_topic"):
        if topics[key] in config.kafka.input_topics:  # the worker would read its own output
            raise ConfigError(f"{key}: {topics[key]!r} is also an input topic")
    for label, topic in config.output.routes.items():
        if topic == config.kafka.output_topic or topic in config.kafka.input_topics:
            # The output topic would get the result twice; an input topic would loop.
            raise ConfigError(f"output.routes.{label}: {topic!r} is the output topic or an "
                              "input topic")
    if not 0 <= config.metrics.port <= 65535:
        raise ConfigError("metrics.port: must be between 0 and 65535")


def _get(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def redacted(config: Config) -> dict[str, Any]:
    """The configuration as a dict with secrets masked, safe to log."""
    data = dataclasses.asdict(config)

    def mask(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: ("***" if _is_secret(k) and v else mask(v)) for k, v in node.items()
            }
        return node

    return typing.cast(dict[str, Any], mask(data))


_SECRET_KEY = re.compile(r"password|secret|sasl_oauth|token(?!s)")  # not model.max_tokens


def _is_secret(key: object) -> bool:
    return _SECRET_KEY.search(str(key).lower()) is not None


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")  # Kafka's rule for topic names
_SCHEME = re.compile(r"^[A-Za-z_]+://")
# host, host:port, [IPv6]:port or a bare IPv6 address, as kafka-python reads them.
_HOST_PORT = re.compile(
    r"[^\s:/@\[\]]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*"
)
