"""email_to_text and looks_like_email on hand-written MIME samples and arbitrary bytes."""

from __future__ import annotations

import base64
import email.errors
import email.message
import email.parser
import email.policy
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from model.email import EmailError, email_to_text, html_to_text, looks_like_email, parse_message
from tests.conftest import SHARED_DATA

HEAD = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nMIME-Version: 1.0\r\n"


def test_plain_message_keeps_subject_and_body() -> None:
    raw = HEAD + b"Subject: Lunch\r\n\r\nSee you at noon.\r\n"
    text = email_to_text(raw)
    assert text.startswith("Subject: Lunch\n")
    assert "See you at noon." in text


@pytest.mark.parametrize("sender, line", [
    (b"Member@xent.com, Servicer@xent.com", "From: xent.com"),
    (b"zvfjenphuq@[1086695621], [ufa]@netnoteinc.com", "From: [1086695621]"),
    (b'"Deals" <deals@shop.example>', "From: Deals shop.example"),
])
def test_sender_line_is_the_same_on_every_python(sender: bytes, line: str) -> None:
    # Python 3.13 and 2024+ security releases parse addresses strictly by default: a From with
    # several addresses would lose its sender line, unlike the text the model was trained on.
    raw = b"From: " + sender + b"\r\nSubject: x\r\n\r\nbody\r\n"
    assert email_to_text(raw).splitlines()[1] == line


def test_other_headers_are_summarised_on_one_bounded_line() -> None:
    hops = b"".join(b"Received: from relay%d.example.net by mx.example.org\r\n" % i
                    for i in range(10))
    raw = (HEAD + hops + b"X-Mailer: Bulk Sender Pro 9\r\nList-Id: <news.example.com>\r\n"
           b"X-Long: " + b"y" * 5000 + b"\r\nSubject: Deal\r\n\r\nBuy now.\r\n")
    lines = email_to_text(raw).split("\n")
    assert lines[0] == "Subject: Deal" and lines[1] == "From: Alice example.org"
    headers = lines[2]
    assert headers.startswith("Headers: to bob@example.net mimeversion 1.0 received from relay0")
    assert headers.count("received ") == 3  # only the first three hops
    assert "xmailer Bulk Sender Pro 9" in headers and "listid <news.example.com>" in headers
    assert "subject" not in headers and "Alice" not in headers  # they have their own lines
    assert len(headers) < 700  # "y" * 5000 is cut
    assert lines[3].strip() == "Buy now."


def test_alternative_prefers_plain_text() -> None:
    raw = HEAD + (
        b"Subject: alt\r\n"
        b'Content-Type: multipart/alternative; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\nplain version\r\n"
        b"--XX\r\nContent-Type: text/html\r\n\r\n<p>html version</p>\r\n"
        b"--XX--\r\n"
    )
    text = email_to_text(raw)
    assert "plain version" in text
    assert "html version" not in text


def test_alternative_with_empty_plain_falls_back_to_html() -> None:
    raw = HEAD + (
        b'Content-Type: multipart/alternative; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\n\r\n   \r\n"
        b"--XX\r\nContent-Type: text/html\r\n\r\n<p>only html</p>\r\n"
        b"--XX--\r\n"
    )
    assert "only html" in email_to_text(raw)


def test_html_only_drops_script_and_style() -> None:
    raw = HEAD + (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><head><title>t</title><style>.x{color:red}</style></head><body>"
        b"<script>alert('evil')</script><p>Buy&nbsp;now &amp; save</p>"
        b'<a href="http://spam.example.com/x">click</a></body></html>'
    )
    text = email_to_text(raw)
    assert "Buy\xa0now & save" in text
    assert "click" in text
    assert "http://spam.example.com/x" in text  # link targets become URL tokens later
    assert "alert" not in text and "color" not in text


def test_encoded_word_subject_is_decoded() -> None:
    raw = (
        HEAD + b"Subject: =?utf-8?B?" + base64.b64encode("Grüße aus Köln".encode()) + b"?=\r\n\r\nx"
    )
    assert email_to_text(raw).startswith("Subject: Grüße aus Köln")
    raw = HEAD + b"Subject: =?iso-8859-1?Q?caf=E9?= ok\r\n\r\nx"
    assert email_to_text(raw).startswith("Subject: café ok")


