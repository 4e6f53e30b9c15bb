"""iter_examples over JSON lines, .eml files, mbox files and maildirs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from model.data import (
    DataError,
    Example,
    assigned_split,
    example_text,
    iter_examples,
    normalize_split,
)

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
    assert sorted((e.label, e.id) for e in exs) == [  # ids name the file below the root
        ("ham", "ham/cur/1:2,S"),
        ("ham", "ham/new/2"),
        ("spam", "spam/cur/1:2,S"),
        ("spam", "spam/new/2"),
    ]


def test_linked_label_folders_are_read_and_a_link_back_up_does_not_loop(tmp_path: Path) -> None:
    """`mail/spam -> /archive/spam` was left out without a word: os.walk does not follow links."""
    archive = tmp_path / "archive" / "spam"
    archive.mkdir(parents=True)
    (archive / "1.eml").write_bytes(EML % (1, 1))
    (tmp_path / "mail" / "ham").mkdir(parents=True)
    (tmp_path / "mail" / "ham" / "2.eml").write_bytes(EML % (2, 2))
    (tmp_path / "mail" / "spam").symlink_to(archive)
    (tmp_path / "mail" / "ham" / "again").symlink_to(tmp_path / "mail")  # a loop
    (tmp_path / "mail" / "all").symlink_to(tmp_path / "mail" / "ham")  # sorts first, no label
    exs = list(iter_examples(tmp_path / "mail"))
    assert sorted((e.label, e.id) for e in exs) == [("ham", "ham/2.eml"), ("spam", "spam/1.eml")]


def test_unknown_file_format(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("just some words")
    with pytest.raises(DataError, match="not JSON lines"):
        list(iter_examples(odd))


def test_maildir_plus_folders_and_mbox_names_give_labels(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    for folder in (root, root / ".Junk", root / ".Archive"):
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True)
    (root / "cur" / "1:2,S").write_bytes(EML % (1, 1))
    (root / ".Junk" / "cur" / "2:2,S").write_bytes(EML % (2, 2))
    (root / ".Archive" / "new" / "3").write_bytes(EML % (3, 3))
    (root / ".git").mkdir()  # hidden and not a maildir: skipped
    (root / ".git" / "x.eml").write_bytes(EML % (4, 4))
    stamp = b"From a@example.org Mon Jan  1 00:00:00 2024\n"
    (tmp_path / "boxes").mkdir()
    for name in ("spam.mbox", "Ham.mbox"):
        (tmp_path / "boxes" / name).write_bytes(stamp + EML % (5, 5) + b"\n" + stamp + EML % (6, 6))
    exs = list(iter_examples(root))
    assert sorted((e.id, e.label) for e in exs) == [
        (".Archive/new/3", None), (".Junk/cur/2:2,S", "spam"), ("cur/1:2,S", None)]
    boxes = list(iter_examples(tmp_path / "boxes"))
    assert sorted((e.id, e.label) for e in boxes) == [
        ("Ham.mbox:0", "ham"), ("Ham.mbox:1", "ham"),
        ("spam.mbox:0", "spam"), ("spam.mbox:1", "spam")]


def test_a_body_line_starting_from_does_not_make_an_mbox(tmp_path: Path) -> None:
    (tmp_path / "ham").mkdir()
    msg = tmp_path / "ham" / "msg1"  # SpamAssassin-corpus style: envelope line, no suffix
    msg.write_bytes(b"From a@example.org Mon Jan  1 00:00:00 2024\n" + EML % (1, 1)
                    + b"\nFrom now on we meet on Mondays.\n\nFrom the notes: bring coffee.\n")
    (ex,) = list(iter_examples(tmp_path))
    assert ex.id == "ham/msg1" and ex.label == "ham"
    assert "From now on" in example_text(ex) and "bring coffee" in example_text(ex)


def test_what_is_not_a_regular_file_is_skipped(tmp_path: Path) -> None:
    import os

    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "a.eml").write_bytes(EML % (1, 1))
    (tmp_path / "ham" / "dangling").symlink_to(tmp_path / "absent")
    os.mkfifo(tmp_path / "ham" / "pipe")  # opening it would block for good
    assert [ex.id for ex in iter_examples(tmp_path)] == ["ham/a.eml"]


def test_json_rows_bom_subject_body_and_blank_labels(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b"\xef\xbb\xbf" + b"\n".join(json.dumps(r).encode() for r in [
        {"id": "a", "label": "spam", "text": 123},
        {"id": "b", "label": "ham", "subject": "Lunch", "body": "At noon?", "from": "x@y.org"},
    ]))
    a, b = list(iter_examples(rows))
    assert a.text == "123"
    assert example_text(b).startswith("Subject: Lunch") and "At noon?" in example_text(b)
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"id": "c", "label": "  ", "text": "hi"}) + "\n")
    with pytest.raises(DataError, match=r"blank.jsonl:1: blank label"):
        list(iter_examples(blank))
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "d", "label": "ham"}) + "\n")
    with pytest.raises(DataError, match="no message"):
        list(iter_examples(empty))


def test_data_without_a_split_is_split_by_id_the_same_everywhere() -> None:
    def ex(i: int, split: str | None = None) -> Example:
        return Example(f"msg-{i}", "ham", split, "s", None, "t")

    shares = [assigned_split(ex(i)) for i in range(5000)]
    assert {s: round(shares.count(s) / 5000, 1) for s in set(shares)} == {
        "train": 0.8, "val": 0.1, "test": 0.1}
    assert shares == [assigned_split(ex(i)) for i in range(5000)]  # stable
    assert assigned_split(ex(1, "test")) == "test"  # a given split wins
    assert normalize_split("Validation") == "val"
    with pytest.raises(DataError):
        normalize_split("tset")


def test_mail_keeps_its_split_whichever_folder_is_given(tmp_path: Path) -> None:
    """Train on a mail folder, evaluate on its subfolders (or after a mail client moved a
    maildir message from new/ to cur/, adding flags): each message must keep its split, or
    eval scores training mail."""
    root = tmp_path / "mail"
    for label in ("ham", "spam"):
        for sub in ("new", "cur", "tmp"):
            (root / label / sub).mkdir(parents=True)
        for i in range(60):
            (root / label / "new" / f"17000{i}.M{i}P1.host").write_bytes(
                EML % (i, i) + label.encode())
        (root / f"{label}.mbox").write_bytes(b"".join(
            b"From a@b Mon Jan  1 00:00:00 2024\n" + EML % (i, i) + label.encode() + b"box\n"
            for i in range(30)))

    def splits(*paths: Path) -> dict[bytes, str]:
        return {ex.raw: assigned_split(ex) for p in paths for ex in iter_examples(p) if ex.raw}

    whole = splits(root)
    assert set(whole.values()) == {"train", "val", "test"}
    parts = splits(root / "ham", root / "spam", root / "ham.mbox", root / "spam.mbox")
    assert parts == whole
    for msg in list((root / "spam" / "new").iterdir()):
        msg.rename(root / "spam" / "cur" / f"{msg.name}:2,S")
    assert splits(root) == whole


def test_an_mbox_named_after_its_label_is_not_a_source_of_its_own(tmp_path: Path) -> None:
    """`spam.mbox` beside `ham.mbox` (the layout the README gives) made two sources of one
    label each: eval's per-source figures, --select auc and --balance corpus saw no ham in one
    and no spam in the other."""
    box = b"From a@b Mon Jan  1 00:00:00 2024\n" + EML % (1, 1)
    corpus = tmp_path / "corpus"
    (corpus / "spam").mkdir(parents=True)
    for name in ("ham.mbox", "spam.mbox", "spam/gmail.mbox"):
        (corpus / name).write_bytes(box * 2)
    sources = {(ex.label, ex.source) for ex in iter_examples(corpus)}
    assert sources == {("ham", "corpus"), ("spam", "corpus"), ("spam", "gmail.mbox")}
    assert {ex.source for ex in iter_examples(corpus / "spam.mbox")} == {"corpus"}


def test_rows_without_an_id_keep_their_split_when_the_file_changes(tmp_path: Path) -> None:
    """A row without an id was split by its file's name and line number: renaming the file, or
    adding a row at the top, moved training rows into the test split."""
    rows = [{"label": "ham" if i % 2 else "spam", "text": f"message {i}"} for i in range(200)]
    first = tmp_path / "mail.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = {ex.text: assigned_split(ex) for ex in iter_examples(first)}
    assert set(before.values()) == {"train", "val", "test"}
    moved = tmp_path / "mail-2024.jsonl"
    rows[7]["id"] = None  # null: no id either
    moved.write_text("".join(json.dumps(r) + "\n" for r in [{"text": "new"}, *rows[::-1]]))
    after = {ex.text: assigned_split(ex) for ex in iter_examples(moved)}
    assert {t: s for t, s in after.items() if t != "new"} == before


def test_a_label_folder_given_is_not_a_source_of_its_own(tmp_path: Path) -> None:
    """`--data mail/spam mail/ham` made sources `spam` and `ham`, one label each: eval's
    per-source figures had no ham in one and no spam in the other."""
    for label in ("spam", "ham", ".Junk"):
        (tmp_path / "mail" / label).mkdir(parents=True)
        (tmp_path / "mail" / label / "0.eml").write_bytes(EML % (1, 1))
    (tmp_path / "mail" / "ham.mbox").write_bytes(b"From a@b Mon Jan  1 00:00:00 2024\n" + EML)
    given = [tmp_path / "mail" / name for name in ("spam", "ham", ".Junk", "ham.mbox")]
    assert {ex.source for p in given for ex in iter_examples(p)} == {"mail"}
    assert {ex.source for ex in iter_examples(tmp_path / "mail")} == {"mail"}


def test_left_out_note_counts_in_words() -> None:
    from model.data import left_out_note

    assert left_out_note({}) is None
    assert left_out_note({"blank": 1}) == "left out: 1 blank message"
    assert left_out_note({"blank": 2, "unlabelled": 1}) == (
        "left out: 2 blank messages, 1 without a label")


def test_every_file_of_a_maildir_is_a_message(tmp_path: Path) -> None:
    """A maildir message whose start the email guess does not know (no .eml suffix to go by)
    was skipped as "not a message", without a word; a stray file beside the maildir still is."""
    (tmp_path / "ham" / "cur").mkdir(parents=True)
    (tmp_path / "ham" / "new").mkdir()
    (tmp_path / "ham" / "cur" / "1.host:2,S").write_bytes(b"Thread-Topic: lunch\n\nat noon?\n")
    (tmp_path / "ham" / "new" / "2.host").write_bytes(EML % (2, 2))
    (tmp_path / "ham" / "README").write_bytes(b"my old mail\n")
    assert sorted(ex.id for ex in iter_examples(tmp_path)) == ["ham/cur/1.host:2,S",
                                                              "ham/new/2.host"]


def test_files_that_cannot_be_read_are_named_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dangling link or a folder that cannot be listed below a data folder was skipped
    without a word, and a file without read permission stopped train and eval."""
    import builtins
    import os

    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "a.eml").write_bytes(EML % (1, 1))
    (tmp_path / "ham" / "gone.eml").symlink_to(tmp_path / "absent")
    (tmp_path / "ham" / "locked.eml").write_bytes(EML % (2, 2))
    (tmp_path / "spam" / "cur").mkdir(parents=True)
    (tmp_path / "spam" / "cur" / "1").write_bytes(EML % (3, 3))
    locked = {str(tmp_path / "ham" / "locked.eml"), str(tmp_path / "spam" / "cur")}

    def refused(call):  # root reads everything: permissions are refused here instead
        def guarded(path, *args, **kwargs):
            if str(path) in locked:
                raise PermissionError(13, "Permission denied", str(path))
            return call(path, *args, **kwargs)
        return guarded

    monkeypatch.setattr(builtins, "open", refused(builtins.open))
    monkeypatch.setattr(os, "scandir", refused(os.scandir))
    unreadable: list[str] = []
    assert [ex.id for ex in iter_examples(tmp_path, unreadable)] == ["ham/a.eml"]
    assert unreadable == [f"{tmp_path}/ham/gone.eml: a dangling link",
                          f"{tmp_path}/ham/locked.eml: Permission denied",
                          f"{tmp_path}/spam/cur/: Permission denied"]


def test_left_out_note_names_unreadable_files() -> None:
    from model.data import left_out_note

    names = [f"m/{i}.eml: a dangling link" for i in range(5)]
    assert left_out_note({"blank": 1}, names[:1]) == (
        "left out: 1 blank message, 1 unreadable file (m/0.eml: a dangling link)")
    assert left_out_note({}, names) == (
        "left out: 5 unreadable files (m/0.eml: a dangling link; m/1.eml: a dangling link; "
        "m/2.eml: a dangling link; and 2 more)")
