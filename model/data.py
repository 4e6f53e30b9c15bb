"""Labelled examples from JSON lines, ``.eml`` files, mbox files and maildirs.

Standard library only: the worker imports this module without torch.
"""

from __future__ import annotations

import gzip
import json
import mailbox
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.email import email_to_text, looks_like_email

__all__ = ["DataError", "Example", "example_text", "iter_examples", "LABEL_DIRS"]

# Directory names that give their files a label.
LABEL_DIRS = ("spam", "ham")


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


def example_text(ex: Example) -> str:
    """The model text of an example: the email reduced to text, or the text as is."""
    if ex.raw is not None:
        return email_to_text(ex.raw)
    return ex.text or ""


def iter_examples(path: str | Path) -> Iterator[Example]:
    """Yield the examples stored at *path* (JSON lines, .eml, mbox, maildir or a directory)."""
    path = Path(path)
    if path.is_dir():
        yield from _iter_dir(path)
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
    with open(path, "rb") as fh:
        head = fh.read(4096)
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
    return path.suffix.lower() in (".mbox", ".mbx") or _has_many(path)


def _label_from_path(path: Path, root: Path) -> str | None:
    """The nearest enclosing directory named spam/ham (root included), else None."""
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        parts = ()
    for name in reversed((root.name, *parts)):
        if name.lower() in LABEL_DIRS:
            return name.lower()
    return None


def _eml_example(path: Path, root: Path) -> Example:
    return Example(
        id=path.name,
        label=_label_from_path(path, root),
        split=None,
        source=root.name or "eml",
        raw=path.read_bytes(),
        text=None,
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
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            raw = row.get("raw")
            text = row.get("text")
            if raw is None and text is None:
                raise DataError(f"{path}:{lineno}: neither 'raw' nor 'text'")
            yield Example(
                id=str(row.get("id", f"{default_source}:{lineno}")),
                label=None if row.get("label") is None else str(row["label"]),
                split=_split(row.get("split"), f"{path}:{lineno}"),
                source=str(row.get("source", default_source)),
                # The corpus stores raw mail as a str; UTF-8 gives the bytes back.
                raw=None if raw is None else str(raw).encode("utf-8", "surrogateescape"),
                text=None if text is None else str(text),
            )


def _iter_mbox(path: Path, root: Path) -> Iterator[Example]:
    box = mailbox.mbox(path, create=False)
    label = _label_from_path(path, root)
    try:
        for i, key in enumerate(box.iterkeys()):
            yield Example(
                id=f"{path.name}:{i}",
                label=label,
                split=None,
                source=path.name,
                raw=box.get_bytes(key),
                text=None,
            )
    finally:
        box.close()


def _iter_dir(root: Path) -> Iterator[Example]:
    """Every data file below *root*, in sorted order; maildir tmp/ and dotfiles are skipped."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "tmp")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            kind = _file_kind(path)
            # Anything else in a folder (READMEs, indexes, stray JSON) is not a message: skip it.
            if kind in ("jsonl", "mbox", "eml"):
                yield from _iter_kind(kind, path, root)


def _has_many(path: Path) -> bool:
    """Whether an mbox-looking file holds more than one ``From ``-separated message."""
    with open(path, "rb") as fh:
        return any(i > 0 and line.startswith(b"From ") for i, line in enumerate(fh))
