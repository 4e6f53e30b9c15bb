"""RFC 822 / MIME email → the plain text the model reads.

Standard library only: the worker's codec imports this module without torch.

The text is the decoded subject on a first line ``Subject: ...`` (``Subject:`` when there is
none), a ``From:`` line (display name and domain), a ``Headers:`` line (a bounded summary of the
other headers, see ``HEADER_BLOCK``), then the body: text/plain where a multipart/alternative
offers it, else HTML reduced to its visible text (plus link targets, which the tokenizer turns
into URL tokens). Attachments become ``[attachment name type]`` lines; their payloads are never
decoded. Parsing uses the
``compat32`` policy, which does not interpret header values, so malformed headers cannot raise;
we decode encoded words ourselves. Single-part messages skip the feed parser's line-by-line walk
of the body (``parse_message``), with the same result.

Every step is bounded (input bytes, nesting depth, number of parts, decoded text per part and in
total) so hostile input costs bounded time and memory.
"""

from __future__ import annotations

import binascii
import codecs
import email.errors
import email.header
import email.parser
import email.policy
import email.utils
import inspect
import itertools
import re
from email.message import Message
from html.parser import HTMLParser

__all__ = ["EmailError", "email_to_text", "looks_like_email", "mail_fields_to_text"]

# Decoded text kept per part and in total: the tokenizer reads at most a few thousand tokens.
MAX_PART_CHARS = 200_000
MAX_TOTAL_CHARS = 400_000
# HTML is parsed in Python, so its input is capped before parsing.
MAX_HTML_CHARS = 300_000
MAX_HEADER_CHARS = 2_000
# The text carries a "From: <display name> <domain>" line after the subject: on validation it
# raised a bag-of-words ranking of SpamAssassin mail (AUC 0.9747 → 0.9785) and left SMS alone.
SENDER_LINE = True
# The subject line is written even when the message has no subject ("Subject:"), so every email
# text starts with it: the predictor tells email from plain text by that first token (per-kind
# thresholds), also for mail whose headers were stripped.
SUBJECT_LINE_ALWAYS = True
# A "Headers:" line summarising the other headers in their order: each as its name squeezed into
# one word ("xmailer", "messageid", "received") plus the start of its value, at most
# HEADER_VALUE_CHARS per header, three Received hops, HEADER_BLOCK_CHARS in all (about 100
# tokens). On validation it lifted a bag-of-words ranking of SpamAssassin mail from spam recall
# 0.73 to 0.98 at two false positives (ROC-AUC 0.9963 → 0.9985): mailer names, relay hosts,
# list and reply headers say a lot about where mail comes from. The price is that the model
# learns the habits of its training mail's sources (see docs/model-card.md, "Robustness").
HEADER_BLOCK = True
HEADER_VALUE_CHARS = 80
HEADER_BLOCK_CHARS = 640
HEADER_MAX_RECEIVED = 3
_HEADERS_IN_OWN_LINE = frozenset({"subject", "from"})

_KNOWN_HEADERS = (
    b"received",
    b"from",
    b"subject",
    b"return-path",
    b"mime-version",
    b"message-id",
    b"delivered-to",
    b"date",
    b"to",
    b"content-type",
    b"x-",
)
# Real header names are letters, digits and hyphens starting with a letter (RFC 5322 allows
# more; nobody uses it), and a value never starts with "//": "http://..." and "10:30 ..." lines
# are text.
_HEADER_LINE = re.compile(rb"^([A-Za-z][A-Za-z0-9_-]{0,75}):(?!//)")
# Address headers count as well-known only with an address in them: "From: your bank. Verify
# ..." is a sentence.
_ADDRESS_HEADERS = frozenset((b"from", b"to", b"return-path", b"delivered-to"))
# An mbox envelope line: "From <sender> <asctime date>", whose time of day tells it from a
# sentence such as "From tomorrow on ...".
# An mbox separator: "From " + sender + a date with a time of day.
MBOX_FROM = re.compile(rb"^From \S+ .*\d:\d\d")


class EmailError(ValueError):
    """The input cannot be read as an email at all."""


# The standard library splits these headers' parameters in quadratic time (a value of 160 KB of
# ";" took 15 s) and decodes RFC 2231 values with a charset the message names (punycode's
# decoder is quadratic too). Real values are a few hundred characters; longer ones are cut.
_PARAM_HEADERS = frozenset(("content-type", "content-disposition"))
MAX_PARAM_HEADER_CHARS = 2_000


