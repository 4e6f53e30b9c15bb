"""The feature proxy's families: each text's distinct hashed features, one per kind of n-gram."""

from __future__ import annotations

from benchmarks.feature_proxy import _bucket, features, structure


def test_pairs_and_triples_are_the_adjacent_tokens_of_the_text() -> None:
    assert features("win cash now", ["triples"]) == [_bucket("t:win cash now")]
    assert features("win cash", ["triples"]) == []  # too short for a triple
    assert features("win cash now", ["pairs"]) == sorted(
        {_bucket("p:win cash"), _bucket("p:cash now")})
    assert len(features("win cash now", ["words", "pairs", "triples"])) == 6
    assert features("now win now win", ["triples"]) == sorted(  # distinct, not counted
        {_bucket("t:now win now"), _bucket("t:win now win")})


def test_structure_reads_an_emails_parts_and_html_tags_and_nothing_of_plain_text() -> None:
    raw = (b"Subject: hi\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/alternative; boundary="b"\n\n'
           b"--b\nContent-Type: text/plain; charset=us-ascii\n\nhello\n"
           b"--b\nContent-Type: text/html; charset=iso-8859-1\n"
           b"Content-Transfer-Encoding: quoted-printable\n\n"
           b'<html><body><font color=3D"red">hello</font></body></html>\n--b--\n')
    found = structure(raw)
    assert {"m:multipart/alternative", "m:text/plain", "m:text/html:quoted-printable",
            "m:charset:iso-8859-1", "h:font", "h:font@color", "h:body"} <= found
    assert not {f for f in found if f.startswith("h:") and "red" in f}  # names, not values
    assert structure(None) == set()
    assert features("hello", ["structure"]) == []
    assert features("hello", ["structure"], raw) == sorted({_bucket(f) for f in found})
