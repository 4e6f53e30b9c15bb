"""Labelled examples from JSON lines, ``.eml`` files, mbox files and maildirs.

Standard library only: the worker imports this module without torch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import mailbox
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.email import MBOX_FROM, email_to_text, looks_like_email, mail_fields_to_text

__all__ = ["DataError", "Example", "assigned_split", "example_from_row", "example_text",
           "is_blank", "iter_examples", "LABEL_NAMES", "left_out_note", "left_out_reason",
           "normalize_split"]

# Mail has no label field: the name of an enclosing folder (a Maildir++ folder's without its
# dot) or of the mbox file itself gives it. Junk is what mail clients call their spam folder.
LABEL_NAMES = {"spam": "spam", "junk": "spam", "ham": "ham"}
LABEL_HELP = ("labels come from each JSON row's 'label', and for mail from the name of an "
              "enclosing folder up to the one given, or of the mbox file: spam (or junk) / ham")


class DataError(ValueError):
    """A data file is missing, unreadable or in an unknown format."""


@dataclass(frozen=True)
class Example:
    """One message: raw email bytes or plain text, with its label and split when known."""

    id: str
    label: str | None
    split: str | None
    source: str
    raw: bytes | None
    text: str | None
    # What the split hash reads instead of the id: for mail, a name that does not depend on the
    # folder given (the id does: `spam/0.eml` given the parent, `0.eml` given spam/).
    split_key: str | None = None


def assigned_split(ex: Example) -> str:
    """The example's split: its own, else a stable 80/10/10 train/val/test share by id, the same
    for `train`, `eval` and `produce --split`, so a model is never scored on its training mail."""
    if ex.split is not None:
        return ex.split
    key = ex.split_key or ex.id
    bucket = zlib.crc32(key.encode("utf-8", "surrogateescape")) % 10
    return "val" if bucket == 0 else "test" if bucket == 1 else "train"


def normalize_split(value: str) -> str:
    """A split named on the command line: train, val (validation, valid, dev) or test."""
    split = _split(value, "split")
    assert split is not None
    return split


def example_text(ex: Example) -> str:
    """The model text of an example: the email reduced to text, or the text as is."""
    if ex.raw is not None:
        return email_to_text(ex.raw)
    return ex.text or ""


def is_blank(ex: Example) -> bool:
    """Nothing to classify (an empty file, a blank text): the worker dead-letters such a value
    as `empty`, so train and eval leave it out rather than learn or score it."""
    if ex.raw is not None:
        return not ex.raw.strip()
    return not (ex.text or "").strip()


def left_out_reason(ex: Example) -> str | None:
    """Why train and eval do not use *ex* ("unlabelled", "blank"), or None when they do."""
    if ex.label is None:
        return "unlabelled"
    return "blank" if is_blank(ex) else None


def left_out_note(left_out: Mapping[str, int], unreadable: Sequence[str] = ()) -> str | None:
    """What train and eval did not use, for the user to see (a mail folder with no label name
    is easy to miss), the first few *unreadable* files named; None when nothing was left
    out."""
    parts = []
    if left_out.get("blank"):
        count = left_out["blank"]
        parts.append(f"{count} blank message{'' if count == 1 else 's'}")
    if left_out.get("unlabelled"):
        parts.append(f"{left_out['unlabelled']} without a label")
    if unreadable:
        count = len(unreadable)
        named = "; ".join([*unreadable[:3], *([f"and {count - 3} more"] if count > 3 else [])])
        parts.append(f"{count} unreadable file{'' if count == 1 else 's'} ({named})")
    return f"left out: {', '.join(parts)}" if parts else None


def iter_examples(path: str | Path, unreadable: list[str] | None = None) -> Iterator[Example]:
    """Yield the examples stored at *path* (JSON lines, .eml, mbox, maildir or a directory).

    Below a directory, what cannot be read (a dangling link, a file or folder without
    permission) goes to *unreadable* as "path: why" and is skipped. Without *unreadable*, a
    dangling link is skipped silently and a file without permission is a DataError.
    """
    path = Path(path)
    if path.is_dir():
        yield from _iter_dir(path, unreadable)
    elif path.is_file():
        yield from _iter_file(path, root=path.parent)
    else:
        raise DataError(f"no such file or directory: {path}")


def _is_jsonl(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"))


def _file_kind(path: Path) -> str | None:
    """jsonl, mbox, eml, or json (JSON-looking content without the suffix); None otherwise."""
    if _is_jsonl(path):
        return "jsonl"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it: {exc}") from exc
    if head.startswith(b"From ") and is_mbox(path):
        return "mbox"
    if path.suffix.lower() == ".eml" or looks_like_email(head):
        return "eml"
    if head.lstrip().startswith(b"{"):
        return "json"
    return None


def _iter_kind(kind: str, path: Path, root: Path) -> Iterator[Example]:
    if kind in ("jsonl", "json"):
        yield from _iter_jsonl(path)
    elif kind == "mbox":
        yield from _iter_mbox(path, root)
    else:
        yield _eml_example(path, root)


def _iter_file(path: Path, root: Path) -> Iterator[Example]:
    kind = _file_kind(path)
    if kind is None:
        raise DataError(f"{path}: not JSON lines, an email, an mbox or a maildir")
    yield from _iter_kind(kind, path, root)


def is_mbox(path: Path) -> bool:
    """An mbox holds ``From ``-separated messages; a lone .eml may start with such a line too."""
    if path.suffix.lower() == ".eml":
        return False
    if path.suffix.lower() in (".mbox", ".mbx"):
        return True
    with open(path, "rb") as fh:
        return _has_many(fh)


def holds_mbox(data: bytes) -> bool:
    """Whether *data*, read whole (stdin), is an mbox, by the test a file without the suffix
    passes."""
    return data.startswith(b"From ") and _has_many(io.BytesIO(data))


def mbox_examples_from_bytes(data: bytes, name: str) -> Iterator[Example]:
    """The messages of an mbox read whole (see `holds_mbox`), parsed as a file would be:
    through a temporary copy that mailbox can read."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / name
        copy.write_bytes(data)
        yield from _iter_mbox(copy, Path(tmp))


