"""worker.decoding: records read in other processes come back as the main thread would read them,
in the order they went in, and none is lost when a process dies."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from worker.codec import InputSettings, Rejection, Request, SourceRecord, decode
from worker.decoding import DecodePool, read

SETTINGS = InputSettings(max_bytes=1000)
EMAIL = (b"From: Ann <ann@example.org>\r\nSubject: =?utf-8?q?Caf=C3=A9?= tonight\r\n"
         b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>See you at <b>8</b>!</p>\r\n")


def pid_tokenizer(text: str) -> list[int]:
    """Says which process tokenized the text, and how long it was."""
    if "BOOM" in text:
        raise ValueError("cannot tokenize this")
    return [os.getpid(), len(text)]


class DiesOutsideTheParent:
    """Ends its process abruptly on DIE, except in the process that made it."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, text: str) -> list[int]:
        if "DIE" in text and os.getpid() != self.parent:
            os._exit(1)
        return [os.getpid(), len(text)]


def records(values: list[bytes | None], partition: int = 0, start: int = 0) -> list[SourceRecord]:
    return [SourceRecord("in", partition, start + i, 0, None, v, ()) for i, v in enumerate(values)]


def mixed(n: int) -> list[bytes | None]:
    """JSON, an email, plain text and values the codec rejects, in a fixed rotation."""
    rotation: list[bytes | None] = [
        json.dumps({"id": "j", "text": "hello there"}).encode(), EMAIL, b"plain words",
        None, b"   ", b'{"id": "x", "text": "cut', b"x" * 2000,
        json.dumps({"id": "b", "text": "BOOM goes the tokenizer"}).encode(),
    ]
    return [rotation[i % len(rotation)] for i in range(n)]


def take_all(pool: DecodePool) -> list[Request | Rejection]:
    out: list[Request | Rejection] = []
    while pool.pending:
        pool.wait(30)
        for _, chunk in pool.take_ready():
            out.extend(chunk)
    return out


def test_records_come_back_in_order_as_the_main_thread_reads_them() -> None:
    batch = records(mixed(200))
    pool = DecodePool(2, SETTINGS, pid_tokenizer)
    try:
        pool.start()
        pool.submit(("in", 0), batch)
        got = take_all(pool)
    finally:
        pool.close()
    assert [r.record.offset for r in got] == list(range(200))
    here = os.getpid()
    for result, record in zip(got, batch, strict=True):
        expected = read(record, SETTINGS, pid_tokenizer)
        assert type(result) is type(expected)
        if isinstance(expected, Rejection):
            assert result == expected
        else:
            assert isinstance(result, Request)
            assert result.id == expected.id
            assert result.ids[0] != here, "read in another process"
            assert result.ids[1] == expected.ids[1]
    reasons = {r.reason for r in got if isinstance(r, Rejection)}
    assert reasons == {"empty", "decode", "too_large", "inference"}


def test_the_model_tokenizer_gives_the_same_ids_in_a_process() -> None:
    from model.predictor import Predictor

    predictor = Predictor.load("bundled")
    batch = records([EMAIL, b"WINNER!! Call 0800 123 4567 now, claim $1000 at http://x.example/win"])
    pool = DecodePool(1, InputSettings(), predictor.text_tokenizer)
    try:
        pool.submit(("in", 0), batch)
        got = take_all(pool)
    finally:
        pool.close()
    texts = [decode(r, InputSettings()).text for r in batch]
    assert [r.ids for r in got] == [predictor.tokenize(t) for t in texts]
    assert all(len(r.ids) > 5 for r in got)


def test_forgotten_partitions_come_back_no_more() -> None:
    pool = DecodePool(1, SETTINGS, pid_tokenizer)
    try:
        pool.submit(("in", 0), records([b"zero"] * 70, partition=0))
        pool.submit(("in", 1), records([b"one"] * 70, partition=1))
        pool.submit(("in", 0), records([b"zero again"] * 5, partition=0, start=70))
        pool.forget({("in", 1)})
        got = take_all(pool)
    finally:
        pool.close()
    assert [r.record.partition for r in got] == [0] * 75
    assert [r.record.offset for r in got] == list(range(75))