def test_quoted_printable_body() -> None:
    raw = HEAD + (
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Ol=E9 soft=\r\nbreak =3D equals\r\n"
    )
    text = email_to_text(raw)
    assert "Olé softbreak = equals" in text


def test_base64_body() -> None:
    body = base64.b64encode("Zahlung über 100 €".encode())
    raw = HEAD + (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n"
    )
    assert "Zahlung über 100 €" in email_to_text(raw)


def test_unknown_charset_falls_back() -> None:
    raw = HEAD + b"Content-Type: text/plain; charset=x-unknown\r\n\r\nhello w\xc3\xb6rld\r\n"
    assert "hello wörld" in email_to_text(raw)


def test_lying_charset_falls_back() -> None:
    # Declares ASCII but carries UTF-8; declares UTF-8 but carries cp1252.
    raw = HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\nna\xc3\xafve\r\n"
    assert "naïve" in email_to_text(raw)
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\n\r\nprice \x80 5 caf\xe9\r\n"
    assert "price € 5 café" in email_to_text(raw)


def test_utf8_cut_mid_character_keeps_charset() -> None:
    raw = HEAD + b"\r\n" + "Grüße ".encode() * 10
    text = email_to_text(raw, max_bytes=len(HEAD) + 2 + 2)  # cuts inside "ü"
    assert "Ã" not in text  # not decoded as cp1252 mojibake
    assert "Grüße" in email_to_text(raw, max_bytes=len(HEAD) + 2 + 9)


def test_attachments_become_name_and_type() -> None:
    payload = base64.b64encode(b"%PDF-1.4 binary")
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b'--B\r\nContent-Type: application/pdf; name="invoice.pdf"\r\n'
        b'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"\r\n--B--\r\n"
    )
    text = email_to_text(raw)
    assert "see attached" in text
    assert "[attachment invoice.pdf application/pdf]" in text
    assert "PDF-1.4" not in text


def _nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\ndeepest text\r\n"
    for i in range(depth):
        b = b"b%d" % i
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + b
            + b'"\r\n\r\n--'
            + b
            + b"\r\n"
            + body
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return HEAD + b"Subject: nest\r\n" + body


@pytest.mark.parametrize("depth", [300, 2000])
def test_deep_nesting_is_bounded(depth: int) -> None:
    text = email_to_text(_nested(depth))
    assert text.startswith("Subject: nest")
    assert "Content-Type" not in text and "--b1" not in text


def test_shallow_nesting_is_read() -> None:
    assert "deepest text" in email_to_text(_nested(5))
    assert "deepest text" not in email_to_text(_nested(30))  # below max_depth: not visited


def test_many_parts_are_capped() -> None:
    parts = b"".join(b"--B\r\nContent-Type: text/plain\r\n\r\npart%d\r\n" % i for i in range(500))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n' + parts + b"--B--\r\n"
    text = email_to_text(raw, max_parts=50)
    assert "part0" in text
    assert "part499" not in text