def _label_from_path(path: Path, root: Path, own_name: bool = False) -> str | None:
    """The label of the nearest enclosing folder with a label name (root included), or with
    *own_name* of the file itself (``spam.mbox``); None when there is none."""
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        parts = ()
    names = (root.name, *parts, path.stem) if own_name else (root.name, *parts)
    for name in reversed(names):
        label = LABEL_NAMES.get(name.lstrip(".").lower())
        if label is not None:
            return label
    return None


def _mail_source(root: Path, default: str) -> str:
    """The source of mail found below *root*: its name, or its parent's when it names a label
    (`--data mail/spam mail/ham` is one source split by label, not two)."""
    if root.name.lstrip(".").lower() in LABEL_NAMES:
        root = root.resolve().parent
    return root.name or default


def _relative_id(path: Path, root: Path) -> str:
    """The file's path below the folder it was found in: ``spam/0.eml`` and ``ham/0.eml`` differ."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


# A maildir message's flags ("unique:2,S"), which a mail client changes when it moves the
# message from new/ to cur/ or marks it read.
_MAILDIR_INFO = re.compile(r"[:!]2,[^/]*$")


def _mail_split_key(path: Path) -> str:
    """The file's own name without maildir flags: the same whichever folder above it is given."""
    return _MAILDIR_INFO.sub("", path.name)


def _eml_example(path: Path, root: Path) -> Example:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it: {exc}") from exc
    return Example(
        id=_relative_id(path, root),
        label=_label_from_path(path, root),
        split=None,
        source=_mail_source(root, "eml"),
        raw=raw,
        text=None,
        split_key=_mail_split_key(path),
    )


_SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "dev": "val",
           "test": "test"}


def _split(value: Any, where: str) -> str | None:
    """A row's split: train, val or test (any case; validation/valid/dev mean val). Anything else
    is an error: guessing could put test rows into training."""
    if value is None:
        return None
    split = _SPLITS.get(str(value).strip().lower())
    if split is None:
        raise DataError(f"{where}: unknown split {value!r} (use train, val or test)")
    return split


def _iter_jsonl(path: Path) -> Iterator[Example]:
    try:
        yield from _read_jsonl(path)
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # truncated .gz, not UTF-8, ...
        raise DataError(f"{path}: cannot read it: {exc}") from exc


def _read_jsonl(path: Path) -> Iterator[Example]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    default_source = path.name.split(".")[0]
    # utf-8-sig: a byte-order mark some editors write must not make the first line invalid.
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
            yield example_from_row(row, f"{path}:{lineno}", f"{default_source}:{lineno}",
                                   default_source)