class _Message(Message):
    """compat32's message that keeps at most ``MAX_PARAM_HEADER_CHARS`` of a parameter header,
    and takes a boundary the standard library fails to read (an RFC 2231 value in an unknown
    charset, broken continuations) as none: the part is then read as text."""

    def set_raw(self, name: str, value: str) -> None:  # the parsers store each header with it
        if len(value) > MAX_PARAM_HEADER_CHARS and name.lower() in _PARAM_HEADERS:
            value = value[:MAX_PARAM_HEADER_CHARS]
        super().set_raw(name, value)

    def get_boundary(self, failobj=None):  # type: ignore[no-untyped-def,override]
        try:
            return super().get_boundary(failobj)
        except Exception:  # noqa: BLE001 - TypeError, UnicodeError, ValueError seen
            return failobj


def looks_like_email(data: bytes) -> bool:
    """Cheap guess whether *data* starts like an RFC 822 message (or an mbox ``From `` line).

    True for an mbox ``From `` envelope line followed by a header, or for ``Name: value`` header
    lines among which a well-known one (``Subject``, ``Received``, ``X-...``, a ``From``/``To``
    with an address, ...) that end in the blank line before a body, or, with no body, number two
    or more. Text shaped like headers stays text — "From: your bank. Verify your account at
    ...", a list of "Item: price" lines, URLs or times of day one per line: read as headers,
    its words would be cut or lost.
    """
    lines = data[:4096].lstrip(b"\r\n").splitlines()
    if lines and lines[0].startswith(b"From ") and len(lines) > 1:
        # "From Monday on ..." is a sentence, not an envelope.
        return bool(MBOX_FROM.match(lines[0]) and _HEADER_LINE.match(lines[1]))
    known = False
    count = 0
    ended = False
    for line in lines:
        if not line.strip():
            ended = True
            break
        if line[:1] in (b" ", b"\t"):  # folded continuation of the previous header
            if count:
                continue  # not counted: a signature header is folded over dozens of lines
            return False
        if count == 20:  # header fields enough to judge
            break
        match = _HEADER_LINE.match(line)
        if not match:
            return False
        count += 1
        name = match.group(1).lower()
        if name in _ADDRESS_HEADERS:
            known = known or b"@" in line
        else:
            known = known or name in _KNOWN_HEADERS or name.startswith(b"x-")
    return known and (ended or count >= 2)  # with no body, one line is a sentence


def mail_fields_to_text(subject: str = "", body: str = "", sender: str = "") -> str:
    """A message given as fields (JSON ``subject``/``body``/``from``) laid out as
    ``email_to_text`` lays out an email, without the ``Headers:`` line it has none for."""
    lines = []
    subject = _WS.sub(" ", subject[:MAX_HEADER_CHARS]).strip()
    if subject or SUBJECT_LINE_ALWAYS:
        lines.append(f"Subject: {subject}".rstrip())
    sender = sender_of(_WS.sub(" ", sender[:MAX_HEADER_CHARS]).strip()) if SENDER_LINE else ""
    if sender:
        lines.append(f"From: {sender}")
    lines.append(body[:MAX_PART_CHARS])
    return "\n".join(line for line in lines if line)


def email_to_text(
    raw: bytes, *, max_bytes: int = 10_000_000, max_depth: int = 20, max_parts: int = 100
) -> str:
    """Reduce a raw RFC 822 / MIME message to model text.

    Never raises for bad charsets, broken encodings or odd structure; raises ``EmailError`` only
    when the input is not bytes-like.
    """
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that is not an escaped byte
            raw = raw.encode("utf-8", "replace")
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EmailError(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw[:max_bytes])
    try:
        msg = parse_message(raw)
    except RecursionError:
        # Nesting beyond the parser's own stack: read the headers, keep the body as plain text.
        return _flat_fallback(raw)
    lines: list[str] = []
    subject = _header(msg, "subject")
    if subject or SUBJECT_LINE_ALWAYS:
        lines.append(f"Subject: {subject}".rstrip())
    if SENDER_LINE:
        sender = _sender(msg)
        if sender:
            lines.append(f"From: {sender}")
    if HEADER_BLOCK:
        lines.append(_header_block(msg))
    lines.append(_body(msg, max_depth=max_depth, max_parts=max_parts))
    return "\n".join(line for line in lines if line)


