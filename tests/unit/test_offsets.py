import threading

import pytest

from worker.offsets import OffsetTracker

P0, P1 = ("in", 0), ("in", 1)


def test_watermark_waits_for_the_oldest_pending_record():
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.track(P0, offset)
    t.ack(P0, 12)
    t.ack(P0, 11)
    assert t.committable() == {P0: 10}  # 10 still pending: nothing past it may be committed
    t.ack(P0, 10)
    assert t.committable() == {P0: 13}
    assert t.in_flight() == 0


def test_commit_covers_and_reports_only_advances():
    t = OffsetTracker()
    for offset in range(5):
        t.track(P0, offset)
    for offset in range(3):
        t.ack(P0, offset)
    offsets = t.committable()
    assert offsets == {P0: 3}
    assert t.mark_committed(offsets) == 3
    assert t.committable() == {}
    t.ack(P0, 3)
    t.ack(P0, 4)
    assert t.mark_committed(t.committable()) == 2


def _done(t: OffsetTracker, partition, offsets) -> None:
    for offset in offsets:
        t.track(partition, offset)
        t.ack(partition, offset)


def test_a_claimed_commit_counts_once_accepted_and_later_commits_count_beyond_it():
    t = OffsetTracker()
    _done(t, P0, range(10, 14))
    t.mark_committed({P0: 11})
    claim = t.claim_commit(t.committable())
    assert t.committable() == {}  # sent: not offered again while the answer is awaited
    _done(t, P0, [14, 15])
    assert t.mark_committed(t.committable()) == 2  # only what lies beyond the claim
    assert t.settle_claim(claim, accepted=True) == 3


def test_a_claimed_commit_of_a_forgotten_partition_still_counts():
    t = OffsetTracker()
    _done(t, P0, range(4))
    claim = t.claim_commit(t.committable())
    t.forget([P0])  # revoked: the answer comes after the partition is gone
    assert t.settle_claim(claim, accepted=True) == 4


def test_a_refused_claim_counts_nothing_and_is_offered_again():
    t = OffsetTracker()
    _done(t, P0, range(4))
    t.skip_to(P1, 50)  # an idle partition, never committed here
    claim = t.claim_commit(t.committable())
    assert t.settle_claim(claim, accepted=False) == 0
    assert t.committable() == {P0: 4, P1: 50}
    assert t.mark_committed(t.committable()) == 4


def test_a_refused_claim_leaves_a_later_commit_in_place():
    t = OffsetTracker()
    _done(t, P0, range(4))
    claim = t.claim_commit(t.committable())
    _done(t, P0, [4])
    assert t.mark_committed(t.committable()) == 1
    assert t.settle_claim(claim, accepted=False) == 4  # the later commit covered them
    assert t.committable() == {}


def test_a_refused_claim_of_a_partition_held_again_since_is_left_to_the_new_tenure():
    t = OffsetTracker()
    _done(t, P0, range(4))
    claim = t.claim_commit(t.committable())
    t.forget([P0])
    t.skip_to(P0, 0)  # given back; its position is the broker's last commit
    assert t.settle_claim(claim, accepted=False) == 0
    assert t.committable() == {P0: 0}


def test_partitions_are_independent_and_gaps_in_offsets_are_fine():
    t = OffsetTracker()
    t.track(P0, 0)
    t.track(P1, 100)
    t.track(P1, 105)  # compacted topics and transactions leave gaps
    t.ack(P1, 100)
    t.ack(P1, 105)
    assert t.committable() == {P0: 0, P1: 106}
    assert t.in_flight() == 1
    assert t.in_flight({P1}) == 0


def test_an_idle_partition_skips_to_the_consumer_position_and_a_busy_one_does_not():
    t = OffsetTracker()
    for offset in (0, 1, 2):
        t.track(P0, offset)
    t.ack(P0, 0)
    t.skip_to(P0, 4)  # 1 and 2 are pending: the position says nothing about them
    assert t.committable() == {P0: 1}
    t.ack(P0, 1)
    t.ack(P0, 2)
    t.skip_to(P0, 4)  # offset 3 was a transaction marker the consumer passed
    assert t.committable() == {P0: 4}
    t.skip_to(P0, 2)  # never backwards
    assert t.committable() == {P0: 4}
    t.track(P0, 4)
    assert t.committable() == {P0: 4} and t.in_flight() == 1
    t.skip_to(P1, 7)  # nothing read from P1 since it was assigned: its position is done
    assert t.committable()[P1] == 7 and t.in_flight({P1}) == 0
    assert t.mark_committed({P1: 7}) == 0


def test_forget_drops_partition_and_late_acks():
    t = OffsetTracker()
    t.track(P0, 0)
    t.track(P0, 1)
    t.ack(P0, 1)
    t.forget({P0})
    assert t.in_flight() == 0
    t.ack(P0, 0)  # a late acknowledgement after a revoke
    assert t.committable() == {}


def test_out_of_order_tracking_is_a_bug():
    t = OffsetTracker()
    t.track(P0, 5)
    with pytest.raises(ValueError):
        t.track(P0, 5)


def test_concurrent_acks():
    t = OffsetTracker()
    n = 20_000
    for offset in range(n):
        t.track(P0, offset)
    evens = threading.Thread(target=lambda: [t.ack(P0, o) for o in range(0, n, 2)])
    odds = threading.Thread(target=lambda: [t.ack(P0, o) for o in range(1, n, 2)])
    evens.start()
    odds.start()
    evens.join()
    odds.join()
    assert t.committable() == {P0: n}
    assert t.in_flight() == 0


def test_the_oldest_timestamp_is_the_first_record_not_yet_done():
    t = OffsetTracker()
    t.track_many(P0, [10, 11, 12], [1_000, 2_000, 3_000])
    assert t.oldest_timestamp_ms(P0) == 1_000
    t.ack(P0, 11)  # done out of order: 10 is still the oldest not done
    assert t.oldest_timestamp_ms(P0) == 1_000
    t.ack(P0, 10)  # 10 and 11 done: 12 is next
    assert t.oldest_timestamp_ms(P0) == 3_000
    t.ack(P0, 12)
    assert t.oldest_timestamp_ms(P0) is None
    t.track(P0, 13, 4_000)
    assert t.oldest_timestamp_ms(P0) == 4_000
    assert t.oldest_timestamp_ms(P1) is None  # never tracked


def test_records_without_a_timestamp_give_no_age_and_forgotten_partitions_none():
    t = OffsetTracker()
    t.track_many(P0, [0, 1])  # no timestamps given
    t.track_many(P1, [0], [-1])  # a record without one
    assert t.oldest_timestamp_ms(P0) is None
    assert t.oldest_timestamp_ms(P1) is None
    t.track_many(P1, [1], [5_000])
    t.ack(P1, 0)
    assert t.oldest_timestamp_ms(P1) == 5_000
    t.forget([P1])
    assert t.oldest_timestamp_ms(P1) is None
    with pytest.raises(ValueError, match="one timestamp per offset"):
        t.track_many(P0, [2, 3], [1])
