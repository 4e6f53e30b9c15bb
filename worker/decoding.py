"""Records → requests ready for the model: decoded, then tokenized; here or in other processes.

Reading an email (MIME, HTML to text) and tokenizing it costs ~400 µs of Python per message,
and on the main thread that Python holds the GIL the forward passes and the Kafka client's
threads also need. With `input.decode_processes: N`, a `DecodePool` of N processes does that
work on chunks of records; the main thread only sends record values out and token ids back
(a few µs per record), and gets the results in the order it submitted the records.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from worker import codec
from worker.codec import InputSettings, Rejection, Request, SourceRecord
from worker.offsets import Partition

log = logging.getLogger(__name__)

Tokenize = Callable[[str], Sequence[int]]

# Records per task sent to a process: large enough that the per-task overhead (~0.1 ms) is small
# beside ~30 emails' reading, small enough that N processes share a poll's records.
_CHUNK = 32


def read(record: SourceRecord, settings: InputSettings, tokenize: Tokenize) -> Request | Rejection:
    """Decode and tokenize one record, or say why it cannot be classified (never raises)."""
    decoded = codec.decode(record, settings)
    if isinstance(decoded, Rejection):
        return decoded
    try:
        ids = tokenize(decoded.text)
    except Exception as exc:  # a tokenizer bug dead-letters the record; the stream goes on
        return Rejection(record, codec.INFERENCE, f"{type(exc).__name__}: {exc}")
    return Request(record, decoded.id, decoded.text, ids)


@dataclass
class _Chunk:
    partition: Partition
    records: list[SourceRecord]
    submitted_at: float
    future: Future[list[tuple[bool, str, Any]]]


class DecodePool:
    """Reads records in `processes` other processes and returns them in submission order.

    A process that dies (killed for memory, say) does not lose records: the chunk it held is
    read on the calling thread instead, and a new pool takes over the chunks still waiting."""

    def __init__(self, processes: int, settings: InputSettings, tokenize: Tokenize,
                 on_failure: Callable[[], None] = lambda: None) -> None:
        if processes < 1:
            raise ValueError("a decode pool needs at least one process")
        self.processes = processes
        self._settings = settings
        self._tokenize = tokenize
        self._on_failure = on_failure  # called per chunk read here instead, and per idle death
        self._pending: deque[_Chunk] = deque()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (Kafka IO, torch) that a fork would copy mid-step.
        return ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process, initargs=(self._settings, self._tokenize),
        )

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every process now (each imports the email reader and receives the tokenizer),
        so that the first records do not wait for it. The pool starts a process for each task
        that finds none idle, so N tasks submitted at once start N."""
        futures = [self._pool.submit(os.getpid) for _ in range(self.processes)]
        for future in wait_for(futures, timeout_s).done:
            future.result()  # a process that cannot start raises here

    @property
    def pending(self) -> int:
        """Chunks submitted and not yet taken back."""
        return len(self._pending)

    def submit(self, partition: Partition, records: list[SourceRecord]) -> None:
        """Queue one partition's records (in offset order) for reading."""
        now = time.monotonic()
        for start in range(0, len(records), _CHUNK):
            chunk = records[start:start + _CHUNK]
            try:
                future = self._pool.submit(_read_chunk, chunk)
            except BrokenProcessPool as exc:  # a process died while the pool was idle
                log.warning("a decoding process died (%s); starting new ones", exc)
                self._on_failure()
                self._restart()
                future = self._pool.submit(_read_chunk, chunk)
            self._pending.append(_Chunk(partition, chunk, now, future))

    def wait(self, timeout_s: float) -> None:
        """Block until the oldest chunk is read, or for *timeout_s*."""
        if self._pending:
            wait_for([self._pending[0].future], max(0.0, timeout_s))

    def take_ready(self) -> list[tuple[float, list[Request | Rejection]]]:
        """The chunks read so far, oldest first, each with the time it was submitted; stops at
        the first chunk not read yet, so that records come back in the order they went in."""
        out = []
        while self._pending and self._pending[0].future.done():
            chunk = self._pending.popleft()
            out.append((chunk.submitted_at, self._results(chunk)))
        return out

    def forget(self, partitions: set[Partition]) -> None:
        """Drop the chunks of partitions this worker no longer owns."""
        for chunk in self._pending:
            if chunk.partition in partitions:
                chunk.future.cancel()
        self._pending = deque(c for c in self._pending if c.partition not in partitions)

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _results(self, chunk: _Chunk) -> list[Request | Rejection]:
        try:
            rows = chunk.future.result()
        except Exception as exc:
            log.warning("a decoding process failed (%s: %s); reading its %d records here",
                        type(exc).__name__, exc, len(chunk.records))
            self._on_failure()
            if isinstance(exc, BrokenProcessPool):
                self._restart()
            return [read(record, self._settings, self._tokenize) for record in chunk.records]
        # The text stays in the decoding process: from here on only the ids are needed.
        return [
            Request(record, first, "", second.tolist()) if ok
            else Rejection(record, first, second)
            for record, (ok, first, second) in zip(chunk.records, rows, strict=True)
        ]

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()
        for chunk in self._pending:
            f = chunk.future
            if f.done() and not f.cancelled() and f.exception() is None:
                continue  # read before the pool broke
            chunk.future = self._pool.submit(_read_chunk, chunk.records)


# -- in the decoding processes ------------------------------------------------------------------

_settings: InputSettings | None = None
_tokenize: Tokenize | None = None


def _start_process(settings: InputSettings, tokenize: Tokenize) -> None:
    global _settings, _tokenize
    _settings, _tokenize = settings, tokenize
    # Ctrl-C reaches the whole process group: the worker drains, and needs these processes for it.
    # They end when the worker shuts the pool down, or when the worker itself is gone (killed:
    # nothing would tell them otherwise, and they would wait for work forever). SIGTERM keeps its
    # default: when one process dies holding the pool's queue lock, the others wait on it for
    # good, and the pool ends them with SIGTERM (ignoring it left them, and the pool's thread
    # joining them, there forever). A SIGTERM sent to the whole group ends them too; the worker
    # then reads their chunks itself, losing nothing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), name="exit-with-worker",
                         daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the worker process has ended
    os._exit(0)


def _read_chunk(records: list[SourceRecord]) -> list[tuple[bool, str, Any]]:
    """(True, id, ids as an int64 array) or (False, reason, detail) per record. An array pickles
    as one buffer: ~0.5 µs per message to receive, against ~50 µs for a list of ints."""
    assert _settings is not None and _tokenize is not None
    out: list[tuple[bool, str, Any]] = []
    for record in records:
        result = read(record, _settings, _tokenize)
        if isinstance(result, Rejection):
            out.append((False, result.reason, result.detail))
        else:
            out.append((True, result.id, array("q", result.ids)))
    return out