def test_big_base64_attachment_is_bounded() -> None:
    blob = base64.encodebytes(bytes(range(256)) * (5 * 1024 * 1024 // 256))  # ~6.8 MB encoded
    raw = HEAD + (
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--B\r\nContent-Type: application/octet-stream; name="big.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"\r\n--B--\r\n"
    )
    text = email_to_text(raw)
    assert "[attachment big.bin application/octet-stream]" in text
    assert len(text) < 1000


def test_huge_text_body_is_bounded() -> None:
    raw = HEAD + b"Content-Type: text/html\r\n\r\n" + b"<p>word </p>" * 200_000  # 2.4 MB
    text = email_to_text(raw)
    assert len(text) <= 400_000


def test_hostile_headers_are_read_not_raised() -> None:
    """An encoded word the stdlib refuses (base64 of a wrong length) stays as written, and a
    From with thousands of nested comments loses its sender line, not the message: either one
    used to raise, so a spammer could turn any mail into a dead letter instead of a verdict."""
    raw = (b"Subject: =?utf-8?b?a?= cheap pills\nX-Trick: =?utf-8?b?a?=\n"
           b"From: " + b"(" * 1999 + b"\n\nbuy now")
    text = email_to_text(raw)
    assert text.startswith("Subject: =?utf-8?b?a?= cheap pills\n")
    assert "xtrick =?utf-8?b?a?=" in text and "From:" not in text
    assert text.endswith("buy now")


def test_a_declared_multipart_without_its_boundary_is_read_as_text() -> None:
    raw = HEAD + (b'Subject: s\r\nContent-Type: multipart/alternative; boundary="ZZZ"\r\n\r\n'
                  b"--OTHER\r\nContent-Type: text/plain\r\n\r\nhidden offer\r\n--OTHER--\r\n")
    assert "hidden offer" in email_to_text(raw)
    no_boundary = HEAD + b"Content-Type: multipart/mixed\r\n\r\nplain words here\r\n"
    assert "plain words here" in email_to_text(no_boundary)


def test_codecs_that_are_not_charsets_are_not_used() -> None:
    """punycode decodes in quadratic time (400 KB: 20 s); a part declaring it reads as UTF-8."""
    from model.email import _decode_bytes

    assert _decode_bytes(b"abc-", "punycode") == "abc-"  # punycode would give "abc"
    assert _decode_bytes(b"caf\xc3\xa9", "utf-8") == "café"
    raw = HEAD + b"Content-Type: text/plain; charset=punycode\r\n\r\n-" + b"9" * 400_000
    assert email_to_text(raw).endswith("9" * 100)


def test_unclosed_tags_read_as_text_in_linear_time() -> None:
    """html.parser rescans to the end of the input from every "<" whose tag never closes:
    "<a b" * 20,000 (80 KB) took 33 s. Such a "<" is now text; real tags are untouched."""
    from model.email import _escape_unclosed_tags

    html = '<p>Hi <a href="http://x.example/">there</a><!-- long comment ' + "x" * 9000 + " -->"
    assert _escape_unclosed_tags(html) == html
    assert _escape_unclosed_tags("a <b c") == "a &lt;b c"
    assert _escape_unclosed_tags("<!-- never closed <p>x</p>") == "&lt;!-- never closed <p>x</p>"
    assert html_to_text("<a b" * 20_000) == ("<a b" * 20_000).strip()


def test_marked_sections_that_cannot_close_or_that_the_parser_does_not_know_are_text() -> None:
    """html.parser searched to the end of the input from each marked section without a close
    ("<![if>" * 50,000: 3.3 s) and stopped reading at an unknown keyword, hiding the rest."""
    from model.email import _escape_unclosed_tags

    word = "<p><![if !supportLists]>1.<![endif]>item</p><![CDATA[x]]>"
    assert _escape_unclosed_tags(word) == word  # closed sections are left to the parser
    assert _escape_unclosed_tags("<![if>" * 3) == "&lt;![if>" * 3
    assert _escape_unclosed_tags("<![CDATA[x>]>") == "&lt;![CDATA[x>]>"  # "]>" closes no CDATA
    assert "WIN CASH NOW" in html_to_text("<p>Hello</p><![x> WIN CASH NOW <b>today</b>")
    assert html_to_text("<![if>" * 50_000).startswith("<![if><![if>")


@pytest.mark.parametrize("content_type", [
    b"multipart/mixed; boundary=b; x*=a; x*0=b",  # TypeError in the stdlib
    b"multipart/mixed; boundary*=undefined''b",  # LookupError
    b"multipart/mixed; boundary*=idna''b",  # UnicodeError
    b"multipart/mixed; boundary*=utf-8\x00''b",  # ValueError
])
def test_a_boundary_the_stdlib_cannot_read_leaves_the_body_as_text(content_type: bytes) -> None:
    raw = b"Subject: hi\nContent-Type: " + content_type + b"\n\n--b\n\nhello there\n--b--\n"
    assert "hello there" in email_to_text(raw)


def test_attachment_names_in_charsets_python_cannot_decode_are_unnamed() -> None:
    raw = (b"From: a@example.org\nSubject: invoice\nContent-Type: application/pdf; "
           b"name*=undefined''invoice.pdf\nContent-Disposition: attachment; filename=\"\"\n\n"
           b"JVBERi0x\n")
    assert email_to_text(raw).endswith("[attachment unnamed application/pdf]")


def test_parameter_headers_are_cut_before_the_stdlib_splits_them() -> None:
    """Splitting parameters is quadratic in the stdlib (160 KB of ";": 15 s), and an RFC 2231
    value in punycode decodes in quadratic time (100 KB: 2.4 s)."""
    from model.email import MAX_PARAM_HEADER_CHARS, parse_message

    semicolons = b'Subject: s\nContent-Type: text/plain; a="' + b";" * 160_000 + b"\n\nbody words"
    assert len(parse_message(semicolons).get("content-type")) == MAX_PARAM_HEADER_CHARS
    multipart = semicolons.replace(b"text/plain", b"multipart/mixed; boundary=b")  # feed parser
    assert len(parse_message(multipart).get("content-type")) == MAX_PARAM_HEADER_CHARS
    assert email_to_text(semicolons).endswith("body words")
    punycode = (b"Subject: s\nContent-Type: application/pdf; name*=punycode''" + b"9" * 100_000
                + b"\n\nx\n")
    assert "[attachment" in email_to_text(punycode)


def test_the_feed_parser_reads_at_most_so_many_nested_parts() -> None:
    """Each line is tested against every open boundary, and each nested message is a
    recursion: 1 MB nested 300 deep took 9 s; nested 1,200 deep with no blank line anywhere,
    the fallback parse recursed too deep and the message became a dead letter."""
    from model.email import MAX_NESTING_PARTS, _bounded_for_parser

    declarations = b"".join(b"Content-TYPE: Multipart/mixed; boundary=b%d\n--b%d\n" % (i, i)
                            for i in range(MAX_NESTING_PARTS + 4))
    kept = _bounded_for_parser(b"Subject: s\n" + declarations)
    assert kept.count(b"Content-TYPE:") == MAX_NESTING_PARTS and kept.endswith(b"\n")
    nest = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n--b%d\n" % (i, i)
                    for i in range(1200))
    raw = b"".join(b"X-H%d: v\n" % i for i in range(20)) + b"Subject: s\n" + nest + b"hello\n"
    assert email_to_text(raw).startswith("Subject: s")


def test_a_str_with_a_lone_surrogate_is_read() -> None:
    assert email_to_text("Subject: hi \ud800\n\nbody").startswith("Subject: hi ?")


def test_max_bytes_truncates_input() -> None:
    raw = HEAD + b"\r\n" + b"a" * 1000 + b" tailmarker"
    assert "tailmarker" not in email_to_text(raw, max_bytes=500)


def test_non_bytes_input_raises_email_error() -> None:
    with pytest.raises(EmailError):
        email_to_text(12345)  # type: ignore[arg-type]
    assert issubclass(EmailError, ValueError)


def test_html_to_text_never_raises_on_garbage() -> None:
    assert html_to_text("<<<>>><a href=<p>x</b></script>") is not None


@pytest.mark.parametrize(
    "data",
    [
        b"From alice@example.org Mon Jan  1 00:00:00 2024\nSubject: x\n\nbody",
        b"Received: from x by y\r\n\r\nbody",
        b"Subject: hi\n\nbody",
        b"X-Foo: 1\nX-Bar: 2\n\nbody",
        b"Return-Path: <a@b>\nDelivered-To: c@d\n",
    ],
)
def test_looks_like_email_true(data: bytes) -> None:
    assert looks_like_email(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        b'{"id": 1, "text": "Subject: no"}',
        b'{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n',
        b"WINNER!! claim your prize: call now",
        b"Note: this is just text\nwith a colon line",
        b"From Monday the office will be closed.\nPlease work from home",  # not an mbox line
        b"From: HSBC security team. Your account is suspended, verify at http://x.example",
        b"FREE: Win a prize\nNote: reply STOP",
        # Shaped like headers, but text: its words would be cut or lost as headers.
        b"From tomorrow the price goes up\nCall: 0800 123 4567 to lock in your rate",
        b"From: HSBC security team. Your account is suspended, verify at http://x.example\n"
        b"Ref: 12345",
        b"http://bit.ly/claim-prize\nhttps://win.example/now\nhttp://x.example/free",
        b"10:30 standup\n11:00 review\n12:00 call",
        b"Item: milk 1.20\nItem: bread 2.10\nTotal: 3.30\n\nThanks for shopping",
        b"To: all staff. The office is closed today, check email for updates\n\nThanks",
        b"\x00\x01\x02binary",
    ],
)
def test_looks_like_email_false(data: bytes) -> None:
    assert not looks_like_email(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_email_to_text_never_raises_on_bytes(data: bytes) -> None:
    assert isinstance(email_to_text(data), str)
    assert isinstance(looks_like_email(data), bool)


_header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(
    subject=_header_text,
    charset=st.sampled_from(["utf-8", "x-unknown", "us-ascii", "zlib", "utf-16", "", "bogus\"'"]),
    cte=st.sampled_from(["7bit", "base64", "quoted-printable", "x-weird"]),
    body=st.binary(max_size=500),
    ctype=st.sampled_from(["text/plain", "text/html", "multipart/alternative", "application/x"]),
)
def test_email_to_text_never_raises_on_mime_shapes(
    subject: str, charset: str, cte: str, body: bytes, ctype: str
) -> None:
    raw = (
        b"Subject: " + subject.encode("utf-8", "replace").replace(b"\n", b" ") + b"\r\n"
        b"Content-Type: " + ctype.encode() + b"; charset=" + charset.encode() + b"; boundary=z\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body
    )
    assert isinstance(email_to_text(raw), str)


# --- parse_message: the single-part shortcut must parse exactly as the stdlib parser -------------


def _stdlib_parse(raw: bytes) -> email.message.Message:
    """The feed parser's reading, with the reader's message class: it keeps at most 2,000
    characters of Content-Type and Content-Disposition (one spam of the corpus has 14,285)."""
    from model.email import _Message

    return email.parser.BytesParser(_class=_Message, policy=email.policy.compat32).parsebytes(raw)


def _assert_same_parse(raw: bytes) -> None:
    ours, theirs = parse_message(raw), _stdlib_parse(raw)
    assert ours._headers == theirs._headers  # noqa: SLF001 - raw (name, value) pairs, in order
    assert ours.get_unixfrom() == theirs.get_unixfrom()
    assert ours.is_multipart() == theirs.is_multipart()
    if not theirs.is_multipart():
        assert ours.get_payload() == theirs.get_payload()
    assert _serialized(ours) == _serialized(theirs)


def _serialized(message: email.message.Message) -> bytes | str:
    """The message written out again, or the name of the error the stdlib's generator raises
    for it (it refuses a header value that would read as another header once folded)."""
    try:
        return message.as_bytes()
    except email.errors.HeaderParseError as exc:
        return type(exc).__name__


_name = st.one_of(
    st.sampled_from(["Subject", "From", "To", "Content-Type", "X-Mailer", "Received"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=127), max_size=12),
)
_value = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
_eol = st.sampled_from([b"\n", b"\r\n", b"\r", b"\x0c\n", b"\r\r\n"])
_continuation = st.tuples(st.sampled_from([b" ", b"\t", b"x"]), _value)
_header = st.tuples(_name, _value, st.lists(_continuation, max_size=2), _eol)
_ctypes = [b"", b"text/plain", b"multipart/mixed; boundary=b", b"message/rfc822", b"TEXT/HTML"]


@settings(max_examples=400, deadline=None)
# Found by a run: "\x0b\x00:" folds into a value the stdlib's generator refuses to write.
@example(unixfrom=b"", headers=[("Subject", b"\x0b\x00:", [], b"\n")], ctype=b"",
         separator=b"\n", body=b"")
@given(
    unixfrom=st.sampled_from([b"", b"From someone Mon Jan 1 00:00:00 2024\n", b"From x\r\n"]),
    headers=st.lists(_header, max_size=6),
    ctype=st.sampled_from(_ctypes),
    separator=st.sampled_from([b"\n", b"\r\n", b"", b"\r", b"From late\n"]),
    body=st.binary(max_size=120),
)
def test_parse_message_parses_as_the_stdlib_does(
    unixfrom: bytes, headers: list, ctype: bytes, separator: bytes, body: bytes
) -> None:
    lines = [unixfrom]
    for name, value, continuations, eol in headers:
        lines.append(name.encode("latin-1") + b": " + value + eol)
        lines.extend(lead + cont + eol for lead, cont in continuations)
    if ctype:
        lines.append(b"Content-Type: " + ctype + b"\n")
    raw = b"".join(lines) + separator + b"--b\nContent-Type: text/plain\n\nhi\n--b--\n" + body
    _assert_same_parse(raw)


@pytest.mark.skipif(not (SHARED_DATA / "spamassassin.jsonl.gz").exists(), reason="no shared corpus")
def test_parse_message_parses_every_corpus_email_as_the_stdlib_does() -> None:
    from model.data import iter_examples

    emails = [ex.raw for ex in iter_examples(SHARED_DATA / "spamassassin.jsonl.gz") if ex.raw]
    assert len(emails) > 6000
    for raw in emails:
        _assert_same_parse(raw)


def test_a_long_folded_first_header_does_not_hide_an_email(tmp_path: Path) -> None:
    """A signed message starting with a DKIM-Signature folded over 25 lines read as text: only
    the first 20 physical lines were looked at, continuation lines included. In a maildir (no
    .eml suffix) such a message was left out of train and eval without a word."""
    dkim = b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\n" + b"".join(
        b"        b=" + b"A" * 60 + b"\n" for _ in range(25))
    raw = dkim + b"From: Alice <alice@example.org>\nSubject: lunch\n\nsee you at noon\n"
    assert looks_like_email(raw)
    box = tmp_path / "ham" / "cur"
    box.mkdir(parents=True)
    (box / "1700000000.M1P1.host:2,S").write_bytes(raw)
    from model.data import iter_examples

    assert [ex.label for ex in iter_examples(tmp_path)] == ["ham"]


