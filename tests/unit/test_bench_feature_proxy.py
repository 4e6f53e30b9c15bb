"""The feature proxy's families: each text's distinct hashed features, one per kind of n-gram."""

from __future__ import annotations

from benchmarks.feature_proxy import _bucket, features


def test_pairs_and_triples_are_the_adjacent_tokens_of_the_text() -> None:
    assert features("win cash now", ["triples"]) == [_bucket("t:win cash now")]
    assert features("win cash", ["triples"]) == []  # too short for a triple
    assert features("win cash now", ["pairs"]) == sorted(
        {_bucket("p:win cash"), _bucket("p:cash now")})
    assert len(features("win cash now", ["words", "pairs", "triples"])) == 6
    assert features("now win now win", ["triples"]) == sorted(  # distinct, not counted
        {_bucket("t:now win now"), _bucket("t:win now win")})
