"""The `streamclf` command line.

Exit codes: 0 success, 2 usage or config error, 1 runtime failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from worker.errors import BrokerError, ConfigError, StreamclfError
from worker.stop import StopRequest, stop_on_signals

log = logging.getLogger("streamclf")

_PRODUCE_BOOTSTRAP_MS = 10_000  # `produce`: how long to wait for a broker that does not answer


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python is chatty at INFO (every connection and rebalance step).
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamclf", description="Streaming text classification worker for Kafka."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the worker until SIGTERM/SIGINT")
    run.add_argument("--config", help="YAML configuration file")
    run.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY.PATH=VALUE", help="override one setting (repeatable)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="local demo: embedded broker, bundled model, sample stream")
    demo.add_argument("--messages", type=int, default=200,
                      help="shared test messages to add to the samples (default 200)")
    demo.add_argument("--data", default="../shared/data",
                      help="folder with the shared data (skipped when absent)")
    demo.add_argument("--metrics-port", type=int, default=9100)
    demo.set_defaults(func=cmd_demo)

    broker = sub.add_parser("broker", help="an embedded Kafka-compatible broker on loopback")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(func=cmd_broker)

    produce = sub.add_parser("produce", help="load .eml, mbox, maildir or JSON lines into a topic")
    produce.add_argument("--bootstrap-servers", required=True)
    produce.add_argument("--topic", required=True)
    produce.add_argument("--split", help="only records of this split: train, val or test (data "
                         "without a split: 8 in 10 by id train, 1 val, 1 test, as train splits it)")
    produce.add_argument("--limit", type=int, help="stop after this many records")
    produce.add_argument("--rate", type=float, default=0.0,
                         help="records per second (0: as fast as possible)")
    produce.add_argument("--repeat", type=int, default=1,
                         help="send the input this many times (0: forever)")
    produce.add_argument("--create-topic", type=int, metavar="PARTITIONS",
                         help="create the topic with this many partitions if missing")
    produce.add_argument("paths", nargs="+", metavar="PATH")
    produce.set_defaults(func=cmd_produce)

    bench = sub.add_parser(
        "bench", help="the benchmark suite (from a source checkout)", add_help=False
    )
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)

    try:
        from model.cli import add_commands
    except ImportError as exc:  # pragma: no cover - model/ always ships with the worker
        raise SystemExit(f"streamclf: model package unavailable: {exc}") from exc
    add_commands(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Everything after "bench" belongs to the benchmark scripts; argparse's REMAINDER would
        # reject a first argument that looks like an option ("bench --only gpu").
        args = argparse.Namespace(func=cmd_bench, bench_args=argv[1:])
    else:
        args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"streamclf: config error: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"streamclf: broker: {exc}", file=sys.stderr)
        return 1
    except StreamclfError as exc:
        print(f"streamclf: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- run --------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> NoReturn:
    # Handlers first: a SIGTERM during start-up (model loading can take seconds) still ends
    # in an orderly exit 0 instead of the default kill.
    stop_requested = StopRequest()
    stop_on_signals(stop_requested.set)

    from worker.app import Worker
    from worker.config import load_config, redacted

    config = load_config(args.config, args.overrides)
    setup_logging(config.logging.level, config.logging.format)
    log.info("configuration: %s", json.dumps(redacted(config)))
    worker = Worker(config, stop_event=stop_requested)
    exit_process(worker.run())


def exit_process(code: int) -> NoReturn:
    """Exit with *code* now that the worker has drained and committed. A forward pass still
    running on an inference lane (past the drain deadline, or hung on a device) would otherwise
    hold the interpreter's exit, which waits for the lanes' threads."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# -- broker -----------------------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    from worker.broker import EmbeddedBroker

    setup_logging()
    # Handlers first: a SIGTERM that arrives while the broker starts must still stop it cleanly.
    stopped = threading.Event()
    stop_on_signals(stopped.set)
    broker = EmbeddedBroker(port=args.port).start()
    try:
        print(f"broker listening on {broker.bootstrap} (in memory; Ctrl-C to stop)", flush=True)
        while not stopped.wait(0.5):
            pass
    finally:
        broker.stop()
    return 0


