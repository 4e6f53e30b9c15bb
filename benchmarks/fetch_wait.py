"""How long does a record wait in the consumer's fetch, as `fetch_max_wait_ms` varies?

    python benchmarks/fetch_wait.py [--waits 50,20,10] [--polls 100] [--rate 400] [--seconds 6]

A paced producer sends small records at `--rate` per second into a 3-partition topic on the
embedded broker; a consumer with the worker's fetch settings polls them. Per wait: how many polls
returned records, and the delivery time (record timestamp → the poll that returned it) at p50 /
p99 / max. It isolates the part of the end-to-end latency that the fetch adds (section 5 of
`streamclf bench` measures it with everything else). `--polls` sets the consumer's poll
timeouts. kafka-python 3.0 can sleep out a whole poll timeout with a fetched response already
buffered when a fetch completes between its drain and its wait; in the worker, whose other
threads keep the GIL busy, that made 100 ms stalls (it polls in 20 ms slices while records
flow). This lone consumer showed none: p99 ~30 ms with 100 or 20 ms polls.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import new_topics, percentile, producer  # noqa: E402


def delivery(bootstrap: str, wait_ms: int, msgs_per_s: float, seconds: float,
             poll_ms: int = 100) -> dict[str, Any]:
    from kafka import KafkaConsumer

    topic = new_topics(bootstrap)["input"]
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"fetch-{topic}",
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_wait_ms=wait_ms, session_timeout_ms=6000)
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)
    count = int(msgs_per_s * seconds)

    def send() -> None:
        prod = producer(bootstrap, linger_ms=0)
        started = time.monotonic()
        for i in range(count):
            ahead = started + i / msgs_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the offered load
            prod.send(topic, key=str(i).encode(), value=b"x" * 200)
        prod.flush()
        prod.close()

    sender = threading.Thread(target=send)
    sender.start()
    waited: list[float] = []
    polls = 0
    deadline = time.monotonic() + seconds + 30
    try:
        while len(waited) < count and time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=poll_ms, max_records=500)
            now_ms = time.time() * 1000
            records = [r for batch in polled.values() for r in batch]
            if records:
                polls += 1
                waited += [now_ms - r.timestamp for r in records]
    finally:
        sender.join()
        consumer.close()
    return {"fetch_max_wait_ms": wait_ms, "poll_ms": poll_ms, "records": len(waited),
            "polls_with_records": polls,
            "p50_ms": percentile(waited, 50), "p99_ms": percentile(waited, 99),
            "max_ms": max(waited, default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waits", default="50,20,10", help="fetch_max_wait_ms values")
    parser.add_argument("--polls", default="100", help="poll timeouts in ms")
    parser.add_argument("--rate", type=float, default=400.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)
    from worker.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        print("| fetch_max_wait_ms | poll timeout ms | records | polls with records | p50 ms | "
              "p99 ms | max ms |")
        print("|---|---|---|---|---|---|---|")
        for wait in (int(w) for w in args.waits.split(",")):
            for poll_ms in (int(p) for p in args.polls.split(",")):
                r = delivery(broker.bootstrap, wait, args.rate, args.seconds, poll_ms)
                print(f"| {wait} | {poll_ms} | {r['records']} | {r['polls_with_records']} | "
                      f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
