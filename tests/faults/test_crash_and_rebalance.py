"""Crashes (SIGKILL) and rebalances on a live stream: nothing is lost, duplicates stay within the
uncommitted window, per-partition order is kept."""

from __future__ import annotations

import ast
import json
import random
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.conftest import TopicReader, poll_until
from tests.faults.harness import (
    Stream,
    WorkerProcess,
    assert_order_kept,
    committed_offsets,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigkill_at_random_points_loses_nothing(broker, topics, tmp_path):
    names = topics(partitions=3)
    group = "crash-" + uuid.uuid4().hex[:6]
    rng = random.Random(7)
    # The stream outlives the crashes: it stops only after the last restart.
    stream = Stream(broker, names["input"], count=100_000, rate=200).start()
    reader = TopicReader(broker, names["output"])
    worker = WorkerProcess(broker, names, group, log_dir=tmp_path).start()
    # Per crash: when the killed incarnation was dead, and the group's offsets at that moment.
    crashes: list[tuple[float, dict[int, int]]] = []
    for _ in range(3):
        # Kill during steady streaming: once this incarnation has committed at least once.
        poll_until(lambda: worker.metric("streamclf_commits_total") >= 1, timeout_s=120,
                   what="a first commit")
        target = len(reader.read()) + rng.randint(50, 400)
        reader.wait_for(target, timeout_s=120)
        worker.kill()
        crashes.append((time.time() * 1000, committed_offsets(broker, group)))
        worker.start()
    poll_until(lambda: worker.metric("streamclf_commits_total") >= 1, timeout_s=120,
               what="a first commit after the last restart")
    stream.stop()
    try:
        poll_until(lambda: set(stream.keys) <= {r.key.decode() for r in reader.read()},
                   timeout_s=180, what="every key after the crashes")
        poll_until(lambda: worker.status("/readyz") == 200, what="the last incarnation ready")
    finally:
        assert worker.terminate() == 0
    counts = Counter(r.key.decode() for r in reader.read())
    assert set(counts) == set(stream.keys)
    duplicated = {key for key, n in counts.items() if n > 1}
    # A result may repeat only if its input was past the committed offset at some crash.
    for record in reader.records:
        if record.key.decode() in duplicated:
            source = json.loads(record.value)["source"]
            assert any(source["offset"] >= committed.get(source["partition"], 0)
                       for _, committed in crashes), source
    # And no more of them than the uncommitted windows hold: the results each killed incarnation
    # published (their timestamps fall in its lifetime) for inputs at or past the offsets the
    # group had committed when it died.
    uncommitted = 0
    born = 0.0
    for died, committed in crashes:
        for record in reader.records:
            source = json.loads(record.value)["source"]
            if (born <= record.timestamp < died
                    and source["offset"] >= committed.get(source["partition"], 0)):
                uncommitted += 1
        born = died
    extra = sum(n - 1 for n in counts.values())
    print(f"crash test: {len(stream.keys)} keys, {extra} duplicates, "
          f"uncommitted window sum {uncommitted}")
    assert extra <= uncommitted
    assert_order_kept(reader.records)
    reader.close()


def running_children(pid: int) -> set[int]:
    """Processes (not zombies) whose parent is `pid`, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def still_running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def balanced(*members: WorkerProcess, partitions: int = 6) -> bool:
    """Every member holds its even share of the partitions (the assignor is sticky and even)."""
    return all(m.metric("streamclf_assigned_partitions") == partitions // len(members)
               for m in members)


@pytest.mark.parametrize("extra", [(), ("input.decode_processes=1",)],
                         ids=["in-process", "decoding-processes"])
def test_members_join_leave_and_die_while_streaming(broker, topics, tmp_path, extra):
    names = topics(partitions=6)
    group = "rebalance-" + uuid.uuid4().hex[:6]
    stream = Stream(broker, names["input"], count=100_000, rate=200).start()
    reader = TopicReader(broker, names["output"])
    first = WorkerProcess(broker, names, group, extra, log_dir=tmp_path, name="w1").start()
    second = WorkerProcess(broker, names, group, extra, log_dir=tmp_path, name="w2").start()
    reader.wait_for(300, timeout_s=120)
    third = WorkerProcess(broker, names, group, extra, log_dir=tmp_path, name="w3").start()
    # Each membership change waits for the one before to settle (every member holding its
    # share): a member leaving and another killed within one unfinished cooperative rebalance
    # left the embedded broker's group rebalancing for good, twice in nine runs.
    poll_until(lambda: balanced(first, second, third), timeout_s=60,
               what="the third member to get its share of the partitions")
    reader.wait_for(len(reader.read()) + 300, timeout_s=120)
    assert second.terminate() == 0  # a member leaves cleanly
    poll_until(lambda: balanced(first, third), timeout_s=60,
               what="the leaving member's partitions to be shared out")
    reader.wait_for(len(reader.read()) + 300, timeout_s=120)
    assert third.process is not None
    helpers = running_children(third.process.pid)
    assert bool(helpers) == bool(extra), "the member's decoding process (and resource tracker)"
    third.kill()  # a member dies; its decoding process must not outlive it
    poll_until(lambda: not still_running(helpers), timeout_s=30,
               what="the dead member's decoding process to exit")
    fourth = WorkerProcess(broker, names, group, extra, log_dir=tmp_path, name="w4").start()
    poll_until(lambda: fourth.metric("streamclf_assigned_partitions") > 0, timeout_s=60,
               what="the replacement member to get partitions")
    stream.stop()
    try:
        poll_until(lambda: set(stream.keys) <= {r.key.decode() for r in reader.read()},
                   timeout_s=180, what="every key after the rebalances")
        rebalances = first.metric("streamclf_rebalances_total")
    finally:
        assert first.terminate() == 0
        assert fourth.terminate() == 0
    assert rebalances >= 2, "the first member saw its assignment change"
    counts = Counter(r.key.decode() for r in reader.read())
    assert set(counts) == set(stream.keys)
    assert_order_kept(reader.records)
    print(f"rebalance test: {len(stream.keys)} keys, "
          f"{sum(n - 1 for n in counts.values())} duplicates, first member saw "
          f"{rebalances:.0f} rebalances")
    reader.close()


def test_a_member_does_not_publish_the_queued_records_of_partitions_taken_from_it(
        broker, topics, tmp_path):
    """A member queues a backlog; a second member joins and takes half of the partitions. The
    first member's records of those partitions still waiting for inference are the new owner's:
    before, the first member classified and published them all the same (outside its in-flight
    count), and the new owner produced every one of them again."""
    from worker.kafka import ensure_topics

    names = topics(partitions=4)
    outputs = {name: f"{names['output']}-{name}" for name in ("w1", "w2")}
    ensure_topics(broker, list(outputs.values()), partitions=1)
    keys = [f"q{i}" for i in range(1600)]
    producer = KafkaProducer(bootstrap_servers=broker)
    for i, key in enumerate(keys):
        producer.send(names["input"], key=key.encode(), partition=i % 4,
                      value=json.dumps({"id": key, "text": f"note number {i}"}).encode())
    producer.flush()
    producer.close()
    group = "revoke-" + uuid.uuid4().hex[:6]
    settings = ("batching.max_batch_size=16", "model.lanes=1")
    members = {name: WorkerProcess(broker, {**names, "output": topic}, group, settings,
                                   slow_ms=500, log_dir=tmp_path, name=name)
               for name, topic in outputs.items()}
    reader = TopicReader(broker, *outputs.values())
    members["w1"].start()
    try:
        reader.wait_for(64, timeout_s=120)  # the first member holds the whole backlog
        members["w2"].start()
        poll_until(lambda: members["w2"].metric("streamclf_assigned_partitions") == 2,
                   timeout_s=60, what="the second member to take two partitions")
        poll_until(lambda: set(keys) <= {r.key.decode() for r in reader.read()},
                   timeout_s=240, what="a result for every record")
    finally:
        codes = [member.terminate() for member in members.values() if member.alive]
    assert codes == [0, 0]
    # When the first member gave the partitions up, from its log (local time, as logging writes).
    log = (tmp_path / "w1-1.log").read_text()
    match = re.search(r"^(\S+ \S+) INFO worker.app: partitions revoked: (\[.*\])$", log, re.M)
    assert match, "the first member logs the revocation"
    revoked_at_ms = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() * 1000
    revoked = {int(name.rsplit(":", 1)[1]) for name in ast.literal_eval(match[2])}
    late = [r for r in reader.records if r.topic == outputs["w1"]
            and json.loads(r.value)["source"]["partition"] in revoked
            and json.loads(r.value)["classified_at_ms"] > revoked_at_ms + 1000]
    both = ({r.key for r in reader.records if r.topic == outputs["w1"]}
            & {r.key for r in reader.records if r.topic == outputs["w2"]})
    print(f"revoke test: partitions {sorted(revoked)} revoked from w1; {len(late)} of their "
          f"results published by w1 more than 1 s later; {len(both)} records with results "
          "from both members")
    assert not late, "results of partitions already given up"
    reader.close()