# -- produce ----------------------------------------------------------------------------------


def record_for(example: Any) -> tuple[bytes, bytes]:
    """(key, value) for a data example: raw mail as is, text as a JSON request."""
    key = example.id.encode()
    if example.raw is not None:
        return key, example.raw
    return key, json.dumps({"id": example.id, "text": example.text}, ensure_ascii=False).encode()


def iter_records(paths: Sequence[str], split: str | None = None,
                 unreadable: list[str] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Keys and values of the examples at *paths*; files below a folder that cannot be read go
    to *unreadable* (see `model.data.iter_examples`)."""
    from model.data import assigned_split, iter_examples

    for path in paths:  # cmd_produce checked that they exist
        for example in iter_examples(path, unreadable):
            if split is None or assigned_split(example) == split:
                yield record_for(example)


def cmd_produce(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from model.data import DataError, left_out_note, normalize_split
    from worker.kafka import ensure_topics

    if args.repeat < 0 or (args.limit is not None and args.limit < 0) or args.rate < 0:
        raise ConfigError("--repeat, --limit and --rate must not be negative")
    try:
        split = None if args.split is None else normalize_split(args.split)
    except DataError as exc:
        raise ConfigError(f"--split {args.split!r}: use train, val or test") from exc
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:  # before connecting
        raise ConfigError(f"{missing[0]}: no such file or directory")
    setup_logging("WARNING")
    try:
        if args.create_topic:
            ensure_topics(args.bootstrap_servers, [args.topic], args.create_topic,
                          bootstrap_timeout_ms=_PRODUCE_BOOTSTRAP_MS)
        producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, linger_ms=20,
                                 max_request_size=16 * 1024 * 1024,
                                 bootstrap_timeout_ms=_PRODUCE_BOOTSTRAP_MS)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach {args.bootstrap_servers}: {exc}") from exc
    sent = 0
    started = time.monotonic()
    rounds = 0
    unreadable: list[str] = []
    try:
        while args.repeat == 0 or rounds < args.repeat:
            rounds += 1
            sent_before = sent
            del unreadable[:]  # once per round, not once per repeat
            for key, value in iter_records(args.paths, split, unreadable):
                if args.limit is not None and sent >= args.limit:
                    break
                producer.send(args.topic, key=key, value=value)
                sent += 1
                if args.rate > 0:
                    ahead = started + sent / args.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the load, not synchronisation
            if args.limit is not None and sent >= args.limit:
                break
            if sent == sent_before:  # nothing to send: repeating would spin
                break
        producer.flush()
    except DataError as exc:  # a bad line or file: say so, and what went out before it
        producer.flush()
        raise ConfigError(f"{exc} (the {sent} records before it were produced)") from exc
    except KafkaError as exc:
        raise BrokerError(f"{exc} (after {sent} records)") from exc
    finally:
        producer.close()
    note = left_out_note({}, unreadable)
    print(f"produced {sent} records to {args.topic}" + (f"; {note}" if note else ""),
          file=sys.stderr)
    return 0


# -- bench ------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """Run `benchmarks/run.py` of the source checkout with this interpreter
    (`streamclf bench accuracy ...` runs `benchmarks/accuracy.py`: the model against bogofilter)."""
    import subprocess

    name = "run.py"
    if args.bench_args[:1] == ["accuracy"]:
        name, args.bench_args = "accuracy.py", args.bench_args[1:]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / name
    if not script.exists():
        raise ConfigError("bench: the benchmarks ship with the source checkout, not the wheel")
    return subprocess.call([sys.executable, str(script), *args.bench_args],
                           cwd=script.parents[1])


# -- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    setup_logging("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # connection chatter would hide the table
    return run_demo(messages=args.messages, data_dir=Path(args.data),
                    metrics_port=args.metrics_port)