def parse_message(raw: bytes) -> Message:
    """The message exactly as ``BytesParser(policy=compat32)`` parses *raw*, sooner.

    The stdlib's feed parser reads every line through generators: about 110 µs per email of the
    corpora, a third of reading one. A message whose body is a single part (nine in ten there)
    only needs its headers parsed; ``_parse_single_part`` does that with the feed parser's own
    rules and leaves every other shape (multipart, odd line ends, header defects) to it.
    """
    text = raw.decode("ascii", "surrogateescape")  # what BytesParser does before parsing
    try:
        msg = _parse_single_part(text)
    except Exception:  # noqa: BLE001 - whatever trips the shortcut, the full parser decides
        msg = None
    if msg is None:
        bounded = _bounded_for_parser(raw)
        if len(bounded) < len(raw):
            text = bounded.decode("ascii", "surrogateescape")
        msg = email.parser.Parser(_class=_Message, policy=email.policy.compat32).parsestr(text)
    return msg


# The feed parser tests every line against every open multipart boundary and recurses once per
# nested message: 1 MB nested 300 deep took 9 s, 10 MB nested 900 deep 240 s. Mail of the
# corpora declares at most 4 multipart or message parts and weighs at most 300 KB; beyond these
# limits a message is not read (the single-part shortcut above reads a plain message whole).
MAX_PARSE_CHARS = 1_000_000
MAX_NESTING_PARTS = 16
_NESTING_TYPE = re.compile(rb"content-type[ \t]*:\s*\"?\s*(?:multipart|message)/")


def _bounded_for_parser(raw: bytes) -> bytes:
    """*raw* cut to ``MAX_PARSE_CHARS``, and before the line that declares its
    ``MAX_NESTING_PARTS + 1``-th multipart or message part."""
    raw = raw[:MAX_PARSE_CHARS]
    # Searched in a lower-cased copy: a case-insensitive pattern took 76 us per 12 KB email.
    for count, match in enumerate(_NESTING_TYPE.finditer(raw.lower()), 1):
        if count > MAX_NESTING_PARTS:
            return raw[: raw.rfind(b"\n", 0, match.start()) + 1]
    return raw


# One header field as the feed parser reads it: "Name:" (printable ASCII but the colon, at least
# one character) and the rest of its line, then its continuation lines.
_HEADER_FIELD_RE = re.compile(r"[\041-\071\073-\176]+:[^\n]*\n(?:[ \t][^\n]*\n)*")


# Header fields the shortcut reads before it leaves a message to the feed parser: the corpora's
# mail has at most 125, and 10 MB of "a:" lines held 460 MB of header objects.
_MAX_SHORTCUT_FIELDS = 1_000


def _parse_single_part(text: str) -> Message | None:
    """Header fields read as the feed parser reads them, the rest as the payload; None when the
    message is not a plain single part or its header lines are anything but clean."""
    msg = _Message(policy=email.policy.compat32)
    pos = 0
    if text.startswith("From "):  # an mbox envelope line
        pos = text.find("\n") + 1
        if not pos:
            return None
        msg.set_unixfrom(text[: pos - 1].rstrip("\r"))
    match_field = _HEADER_FIELD_RE.match
    # The base class's set_raw, a call cheaper per header: only long fields need _Message's.
    set_raw, source_parse = super(_Message, msg).set_raw, msg.policy.header_source_parse
    fields = 0
    while field := match_field(text, pos):
        # compat32 splits the first line at its colon and keeps the continuations as they are:
        # the field in one piece gives the same (name, value).
        end = field.end()
        if end - pos > MAX_PARAM_HEADER_CHARS:
            msg.set_raw(*source_parse([field.group()]))
        else:
            set_raw(*source_parse([field.group()]))
        pos = end
        fields += 1
        if fields > _MAX_SHORTCUT_FIELDS:
            return None  # the feed parser, which gets a bounded input, reads this one
    if text.startswith("\n", pos):
        body = pos + 1
    elif text.startswith("\r\n", pos):
        body = pos + 2
    else:
        return None  # the body starts without a blank line, or a line the parser would flag
    head = text[:pos]
    if "\r" in head and "\r" in head.replace("\r\n", ""):
        return None  # a lone CR also ends a line for the feed parser
    if msg.get_content_maintype() in ("multipart", "message"):
        return None
    msg.set_payload(text[body:])
    return msg


_MIME_LINE = re.compile(r"^(?:--\S*|content-[\w-]+:.*|mime-version:.*)$", re.IGNORECASE)


