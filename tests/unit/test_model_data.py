"""iter_examples over JSON lines, .eml files, mbox files and maildirs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from model.data import DataError, Example, example_text, iter_examples

EML = b"From: a@example.org\nSubject: hello %d\n\nbody %d\n"


def test_jsonl_and_gzip(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "label": "spam", "split": "train", "source": "s/x", "raw": "Subject: hi\n\nyo"},
        {"id": "2", "label": "ham", "split": "test", "text": "plain text"},
    ]
    plain = tmp_path / "d.jsonl"
    plain.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    packed = tmp_path / "d.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        a, b = list(iter_examples(path))
        assert a == Example("1", "spam", "train", "s/x", b"Subject: hi\n\nyo", None)
        assert b.text == "plain text" and b.raw is None and b.source == "d"
        assert example_text(a) == "Subject: hi\nyo"
        assert example_text(b) == "plain text"


def test_bad_jsonl_is_a_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        list(iter_examples(bad))
    with pytest.raises(DataError):
        list(iter_examples(tmp_path / "absent.jsonl"))


def test_splits_are_named_or_refused(tmp_path: Path) -> None:
    """A split named otherwise than train/val/test must not be guessed: the hash split for rows
    without one could put test rows into training."""
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"id": str(i), "text": "t", "label": "ham", "split": s})
                              for i, s in enumerate(["Train", "validation", "dev", "TEST"])))
    assert [ex.split for ex in iter_examples(data)] == ["train", "val", "val", "test"]
    data.write_text(json.dumps({"id": "1", "text": "t", "label": "ham", "split": "holdout"}))
    with pytest.raises(DataError, match="d.jsonl:1: unknown split 'holdout'"):
        list(iter_examples(data))


def test_single_eml_file(tmp_path: Path) -> None:
    (tmp_path / "spam").mkdir()
    eml = tmp_path / "spam" / "one.eml"
    eml.write_bytes(EML % (1, 1))
    (ex,) = list(iter_examples(eml))
    assert ex.id == "one.eml" and ex.label == "spam" and ex.raw == EML % (1, 1)
    assert "hello 1" in example_text(ex)


def test_mbox_file(tmp_path: Path) -> None:
    box = tmp_path / "inbox"
    box.write_bytes(
        b"".join(b"From a@example.org Mon Jan  1 00:00:00 2024\n" + EML % (i, i) for i in range(3))
    )
    exs = list(iter_examples(box))
    assert [e.id for e in exs] == ["inbox:0", "inbox:1", "inbox:2"]
    assert all(e.label is None for e in exs)
    assert "body 2" in example_text(exs[2])


def test_maildir_with_label_directories(tmp_path: Path) -> None:
    for label in ("spam", "ham"):
        for sub in ("cur", "new", "tmp"):
            (tmp_path / "mail" / label / sub).mkdir(parents=True)
        (tmp_path / "mail" / label / "cur" / "1:2,S").write_bytes(EML % (1, 1))
        (tmp_path / "mail" / label / "new" / "2").write_bytes(EML % (2, 2))
        (tmp_path / "mail" / label / "tmp" / "partial").write_bytes(EML % (3, 3))
    (tmp_path / "mail" / "README").write_text("not a message")
    exs = list(iter_examples(tmp_path / "mail"))
    assert sorted((e.label, e.id) for e in exs) == [
        ("ham", "1:2,S"),
        ("ham", "2"),
        ("spam", "1:2,S"),
        ("spam", "2"),
    ]


def test_unknown_file_format(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("just some words")
    with pytest.raises(DataError, match="not JSON lines"):
        list(iter_examples(odd))