def test_headers_sent_as_raw_8bit_bytes_are_decoded() -> None:
    # RFC 6532 UTF-8 headers, and legacy charsets sent unencoded (common in spam): the standard
    # library gives one U+FFFD per byte.
    raw = (
        "From: José Müller <jose@example.org>\r\nSubject: Café grátis prêmio\r\n"
        "Organization: Bücher GmbH\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOlá\r\n"
    ).encode()
    text = email_to_text(raw)
    assert text.startswith("Subject: Café grátis prêmio\nFrom: José Müller example.org\n")
    assert "organization Bücher GmbH" in text
    assert "\ufffd" not in text
    # Not UTF-8: the charset the message declares for its text, else cp1252.
    latin = "Subject: Prix spécial\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nx\r\n"
    assert email_to_text(latin.encode("latin-1")).startswith("Subject: Prix spécial\n")
    assert email_to_text(b"Subject: caf\xe9 \x80 5\r\n\r\nx").startswith("Subject: café € 5\n")
    chinese = (
        "Subject: 免费赠送\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; "
        'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n'
        "你好\r\n--b--\r\n"
    )
    assert email_to_text(chinese.encode("gb2312")).startswith("Subject: 免费赠送\n")


def test_the_declared_charset_is_looked_up_once_per_message(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each 8-bit header looked up the message's charset again: up to ~150 walks of the parts'
    parameter headers (quadratic in the standard library) for one hostile message."""
    calls = 0
    walk = email.message.Message.walk

    def counted(self):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return walk(self)

    monkeypatch.setattr(email.message.Message, "walk", counted)
    raw = (b"Subject: caf\xe9\r\nFrom: Jos\xe9 <j@example.org>\r\n"
           + b"".join(b"X-%d: \xe9\r\n" % i for i in range(50))
           + b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nx\r\n")
    text = email_to_text(raw)
    assert text.startswith("Subject: café\nFrom: José example.org\n")
    assert calls == 1


def test_a_long_utf8_header_cut_mid_character_stays_utf8() -> None:
    # The 8-bit header is cut to 4 bytes per character kept before decoding; a cut inside a
    # UTF-8 sequence sent the whole header to the declared charset (mojibake).
    subject = "a" + "é" * 5_000
    raw = (f"Subject: {subject}\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nx\r\n"
           .encode())
    assert email_to_text(raw).startswith("Subject: aééé")
