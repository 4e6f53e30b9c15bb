import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker import codec
from worker.codec import InputSettings, Rejection, Request, SourceRecord

AUTO = InputSettings()


def rec(value, key=b"k", headers=(("trace", b"1"),)):
    return SourceRecord("in", 2, 42, 1_700_000_000_000, key, value, tuple(headers))


def decode(value, **settings):
    return codec.decode(rec(value), InputSettings(**settings) if settings else AUTO)


def test_json_with_id_and_text():
    out = decode(b'{"id": "m1", "text": "hello there"}')
    assert isinstance(out, Request)
    assert (out.id, out.text) == ("m1", "hello there")


def test_json_without_id_falls_back_to_the_record_position():
    out = decode(b'{"text": "hello"}')
    assert out.id == "in:2:42"


def test_json_subject_and_body_are_laid_out_as_the_mail_reader_does():
    """Subject and sender lines as for raw mail, and no Headers: line of made-up MIME headers
    (which changed with the body's length: 7bit or quoted-printable)."""
    out = decode(b'{"subject": "Cheap  meds", "body": "buy now \\ud800", '
                 b'"from": "Pharma <x@spam.example>", "to": "me@example.org"}')
    assert isinstance(out, Request)
    assert out.text == "Subject: Cheap meds\nFrom: Pharma spam.example\nbuy now \ud800"
    assert decode(b'{"body": "' + b"long body " * 200 + b'"}').text.startswith("Subject:\nlong")


def test_json_after_a_byte_order_mark_is_json():
    out = decode(b'\xef\xbb\xbf{"id": "a1", "text": "hello"}')
    assert isinstance(out, Request) and (out.id, out.text) == ("a1", "hello")


@pytest.mark.parametrize("value", [
    b"From Monday the office will be closed.\nPlease work from home",
    b"From: HSBC security team. Your account is suspended, verify at http://x.example",
])
def test_texts_that_start_like_a_header_keep_every_word(value):
    out = decode(value)
    assert isinstance(out, Request) and out.text == value.decode()


def test_raw_email_is_detected_and_read():
    raw = (b"From: a@example.org\r\nSubject: =?utf-8?q?caf=C3=A9_meeting?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nSee you at ten.\r\n")
    out = decode(raw)
    assert isinstance(out, Request)
    assert "café" in out.text and "See you at ten." in out.text


def test_plain_text():
    out = decode("Won a prize? Txt CLAIM to 81010 🎉".encode())
    assert isinstance(out, Request) and "🎉" in out.text


@pytest.mark.parametrize("value", [b"{Free} entry in 2 a wkly comp. Text FA to 87121",
                                   b"{name}, your code is 123456", b"  { braces } first"])
def test_text_that_starts_with_a_brace_is_text_not_broken_json(value):
    out = decode(value)
    assert isinstance(out, Request) and out.text == value.decode()


def test_configured_text_field():
    out = decode(b'{"msg": "hi"}', text_fields=("msg",))
    assert out.text == "hi"


@pytest.mark.parametrize(
    "value, reason, detail",
    [
        (None, codec.EMPTY, "tombstone"),
        (b"", codec.EMPTY, "empty"),
        (b"  \n\t", codec.EMPTY, "blank"),
        (b'{"id": "x", "text": "cut', codec.DECODE, "invalid JSON"),
        (b"[1, 2, 3]", codec.DECODE, None),
        (b'{"text": 12}', codec.DECODE, "expected a string"),
        (b'{"text": "   "}', codec.EMPTY, None),
        (b'{"subject": "", "body": "  ", "to": "a@b.example"}', codec.EMPTY, None),
        (b'{"other": "x"}', codec.DECODE, "none of the fields"),
        (b'{"id": {"a": 1}, "text": "x"}', codec.DECODE, "'id'"),
        (b"\xff\xfe\xc3\x28 bad", codec.DECODE, "invalid UTF-8"),
        (b'{"a": ' * 100_000, codec.DECODE, None),  # nested beyond the parser's stack
    ],
)
def test_unusable_values_are_rejected_with_a_reason(value, reason, detail):
    out = decode(value)
    assert isinstance(out, Rejection)
    assert out.reason == reason
    if detail:
        assert detail in out.detail