def example_from_row(row: Any, where: str, default_id: str, default_source: str) -> Example:
    """One JSON-lines row: ``raw`` (an email), ``text``, or ``subject``/``body``/``from`` (laid
    out as the worker lays out such a request); ``id``, ``label``, ``split`` and ``source``
    optional. *where* names the row in errors."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    raw, text = row.get("raw"), row.get("text")
    if raw is None and text is None:
        if row.get("subject") is None and row.get("body") is None:
            raise DataError(f"{where}: no message: give 'raw', 'text' or 'subject'/'body'")
        text = mail_fields_to_text(*(str(row.get(k) or "") for k in ("subject", "body", "from")))
    label = row.get("label")
    if label is not None:
        label = str(label).strip()
        if not label:
            raise DataError(f"{where}: blank label (leave 'label' out for an unlabelled row)")
    raw_bytes = None if raw is None else str(raw).encode("utf-8", "surrogateescape")
    row_id = row.get("id")  # null is no id, not the id "None" of every such row
    return Example(
        id=default_id if row_id is None else str(row_id),
        label=label,
        split=_split(row.get("split"), where),
        source=str(row.get("source", default_source)),
        # The corpus stores raw mail as a str; UTF-8 gives the bytes back.
        raw=raw_bytes,
        text=None if text is None else str(text),
        # Without an id, the default one (file name and line) would move the row to another
        # split when the file is renamed or rows are added above it: its content does not.
        split_key=None if row_id is not None else _content_key(raw_bytes, text),
    )


def _content_key(raw: bytes | None, text: Any) -> str:
    content = raw if raw is not None else str(text).encode("utf-8", "surrogateescape")
    return hashlib.sha256(content).hexdigest()


def _iter_mbox(path: Path, root: Path) -> Iterator[Example]:
    box = mailbox.mbox(path, create=False)
    label = _label_from_path(path, root, own_name=True)
    name = _relative_id(path, root)
    # `spam.mbox` beside `ham.mbox` is one source split by label, not two sources.
    source = _mail_source(root, "mbox") if path.stem.lower() in LABEL_NAMES else path.name
    try:
        for i, key in enumerate(box.iterkeys()):
            yield Example(
                id=f"{name}:{i}",
                label=label,
                split=None,
                source=source,
                raw=box.get_bytes(key),
                text=None,
                split_key=f"{_mail_split_key(path)}:{i}",
            )
    finally:
        box.close()


def _iter_dir(root: Path, unreadable: list[str] | None) -> Iterator[Example]:
    """Every data file below *root*, in sorted order, linked folders included. Skipped: maildir
    tmp/, hidden files and folders other than Maildir++ folders (``.Junk/cur``), what is not a
    regular file (a pipe that would block), and what cannot be read (see `iter_examples`)."""

    def cannot_read(exc: OSError) -> None:  # os.walk's: a folder it cannot list
        if unreadable is not None:
            unreadable.append(f"{exc.filename}/: {exc.strerror or exc}")

    # Linked folders are followed (`mail/spam -> /archive/spam` would otherwise be left out
    # without a word), each real folder once: a link back up cannot loop.
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_read, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        # Real folders before linked ones: a link to a sibling (`all -> spam`) must not claim
        # the folder, and its label, before the folder itself is read.
        dirnames[:] = sorted((d for d in dirnames if d != "tmp" and (
            not d.startswith(".") or _is_maildir(Path(dirpath) / d))),
            key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                if not stat.S_ISREG(path.stat().st_mode):
                    continue
                if unreadable is not None:  # left out here rather than an error mid-way
                    with open(path, "rb"):
                        pass
            except OSError as exc:
                if unreadable is not None:
                    dangling = path.is_symlink() and not path.exists()
                    why = "a dangling link" if dangling else exc.strerror or str(exc)
                    unreadable.append(f"{path}: {why}")
                continue
            kind = _file_kind(path)
            if kind is None and _in_maildir(path):  # a maildir holds messages only
                kind = "eml"
            # Anything else in a folder (READMEs, indexes, stray JSON) is not a message: skip it.
            if kind in ("jsonl", "mbox", "eml"):
                yield from _iter_kind(kind, path, root)


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def _in_maildir(path: Path) -> bool:
    """Whether *path* is a message of a maildir: a file in its cur/ or new/."""
    return path.parent.name in ("cur", "new") and _is_maildir(path.parent.parent)


def _has_many(lines: Iterable[bytes]) -> bool:
    """Whether mbox-looking lines hold more than one ``From ``-separated message. Only a
    separator with a time of day counts: a body line "From now on..." does not."""
    return any(i > 0 and MBOX_FROM.match(line) for i, line in enumerate(lines))
