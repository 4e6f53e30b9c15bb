"""Per-partition commit watermarks.

An offset may be committed only when the record at it and every earlier record of its partition
are acknowledged. Records are tracked in poll order and acknowledged in any order; the watermark
is the first offset still pending. Thread-safe: acknowledgements arrive on the producer's thread.

Each pending record keeps its timestamp, so the age of the oldest record not yet done (how far
behind in time the partition's commit point is) can be read at any moment.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

Partition = tuple[str, int]  # (topic, partition)


@dataclass
class _PartitionState:
    pending: deque[int] = field(default_factory=deque)  # offsets in poll order
    timestamps: deque[int] = field(default_factory=deque)  # their record timestamps (ms; -1: none)
    acked: set[int] = field(default_factory=set)  # acknowledged, not yet at the front
    next_offset: int | None = None  # the offset to commit (first not yet done)
    committed: int | None = None  # the last offset committed
    first: int = 0  # the first offset tracked, to count what commits cover


@dataclass
class CommitClaim:
    """A commit sent and not yet answered, per partition: the partition's state when it was
    sent, the offset committed before, the offset claimed, and how many records it covers."""

    parts: list[tuple[Partition, _PartitionState, int | None, int, int]] = field(
        default_factory=list)
    settled: bool = False  # the broker answered (`settle_claim`)
    accepted: bool = False


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[Partition, _PartitionState] = {}
        self._in_flight = 0

    def track(self, partition: Partition, offset: int, timestamp_ms: int = -1) -> None:
        """Register a polled record (offsets of one partition arrive in increasing order)."""
        self.track_many(partition, [offset], [timestamp_ms])

    def track_many(self, partition: Partition, offsets: list[int],
                   timestamps_ms: list[int] | None = None) -> None:
        """Register polled records of one partition, in increasing offset order, with their
        record timestamps (milliseconds; -1 or None for none)."""
        if not offsets:
            return
        if timestamps_ms is None:
            timestamps_ms = [-1] * len(offsets)
        elif len(timestamps_ms) != len(offsets):
            raise ValueError("one timestamp per offset")
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                state = self._partitions[partition] = _PartitionState(first=offsets[0])
            previous = state.pending[-1] if state.pending else None
            for offset in offsets:
                if previous is not None and offset <= previous:
                    raise ValueError(f"offset {offset} of {partition} tracked out of order")
                previous = offset
            if not state.pending:
                state.next_offset = offsets[0]
            state.pending.extend(offsets)
            state.timestamps.extend(timestamps_ms)
            self._in_flight += len(offsets)

    def ack(self, partition: Partition, offset: int) -> None:
        """Mark a record done: its result or dead letter is acknowledged by the broker."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None or offset in state.acked:
                return  # forgotten after a revoke, or a duplicate acknowledgement
            if not state.pending or offset < state.pending[0]:
                return
            state.acked.add(offset)
            self._in_flight -= 1
            while state.pending and state.pending[0] in state.acked:
                done = state.pending.popleft()
                state.timestamps.popleft()
                state.acked.discard(done)
                state.next_offset = done + 1
            if state.pending:
                state.next_offset = state.pending[0]

    def skip_to(self, partition: Partition, offset: int) -> None:
        """Move an idle partition's commit point forward to *offset* (the consumer's position):
        the offsets it passed without returning a record (transaction markers) are done too.
        Nothing moves while a record of the partition is pending."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None:
                state = self._partitions[partition] = _PartitionState(first=offset)
            if state.pending or (state.next_offset is not None and offset <= state.next_offset):
                return
            state.next_offset = offset

    def committable(self) -> dict[Partition, int]:
        """Offsets (next record to read) that advanced since the last commit."""
        with self._lock:
            return {
                p: s.next_offset
                for p, s in self._partitions.items()
                if s.next_offset is not None and s.next_offset != s.committed
            }

    def mark_committed(self, offsets: dict[Partition, int]) -> int:
        """Record a successful commit; return how many records it covered."""
        return self.settle_claim(self.claim_commit(offsets), accepted=True)

    def claim_commit(self, offsets: dict[Partition, int]) -> CommitClaim:
        """Record a commit sent without waiting for its answer as made, so that a later commit
        counts only what lies beyond it; `settle_claim` once the broker answers."""
        claim = CommitClaim()
        with self._lock:
            for p, offset in offsets.items():
                state = self._partitions.get(p)
                if state is None:
                    continue
                floor = state.committed if state.committed is not None else state.first
                claim.parts.append((p, state, state.committed, offset, max(0, offset - floor)))
                state.committed = offset
        return claim

    def settle_claim(self, claim: CommitClaim, accepted: bool) -> int:
        """The broker's answer to a claimed commit: return how many records it covered. A
        refused one is undone where the partition is still held and nothing was committed
        since, so that it is offered again; where a later commit went further, that commit
        covered its records."""
        covered = 0
        with self._lock:
            claim.settled, claim.accepted = True, accepted
            for p, state, before, claimed, count in claim.parts:
                if accepted:
                    covered += count
                elif self._partitions.get(p) is not state:
                    continue  # forgotten since: its next owner starts from the last commit
                elif state.committed == claimed:
                    state.committed = before
                else:
                    covered += count
        return covered

    def in_flight(self, partitions: set[Partition] | None = None) -> int:
        """Records tracked but not yet acknowledged (optionally only for some partitions)."""
        with self._lock:
            if partitions is None:
                return self._in_flight
            return sum(
                len(s.pending) - len(s.acked)
                for p, s in self._partitions.items()
                if p in partitions
            )

    def position(self, partition: Partition) -> int | None:
        """The first offset not yet done for a partition, if any record was tracked."""
        with self._lock:
            state = self._partitions.get(partition)
            return None if state is None else state.next_offset

    def oldest_timestamp_ms(self, partition: Partition) -> int | None:
        """The timestamp of the first record of *partition* not yet done; None when every
        tracked record is done or it has no timestamp."""
        with self._lock:
            state = self._partitions.get(partition)
            if state is None or not state.timestamps or state.timestamps[0] < 0:
                return None
            return state.timestamps[0]

    def forget(self, partitions: set[Partition] | list[Partition]) -> None:
        """Drop partitions (revoked or lost); late acknowledgements for them are ignored."""
        with self._lock:
            for p in partitions:
                state = self._partitions.pop(p, None)
                if state is not None:
                    self._in_flight -= len(state.pending) - len(state.acked)