def test_json_array_is_rejected_when_format_is_forced():
    out = decode(b"[1]", format="json")
    assert isinstance(out, Rejection) and "list" in out.detail


def test_oversized_values_are_rejected_before_parsing():
    out = decode(b"x" * 101, max_bytes=100)
    assert isinstance(out, Rejection) and out.reason == codec.TOO_LARGE


def test_result_keeps_headers_and_follows_the_contract():
    request = Request(rec(b"x"), "m1", "x")
    value, headers = codec.encode_result(
        request, "spam", 0.9, {"ham": 0.1, "spam": 0.9}, "spam-lstm@1", 123
    )
    body = json.loads(value)
    assert body == {
        "id": "m1", "label": "spam", "score": 0.9, "scores": {"ham": 0.1, "spam": 0.9},
        "model": "spam-lstm@1",
        "source": {"topic": "in", "partition": 2, "offset": 42, "timestamp_ms": 1_700_000_000_000},
        "classified_at_ms": 123,
    }
    assert headers == [("trace", b"1"), ("streamclf-label", b"spam"),
                       ("streamclf-model", b"spam-lstm@1")]


@settings(max_examples=300, deadline=None)
@given(
    request_id=st.text(), label=st.text(), model_id=st.text(), topic=st.text(),
    partition=st.integers(0, 10_000), offset=st.integers(-1, 2**63 - 1),
    timestamp=st.integers(-1, 2**50),
    scores=st.dictionaries(st.text(), st.floats() | st.integers(-5, 5), max_size=4),
    score=st.floats(),
)
@example("m", "spam", "m@1", "in", 0, 0, 0, {"ham": float("nan")}, float("inf"))
def test_result_bytes_are_what_json_dumps_writes(request_id, label, model_id, topic, partition,
                                                 offset, timestamp, scores, score):
    record = SourceRecord(topic, partition, offset, timestamp, None, b"x", ())
    value, _ = codec.encode_result(Request(record, request_id, "x"), label, score, scores,
                                   model_id, 7)
    expected = {
        "id": request_id, "label": label, "score": float(round(score, 6)),
        "scores": {k: float(round(v, 6)) for k, v in scores.items()}, "model": model_id,
        "source": {"topic": topic, "partition": partition, "offset": offset,
                   "timestamp_ms": timestamp},
        "classified_at_ms": 7,
    }
    assert value == json.dumps(expected, ensure_ascii=False).encode()


def test_dead_letter_headers():
    headers = codec.dead_letter_headers(Rejection(rec(b"x"), "decode", "bad " * 500))
    names = [name for name, _ in headers]
    assert names == ["trace", "streamclf-error", "streamclf-error-detail", "streamclf-source"]
    values = dict(headers)
    assert values["streamclf-error"] == b"decode"
    assert values["streamclf-source"] == b"in:2:42"
    assert len(values["streamclf-error-detail"]) <= 500


# -- properties: decode never raises, whatever the bytes ------------------------------------------


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=2000), fmt=st.sampled_from(["auto", "json", "email", "text"]))
def test_decode_never_raises_on_arbitrary_bytes(value, fmt):
    out = codec.decode(rec(value), InputSettings(format=fmt))
    if isinstance(out, Rejection):
        assert out.reason in codec.REASONS and out.detail
    else:
        assert out.text.strip() and out.id


@settings(max_examples=200, deadline=None)
@given(obj=st.dictionaries(st.sampled_from(["id", "text", "subject", "body", "from", "x"]),
                           _JSONISH, max_size=5))
def test_decode_json_objects_of_any_shape(obj):
    out = decode(json.dumps(obj).encode())
    if isinstance(out, Request):
        assert isinstance(out.text, str) and out.text.strip()
    else:
        assert out.reason in (codec.DECODE, codec.EMPTY)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=500))
def test_any_unicode_text_is_classified_or_empty(text):
    out = decode(text.encode("utf-8"))
    if not text.strip():
        assert isinstance(out, Rejection) and out.reason == codec.EMPTY
    else:
        assert isinstance(out, (Request, Rejection))