def _flat_fallback(raw: bytes) -> str:
    """Subject plus the body with MIME boundary and part-header lines dropped."""
    head, _, body = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    msg = email.parser.BytesParser(_class=_Message, policy=email.policy.compat32).parsebytes(
        _bounded_for_parser(head) + b"\n\n")
    subject = _header(msg, "subject")
    text = _decode_bytes(body[:MAX_PART_CHARS], None)
    lines = [ln for ln in text.splitlines() if ln.strip() and not _MIME_LINE.match(ln.strip())]
    first = [f"Subject: {subject}".rstrip()] if subject or SUBJECT_LINE_ALWAYS else []
    return "\n".join(first + lines)


# --- headers -------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def _header(msg: Message, name: str) -> str:
    """The header's value with RFC 2047 encoded words decoded, whitespace collapsed."""
    value = msg.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):  # compat32 wraps a value holding raw 8-bit bytes
        value = next((raw for key, raw in msg.raw_items() if key.lower() == name), "")
    return _header_text(msg, value)


def _header_text(msg: Message, value: str) -> str:
    if not value.isascii():
        value = _eight_bit_header(msg, value)
    return _WS.sub(" ", decode_header_value(value[:MAX_HEADER_CHARS])).strip()


def _eight_bit_header(msg: Message, value: str) -> str:
    """A header sent as raw 8-bit bytes: UTF-8 (RFC 6532) when it decodes, else the charset
    the message declares for its text (unencoded legacy headers, common in spam), else cp1252.
    The standard library would give one U+FFFD per byte."""
    try:
        data = value[: 4 * MAX_HEADER_CHARS].encode("ascii", "surrogateescape")
    except UnicodeEncodeError:  # not escaped bytes: already text
        return value
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut = len(value) > len(data)
        if cut and exc.reason == "unexpected end of data" and exc.end == len(data):
            try:  # cut inside a character by the slice above: keep what comes before
                return data[: exc.start].decode("utf-8")
            except UnicodeDecodeError:
                pass
        return _decode_bytes(data, _declared_charset(msg), MAX_HEADER_CHARS)


_UNKNOWN_CHARSET = object()


def _declared_charset(msg: Message) -> str | None:
    """The first charset the message or one of its first parts declares, looked up once per
    message: each 8-bit header asks for it, and each lookup parses the parts' parameters."""
    found = msg.__dict__.get("_declared_charset", _UNKNOWN_CHARSET)
    if found is _UNKNOWN_CHARSET:
        found = _find_declared_charset(msg)
        msg.__dict__["_declared_charset"] = found
    return found  # type: ignore[return-value]


def _find_declared_charset(msg: Message) -> str | None:
    try:
        for part in itertools.islice(msg.walk(), 8):
            charset = part.get_param("charset")
            if isinstance(charset, str) and charset:
                return charset
    except Exception:  # noqa: BLE001 - a hostile structure only costs the guess
        return None
    return None


# Python 3.13 (and security releases of 3.10-3.12 from 2024 on) parse addresses strictly by
# default: a From with several addresses gives nothing. The lenient parse, which the bundled
# model was trained with, is the same on every release: 8 corpus spams lost their sender line
# under 3.13 before this.
_PARSEADDR_OPTIONS = (
    {"strict": False} if "strict" in inspect.signature(email.utils.parseaddr).parameters else {}
)


def _sender(msg: Message) -> str:
    return sender_of(_header(msg, "from"))


def sender_of(value: str) -> str:
    """Display name and domain of a From address (the local part is mostly noise)."""
    try:
        name, addr = email.utils.parseaddr(value, **_PARSEADDR_OPTIONS)
    except (RecursionError, ValueError, IndexError):  # e.g. thousands of nested "(" comments
        return ""
    domain = addr.rpartition("@")[2].lower() if "@" in addr else ""
    return " ".join(part for part in (name.strip('"'), domain) if part)[:200]


_NOT_LETTER = re.compile(r"[^a-z]")


