"""A record with a routed copy is done once both copies are acknowledged, either one itself or
through the one dead letter that replaces the copies too large to produce (worker.publisher)."""

from worker.codec import SourceRecord
from worker.publisher import Completion, Outgoing, smaller_dead_letter


def make() -> tuple[Completion, list[str]]:
    calls: list[str] = []
    return Completion(2, lambda _m: calls.append("done"),
                      lambda _m: calls.append("replaced")), calls


def test_done_only_when_both_copies_are_in():
    completion, calls = make()
    completion.ack(None)
    assert calls == []
    completion.ack(None)
    assert calls == ["done"]


def test_a_copy_replaced_by_a_dead_letter_still_counts_as_published_once_the_other_is():
    completion, calls = make()
    assert completion.replace()  # the caller sends the dead letter
    completion.ack(None)
    assert calls == []  # the dead letter is not acknowledged yet
    completion.dead_letter_acknowledged()
    assert calls == ["done"]


def test_both_copies_too_large_make_one_dead_letter():
    completion, calls = make()
    assert completion.replace()
    assert not completion.replace()  # rides on the first one's dead letter
    assert calls == []
    completion.dead_letter_acknowledged()
    assert calls == ["replaced"]


def test_a_copy_refused_after_the_dead_letter_was_acknowledged_is_done_at_once():
    completion, calls = make()
    assert completion.replace()
    completion.dead_letter_acknowledged()
    assert calls == []
    assert not completion.replace()
    assert calls == ["replaced"]


def test_a_refused_dead_letter_sheds_value_then_headers_then_key():
    record = SourceRecord("in", 0, 7, 0, b"k" * 10, b"v" * 10, (("blob", b"x"),))
    out = Outgoing("dlq", record.key, record.value,
                    [("blob", b"x"), ("streamclf-error", b"decode")], lambda _m: None, record,
                    False)
    steps = []
    while (smaller := smaller_dead_letter(out)) is not None:
        steps.append(smaller)
        out = smaller
    assert [(s.value, s.key is None) for s in steps] == [(b"", False), (b"", False), (b"", True)]
    last = dict(steps[-1].headers)
    assert "blob" not in last and last["streamclf-error"] == b"decode"
    assert last["streamclf-value-dropped"] == b"10" and last["streamclf-key-dropped"] == b"10"
    assert last["streamclf-headers-dropped"] == b"1"
