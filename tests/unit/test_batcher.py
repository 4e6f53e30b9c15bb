import pytest

from worker.batcher import Batcher


def test_flushes_when_full():
    b = Batcher(max_size=3, max_wait_s=10)
    assert b.add("a", now=0) is None
    assert b.add("b", now=0) is None
    assert b.add("c", now=0) == ["a", "b", "c"]
    assert len(b) == 0


def test_flushes_by_age_of_oldest_item():
    b = Batcher(max_size=100, max_wait_s=0.05)
    b.add("a", now=1.0)
    b.add("b", now=1.04)
    assert b.due(now=1.049) is None
    assert b.seconds_until_due(now=1.02) == pytest.approx(0.03)
    assert b.due(now=1.05) == ["a", "b"]
    assert b.seconds_until_due(now=2.0) is None
    b.add("c", now=3.0)  # the age restarts with the next batch
    assert b.due(now=3.01) is None


def test_discard_removes_matching_items_only():
    b = Batcher(max_size=10, max_wait_s=1)
    for item in [("t", 0), ("t", 1), ("t", 0)]:
        b.add(item, now=0)
    dropped = b.discard(lambda item: item[1] == 0)
    assert dropped == [("t", 0), ("t", 0)]
    assert b.flush() == [("t", 1)]


def test_rejects_empty_batches():
    with pytest.raises(ValueError):
        Batcher(max_size=0, max_wait_s=1)


def test_poll_waits_in_short_slices_while_records_flow() -> None:
    """While records flow, a poll waits at most a short slice (kafka-python can sleep out a
    whole poll timeout with a fetched response buffered); idle, a long one; never past the
    moment the pending batch is due."""
    from worker.app import poll_timeout_ms

    busy = poll_timeout_ms(since_records_s=0.2, until_due_s=None)
    idle = poll_timeout_ms(since_records_s=5.0, until_due_s=None)
    assert busy < idle
    assert busy <= 20
    assert idle >= 100
    assert poll_timeout_ms(since_records_s=5.0, until_due_s=0.007) == 7
    assert poll_timeout_ms(since_records_s=float("inf"), until_due_s=0.0) == 0
