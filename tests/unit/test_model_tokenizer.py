"""Tokenizer normalisation, truncation bounds and the vocabulary."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model import tokenizer
from model.tokenizer import PAD, PAD_ID, UNK, UNK_ID, Vocab, tokenize, truncate


def test_words_are_lowercased_and_shouting_is_marked() -> None:
    assert tokenize("Hello WORLD ok") == ["hello", "<caps>", "world", "ok"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see http://www.Example.co.uk/path?q=1 now", ["see", "<url>", "co.uk", "now"]),
        ("www.dbuk.net", ["<url>", "dbuk.net"]),
        ("mail bob.smith+x@mail.example.com today", ["mail", "<email>", "today"]),
        (
            "win £1,000 or $5.50 or 300 dollars",
            ["win", "<money>", "or", "<money>", "or", "<money>"],
        ),
        ("call 09061701461 now", ["call", "<phone>", "now"]),
        ("text 87121", ["text", "<num5>"]),
        ("in 2 days", ["in", "<num1>", "days"]),
        ("wow!!", ["wow", "!", "!"]),
        ("don't", ["don't"]),
    ],
)
def test_normalisation(text: str, expected: list[str]) -> None:
    assert tokenize(text) == expected


def test_overlong_words_collapse() -> None:
    assert tokenize("a" * 100) == ["<long>"]


def test_truncation_keeps_head_and_tail() -> None:
    words = ["w" + "".join(chr(97 + int(d)) for d in str(i)) for i in range(1000)]
    toks = tokenize(" ".join(words), max_tokens=8, head_fraction=0.75)
    assert len(toks) == 8
    assert toks[:6] == words[:6]
    assert toks[6:] == words[-2:]
    assert truncate(list(range(10)), 4, 0.5) == [0, 1, 8, 9]
    assert truncate([1, 2], 4) == [1, 2]
    assert tokenize("a b c", max_tokens=0) == []


def test_million_character_input_is_bounded(monkeypatch) -> None:
    text = ("spam words here " * 70_000) + "the end"  # ~1.1 M characters
    scanned: list[int] = []
    scan = tokenizer._scan
    monkeypatch.setattr(tokenizer, "_scan",
                        lambda t, limit: scanned.append(len(t)) or scan(t, limit))
    toks = tokenize(text, max_tokens=256)
    assert len(toks) == 256
    assert toks[-2:] == ["the", "end"]
    # The work is bounded by what is scanned: 16 characters per token from each end, not 1.1 M.
    assert sum(scanned) <= 2 * 16 * 256


def test_vocab_build_encode_and_json_round_trip() -> None:
    vocab = Vocab.build([["a", "b", "a"], ["a", "c", "b"], ["d"]], max_size=10, min_freq=2)
    assert vocab.itos[PAD_ID] == PAD and vocab.itos[UNK_ID] == UNK
    assert vocab.itos[-2:] == ["a", "b"]  # by frequency; "c" and "d" are rare
    assert vocab.encode(["a", "zzz"]) == [vocab.stoi["a"], UNK_ID]
    again = Vocab.from_json(vocab.to_json())
    assert again.itos == vocab.itos


def test_vocab_size_cap_and_validation() -> None:
    vocab = Vocab.build([[str(i)] * 3 for i in range(100)], max_size=20)
    assert len(vocab) == 20
    with pytest.raises(ValueError):
        Vocab(["x", "y"])
    with pytest.raises(ValueError):
        Vocab.from_json('{"version": 999, "tokens": ["<pad>", "<unk>"]}')


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000), st.integers(min_value=1, max_value=64))
def test_tokenize_never_raises_and_respects_budget(text: str, max_tokens: int) -> None:
    toks = tokenize(text, max_tokens=max_tokens)
    assert len(toks) <= max_tokens
    assert all(isinstance(t, str) and t for t in toks)
    full = tokenize(text)
    if len(full) <= max_tokens:
        assert toks == full


def test_long_runs_without_an_at_sign_do_not_backtrack() -> None:
    """The address pattern was tried from every position of a run of word characters to its
    end: 16 K underscores took 2 s. Local parts are read up to 256 characters, so each position
    costs at most that (the corpus tokenizes exactly as before)."""
    assert tokenize("write to john.doe+news@mail.example.com now") == [
        "write", "to", "<email>", "now"]
    assert tokenize("a" * 256 + "@x.example") == ["<email>"]
    # One character more and the run is no address but an over-long word.
    assert tokenize("a" * 257 + "@x.example") == ["<long>", "@", "x", "example"]