def _header_block(msg: Message) -> str:
    """``Headers: name value name value ...`` for the headers not given their own line."""
    out: list[str] = []
    used = 0
    received = 0
    for name, value in msg.raw_items():  # raw: items() turns 8-bit bytes into U+FFFD
        key = name.lower()
        if key in _HEADERS_IN_OWN_LINE:
            continue
        if key == "received":
            received += 1
            if received > HEADER_MAX_RECEIVED:
                continue
        word = _NOT_LETTER.sub("", key)[:24] or "header"
        text = _header_text(msg, value)
        item = f"{word} {text[:HEADER_VALUE_CHARS]}".rstrip()
        out.append(item)
        used += len(item) + 1
        if used >= HEADER_BLOCK_CHARS:
            break
    prefix = "Headers: "
    return (prefix + " ".join(out))[: len(prefix) + HEADER_BLOCK_CHARS] if out else ""


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 encoded words, tolerating unknown charsets and broken encodings."""
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
    except (ValueError, binascii.Error, LookupError, AssertionError, UnicodeError,
            email.errors.HeaderParseError):  # e.g. "=?utf-8?b?a?=": base64 of a wrong length
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(_decode_bytes(chunk, charset))
    # decode_header drops the whitespace between an encoded word and plain text; join by pieces.
    return " ".join(piece.strip() for piece in out if piece.strip())


# --- body ----------------------------------------------------------------------------------------


def _body(msg: Message, *, max_depth: int, max_parts: int) -> str:
    """Walk the MIME tree iteratively (no recursion) within the depth and part budgets."""
    out: list[str] = []
    total = 0
    seen = 0
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack and seen < max_parts and total < MAX_TOTAL_CHARS:
        part, depth = stack.pop()
        seen += 1
        ctype = _content_type(part)
        if part.is_multipart():
            if depth >= max_depth:
                continue
            children = [p for p in _payload_list(part) if isinstance(p, Message)]
            if ctype == "multipart/alternative":
                children = _pick_alternative(children)
            # The stack pops the last item first: push in reverse to keep document order.
            for child in reversed(children[:max_parts]):
                stack.append((child, depth + 1))
            continue
        text = _leaf_text(part, ctype)
        if text:
            text = text[: MAX_TOTAL_CHARS - total]
            total += len(text)
            out.append(text)
    return "\n".join(out)


def _payload_list(part: Message) -> list:
    payload = part.get_payload()
    return payload if isinstance(payload, list) else []


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001 - a header this broken just means "unknown"
        return "text/plain"


def _pick_alternative(children: list[Message]) -> list[Message]:
    """Prefer a non-empty text/plain alternative; else the richest one (the last, per RFC 2046)."""
    for child in children:
        if _content_type(child) == "text/plain" and not _is_attachment(child):
            if _leaf_text(child, "text/plain").strip():
                return [child]
    return children[-1:]


def _is_attachment(part: Message) -> bool:
    """An explicit attachment (a named text part shown inline still counts as body text)."""
    disposition = str(part.get("content-disposition", "")).lower()
    return disposition.strip().startswith("attachment")


def _filename(part: Message) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
        if isinstance(name, tuple):  # RFC 2231 value not collapsed by compat32
            name = email.utils.collapse_rfc2231_value(name)
    except Exception:  # noqa: BLE001 - malformed parameters, charsets Python cannot decode
        return ""
    return _WS.sub(" ", decode_header_value(str(name)[:200])).strip()


def _leaf_text(part: Message, ctype: str) -> str:
    """Text of a non-multipart part; attachments and non-text parts become a one-line marker."""
    if ctype == "message/rfc822" or ctype.startswith("message/"):
        return ""  # compat32 gives these a list payload; handled as multipart above
    if ctype.startswith("multipart/"):
        # Declared multipart, but no boundary (or none found) to split it by: its body is text
        # all the same, and hiding it behind a broken boundary must not hide it from the model.
        ctype = "text/plain"
    if not ctype.startswith("text/") or _is_attachment(part):
        return f"[attachment {_filename(part) or 'unnamed'} {ctype}]"
    data = _payload_bytes(part)
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001
        charset = None
    if ctype == "text/html":
        return html_to_text(_decode_bytes(data, charset, MAX_HTML_CHARS)[:MAX_HTML_CHARS])
    return _decode_bytes(data, charset)[:MAX_PART_CHARS]


def _payload_bytes(part: Message) -> bytes:
    """The decoded (QP/base64) payload, falling back to the raw payload if decoding fails."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - broken transfer encodings
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


# Codecs Python accepts as a charset name that are not mail charsets; punycode's decoder is
# quadratic (400 KB of "9": 20 s), so a hostile part must not reach them.
_NOT_CHARSETS = frozenset(("punycode", "idna", "unicode-escape", "raw-unicode-escape"))


