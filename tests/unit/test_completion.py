"""A record with a routed copy is done once both copies are acknowledged, either one itself or
through the dead letter that replaced it (worker.app._Completion)."""

from worker.app import _Completion


def make() -> tuple[_Completion, list[str]]:
    calls: list[str] = []
    return _Completion(2, lambda _m: calls.append("done"),
                       lambda _m: calls.append("replaced")), calls


def test_done_only_when_both_copies_are_in():
    completion, calls = make()
    completion.ack(None)
    assert calls == []
    completion.ack(None)
    assert calls == ["done"]


def test_a_copy_replaced_by_a_dead_letter_still_counts_as_published_once_the_other_is():
    completion, calls = make()
    completion.stand_in()
    assert calls == []
    completion.ack(None)
    assert calls == ["done"]


def test_both_copies_replaced_is_not_a_published_result():
    completion, calls = make()
    completion.stand_in()
    completion.stand_in()
    assert calls == ["replaced"]
