"""Record bytes ↔ requests, results and dead letters. Knows neither Kafka's client nor torch.

`decode` never raises: a record that cannot become a request comes back as a `Rejection`
carrying a short reason code, which the worker sends to the dead-letter topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from model.email import email_to_text, looks_like_email, mail_fields_to_text

Headers = tuple[tuple[str, bytes], ...]

# Dead-letter reason codes (the `streamclf-error` header and the metric label).
DECODE = "decode"
EMPTY = "empty"
TOO_LARGE = "too_large"
INFERENCE = "inference"
OUTPUT_TOO_LARGE = "output_too_large"
OUTPUT = "output"  # the result could not be built (a bug, not bad input: it is logged too)
REASONS = (DECODE, EMPTY, TOO_LARGE, INFERENCE, OUTPUT_TOO_LARGE, OUTPUT)

_DETAIL_LIMIT = 500


# The records below are NamedTuples, not frozen dataclasses: they are built several times per
# message, and a frozen dataclass costs 3-4x as much to construct (it sets each field through
# object.__setattr__). They are just as immutable.


class SourceRecord(NamedTuple):
    """What the worker keeps of a consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def ref(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


class Request(NamedTuple):
    """A record ready for the model: its text, and its token ids once tokenized."""

    record: SourceRecord
    id: str
    text: str
    ids: Sequence[int] = ()


class Rejection(NamedTuple):
    """A record that goes to the dead-letter topic."""

    record: SourceRecord
    reason: str
    detail: str


@dataclass(frozen=True)
class InputSettings:
    format: str = "auto"
    text_fields: tuple[str, ...] = ("text",)
    id_field: str = "id"
    max_bytes: int = 10_000_000


def decode(record: SourceRecord, settings: InputSettings) -> Request | Rejection:
    """Turn a record's value into a request, or say why it cannot be classified."""
    value = record.value
    if value is None:
        return Rejection(record, EMPTY, "tombstone: the record has no value")
    if len(value) > settings.max_bytes:
        return Rejection(
            record, TOO_LARGE, f"value is {len(value)} bytes, limit {settings.max_bytes}"
        )
    if not value.strip():
        return Rejection(record, EMPTY, "the value is empty or blank")
    fmt = settings.format
    if fmt == "auto":
        fmt = _detect(value)
    try:
        if fmt == "json":
            request_id, text = _from_json(value, settings)
        elif fmt == "email":
            request_id, text = None, email_to_text(value)
        else:
            request_id, text = None, _utf8(value)
    except _Undecodable as exc:
        return Rejection(record, DECODE, str(exc))
    except Exception as exc:  # a parser bug must not stop the stream: dead-letter the record
        return Rejection(record, DECODE, f"{fmt}: {type(exc).__name__}: {exc}"[:_DETAIL_LIMIT])
    if not text.strip():
        return Rejection(record, EMPTY, f"no text to classify in the {fmt} value")
    return Request(record, request_id or record.ref, text)


class _Undecodable(ValueError):
    pass


_UTF8_BOM = b"\xef\xbb\xbf"  # some producers write one before JSON
# A JSON object starts '{"' or '{}': "{Free} entry to win ..." and "{name}, your code" are
# text, while a broken JSON object is still JSON and gets its dead letter.
_OBJECT_START = re.compile(rb"\s*\{\s*[\"}]")


def _detect(value: bytes) -> str:
    unmarked = value.removeprefix(_UTF8_BOM)
    if _OBJECT_START.match(unmarked):
        return "json"
    if unmarked.lstrip()[:1] == b"[" and _is_json(value):
        return "json"  # valid JSON but not an object: rejected with a clear reason
    if looks_like_email(value):
        return "email"
    return "text"


def _is_json(value: bytes) -> bool:
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False  # "[Reminder] call Bob" is text
    return True


def _utf8(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Undecodable(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from exc


def _from_json(value: bytes, settings: InputSettings) -> tuple[str | None, str]:
    try:
        obj = json.loads(_utf8(value.removeprefix(_UTF8_BOM)))
    except json.JSONDecodeError as exc:
        raise _Undecodable(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise _Undecodable("invalid JSON: nested too deeply") from exc
    if not isinstance(obj, dict):
        raise _Undecodable(f"JSON value is {type(obj).__name__}, expected an object")
    request_id = obj.get(settings.id_field)
    if request_id is not None and not isinstance(request_id, (str, int)):
        raise _Undecodable(f"field {settings.id_field!r} must be a string or an integer")
    request_id = None if request_id is None else str(request_id)
    for name in settings.text_fields:
        if name in obj:
            text = obj[name]
            if not isinstance(text, str):
                raise _Undecodable(f"field {name!r} is {type(text).__name__}, expected a string")
            return request_id, text
    if "subject" in obj or "body" in obj:
        return request_id, _mail_fields_to_text(obj)
    fields = ", ".join(repr(n) for n in (*settings.text_fields, "subject", "body"))
    raise _Undecodable(f"JSON object has none of the fields {fields}")


def _mail_fields_to_text(obj: dict[str, Any]) -> str:
    """JSON mail (`subject`, `body`, `from`; `to` is accepted and not read): laid out as the
    email reader lays out raw mail."""
    parts = {name: obj.get(name) for name in ("subject", "body", "from", "to")}
    for name, part in parts.items():
        if part is not None and not isinstance(part, str):
            raise _Undecodable(f"field {name!r} is {type(part).__name__}, expected a string")
    if not any((parts[name] or "").strip() for name in ("subject", "body", "from")):
        return ""  # nothing to classify (the layout alone would read "Subject:")
    return mail_fields_to_text(parts["subject"] or "", parts["body"] or "", parts["from"] or "")


def encode_result(
    request: Request,
    label: str,
    score: float,
    scores: dict[str, float],
    model_id: str,
    now_ms: int,
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The output record's value and headers for a classified request."""
    record = request.record
    headers = [
        *record.headers,
        ("streamclf-label", label.encode()),
        ("streamclf-model", model_id.encode()),
    ]
    # float(): a float subclass (numpy's) must print as a plain number, as json.dumps does.
    rounded = [float(round(value, 6)) for value in scores.values()]
    score = float(round(score, 6))
    text = _json_str
    total = score + sum(rounded)
    # A NaN or an infinity among the scores makes the sum non-finite. (So does a sum that
    # overflows; json.dumps below then writes the same bytes as the fast path would.)
    if total - total == 0.0:
        # The bytes json.dumps writes for the dict below, built directly (repr is json's float
        # spelling): json.dumps was the largest single cost of publishing a result.
        pairs = ", ".join([f"{text(n)}: {v!r}" for n, v in zip(scores, rounded, strict=True)])
        value = (
            f'{{"id": {text(request.id)}, "label": {text(label)}, "score": {score!r}, '
            f'"scores": {{{pairs}}}, "model": {text(model_id)}, '
            f'"source": {{"topic": {text(record.topic)}, "partition": {record.partition:d}, '
            f'"offset": {record.offset:d}, "timestamp_ms": {record.timestamp_ms:d}}}, '
            f'"classified_at_ms": {now_ms:d}}}'
        )
    else:  # NaN or infinity: json.dumps' own spelling of them
        value = json.dumps({
            "id": request.id,
            "label": label,
            "score": score,
            "scores": dict(zip(scores, rounded, strict=True)),
            "model": model_id,
            "source": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp_ms,
            },
            "classified_at_ms": now_ms,
        }, ensure_ascii=False)
    # A lone surrogate (valid in JSON input: "\\ud800") cannot be UTF-8: it goes out as the
    # same JSON escape.
    return value.encode("utf-8", "backslashreplace"), headers


_json_str = json.encoder.encode_basestring  # type: ignore[attr-defined]  # what json.dumps uses


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    """The original headers plus the reason, a readable detail and where the record came from."""
    detail = rejection.detail[:_DETAIL_LIMIT]
    return [
        *rejection.record.headers,
        ("streamclf-error", rejection.reason.encode()),
        ("streamclf-error-detail", detail.encode("utf-8", "replace")),
        ("streamclf-source", rejection.record.ref.encode()),
    ]