def test_a_process_that_dies_loses_no_record(caplog: pytest.LogCaptureFixture) -> None:
    tokenizer = DiesOutsideTheParent()
    values = [f"message {i}".encode() for i in range(100)]
    values[40] = b"DIE here"
    failures: list[int] = []
    pool = DecodePool(2, SETTINGS, tokenizer, on_failure=lambda: failures.append(1))
    try:
        pool.submit(("in", 0), records(values))
        got = take_all(pool)
        # The pool that replaced the broken one keeps working in other processes.
        pool.submit(("in", 0), records([b"after"], start=100))
        after = take_all(pool)
    finally:
        pool.close()
    assert [r.record.offset for r in got] == list(range(100))
    assert all(isinstance(r, Request) for r in got)
    assert next(r for r in got if r.record.offset == 40).ids[0] == os.getpid()  # read here
    assert after[0].ids[0] != os.getpid()
    assert "BrokenProcessPool" in caplog.text
    assert 1 <= len(failures) <= 4, "the chunks in the broken pool, no more"


def test_closing_the_pool_ends_its_processes() -> None:
    before = {p.pid for p in multiprocessing.active_children()}
    pool = DecodePool(2, SETTINGS, pid_tokenizer)
    pool.start()
    started = {p.pid for p in multiprocessing.active_children()} - before
    assert len(started) == 2
    pool.close()
    assert not started & {p.pid for p in multiprocessing.active_children()}


def test_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError):
        DecodePool(0, SETTINGS, pid_tokenizer)


class NoTextTokenizer:
    name, version, labels, device = "plain", "1", ("ham", "spam"), "cpu"

    def tokenize(self, text: str) -> list[int]:
        return [len(text)]

    def predict_ids(self, seqs):  # pragma: no cover - never reached
        raise AssertionError


def test_decoding_processes_need_a_tokenizer_they_can_be_given() -> None:
    from worker.app import Worker
    from worker.config import load_config
    from worker.errors import ConfigError

    config = load_config(None, ["input.decode_processes=1", "metrics.enabled=false"], environ={})
    with pytest.raises(ConfigError, match=r"^input\.decode_processes: .*text_tokenizer"):
        Worker(config, classifier=NoTextTokenizer()).run()


def test_a_tokenizer_that_cannot_travel_is_a_config_error() -> None:
    from worker.app import Worker
    from worker.config import load_config
    from worker.errors import ConfigError

    class LocalTokenizer(NoTextTokenizer):
        text_tokenizer = staticmethod(lambda text: [len(text)])

    config = load_config(None, ["input.decode_processes=1", "metrics.enabled=false"], environ={})
    with pytest.raises(ConfigError, match=r"^input\.decode_processes: .*cannot be sent"):
        Worker(config, classifier=LocalTokenizer()).run()


KILLED_PARENT = """
import multiprocessing, sys, time
from worker.codec import InputSettings
from worker.decoding import DecodePool
from tests.unit.test_decoding import pid_tokenizer
pool = DecodePool(2, InputSettings(), pid_tokenizer)
pool.start()
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(120)
"""


def test_decoding_processes_end_when_the_worker_is_killed() -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import poll_until

    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT], cwd=repo,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        children = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(children) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    poll_until(lambda: not any(running(pid) for pid in children), timeout_s=30,
               what="the orphaned decoding processes to exit")


@pytest.mark.parametrize("victim", [0, 1])  # whichever holds the queue lock at the time
def test_a_process_killed_while_idle_loses_no_record_submitted_after(victim: int) -> None:
    import signal
    import time

    from tests.conftest import poll_until

    failures: list[int] = []
    pool = DecodePool(2, SETTINGS, pid_tokenizer, on_failure=lambda: failures.append(1))
    before = {p.pid for p in multiprocessing.active_children()}  # an earlier test's, ending
    try:
        pool.start()
        children = sorted({p.pid for p in multiprocessing.active_children()} - before)
        os.kill(children[victim], signal.SIGKILL)
        got: list[Request | Rejection] = []
        # Whether the pool has noticed the death yet or not when records arrive, none is lost.
        # On a busy machine the survivor can read several chunks before the pool's own thread
        # sees the death: records go on until it is counted (or the deadline).
        deadline = time.monotonic() + 30
        offset = 0
        while time.monotonic() < deadline and (offset < 400 or not failures):
            pool.submit(("in", 0), records([b"after the kill"] * 40, start=offset))
            offset += 40
            got += take_all(pool)
    finally:
        pool.close()
    assert [r.record.offset for r in got] == list(range(offset))
    assert all(isinstance(r, Request) for r in got)
    assert failures, "the death was counted"
    # The broken pool's other process ends too. When the killed one held the pool's queue lock,
    # the other waited on it for good and ignored the pool's SIGTERM: it, and the interpreter's
    # exit (which joins the pool's thread), hung.
    poll_until(lambda: not {p.pid for p in multiprocessing.active_children()} - before,
               timeout_s=30, what="every process of both pools to end")