def _decode_bytes(data: bytes, charset: str | None, limit: int = MAX_PART_CHARS) -> str:
    """Decode with the declared charset, then UTF-8, then cp1252; never raises.

    Only the bytes that can hold the *limit* characters kept are decoded (4 per character)."""
    data = data[: 4 * limit]
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        codec = candidate.strip().strip('"').lower()
        try:
            if codecs.lookup(codec).name in _NOT_CHARSETS:
                continue
        except (LookupError, ValueError, TypeError):
            continue
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and exc.end == len(data):
                # Cut mid-character by a size cap: keep everything before the cut.
                try:
                    return data[: exc.start].decode(codec)
                except Exception:  # noqa: BLE001
                    continue
            continue
        except (LookupError, UnicodeError, ValueError, TypeError):
            continue
        except Exception:  # noqa: BLE001 - exotic codecs may raise anything
            continue
    return data.decode("cp1252", "replace")


# --- HTML ----------------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    "p br div li tr td th h1 h2 h3 h4 h5 h6 table ul ol hr blockquote pre title".split()
)
_SKIP_TAGS = frozenset(("script", "style", "head", "noscript", "template"))


class _TextExtractor(HTMLParser):
    """Collects visible text and link targets; skips script/style/head content."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if href.startswith(("http://", "https://")):
                self.parts.append(f" {href[:200]} ")
        elif tag == "img":
            alt = dict(attrs).get("alt") or ""
            if alt:
                self.parts.append(f" {alt[:200]} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


_BLANKS = re.compile(r"[ \t\r\f\v]+")
_NEWLINES = re.compile(r"\n\s*\n+")


# A "<" whose tag (or comment) does not close within this many characters is read as text.
# html.parser rescans from such a "<" to the end of the input, once per "<": "<a b" * 20,000
# (80 KB) took 33 s. Real tags close within a few hundred characters.
_TAG_REACH = 4_000


# Marked sections ("<![CDATA[ ... ]]>", Word's "<![if ...]> ... <![endif]>"): html.parser
# searches from each one to the end of the input for its close ("<![if>" * 50,000, 300 KB: 3.3
# s), and stops reading at one with another keyword (AssertionError), hiding the rest.
_SECTION_KEYWORD = re.compile(r"<!\[\s*([a-zA-Z][-_.a-zA-Z0-9]*)")
_SECTION_CLOSES = {"cdata": re.compile(r"]\s*]\s*>"), "if": re.compile(r"]\s*>")}
_SECTION_KINDS = {"temp": "cdata", "cdata": "cdata", "ignore": "cdata", "include": "cdata",
                  "rcdata": "cdata", "if": "if", "else": "if", "endif": "if"}


def _last_match_starts(html: str) -> dict[str, int]:
    """Per kind of marked section, where the last possible close of one starts (-1: none)."""
    if "<![" not in html:
        return {}
    last = {}
    for kind, close in _SECTION_CLOSES.items():
        starts = [m.start() for m in close.finditer(html)]
        last[kind] = starts[-1] if starts else -1
    return last


def _escape_unclosed_tags(html: str) -> str:
    """*html* with every "<" that starts no closed tag within reach written as "&lt;", and
    marked sections that cannot close, or that html.parser does not know, too."""
    out: list[str] = []
    start = 0
    nowhere = len(html) + _TAG_REACH + 1  # "none further on": never looked up again
    next_gt = next_comment_end = -1
    section_closes = _last_match_starts(html)
    i = html.find("<")
    while i >= 0:
        if section_closes and html.startswith("<![", i):  # none in most mail: one test less
            keyword = _SECTION_KEYWORD.match(html, i)
            kind = _SECTION_KINDS.get(keyword.group(1).lower()) if keyword else None
            # It closes if a close of its kind starts after its keyword; the parser then jumps
            # past that close, so the searches never overlap.
            closes = kind is not None and section_closes[kind] >= i + 3
        elif html.startswith("<!--", i):
            if next_comment_end < i:
                found = html.find("-->", i + 4)
                next_comment_end = found if found >= 0 else nowhere
            closes = next_comment_end != nowhere  # a comment may be long; it only has to end
        else:
            if next_gt < i:
                found = html.find(">", i)
                next_gt = found if found >= 0 else nowhere
            closes = next_gt - i <= _TAG_REACH
        if not closes:
            out.append(html[start:i])
            out.append("&lt;")
            start = i + 1
        i = html.find("<", i + 1)
    if not out:
        return html
    out.append(html[start:])
    return "".join(out)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document (whitespace collapsed); never raises."""
    parser = _TextExtractor()
    try:
        parser.feed(_escape_unclosed_tags(html))
        parser.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient, but keep what we have
        pass
    text = _BLANKS.sub(" ", "".join(parser.parts))
    return _NEWLINES.sub("\n", text).strip()
