"""Re-dressing: a share of the training messages is shown to the model in another wrapper.

A model that reads headers learns the wrappers of its training mail. An SMS sent as an HTML
email, or mail whose headers a gateway replaced, then looks unlike anything it saw, and the
wrapper alone can move the score. Training on some messages re-dressed — a plain text as a
made-up email (plain or HTML), an email with its headers stripped to the MIME ones or replaced —
teaches it that the wrapper is no evidence of either label. Only `streamclf train --redress`
uses this. The names, domains, dates and HTML layout here are not those of the robustness
benchmark (`benchmarks/accuracy.py`), which keeps measuring wrappers the model has not seen.
"""

from __future__ import annotations

import html
import random
import re
from collections.abc import Sequence
from dataclasses import replace

from model.data import Example

__all__ = ["redress", "redress_share"]

_FIRST = ("Alex", "Maria", "Chen", "Fatima", "Jonas", "Priya", "Tom", "Ines", "Kofi", "Olga")
_LAST = ("Novak", "Garcia", "Okafor", "Lindqvist", "Sato", "Moreau", "Rossi", "Brennan")
_DOMAINS = ("mailbox.org", "fastmail.com", "posteo.net", "web.de", "outlook.com",
            "proton.me", "orange.fr", "libero.it", "yahoo.co.uk", "uni-example.edu")
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_DAYS = "Mon Tue Wed Thu Fri Sat Sun".split()
# Header fields a re-dressed email keeps: those that say how to read the body.
_MIME_FIELD = re.compile(rb"(?i)(content-|mime-version)")
_SUBJECT_FIELD = re.compile(rb"(?i)subject:")
_BODY_START = re.compile(rb"\r?\n\r?\n")
_FIELD_START = re.compile(rb"(?m)^(?=[^ \t\r\n])")


def redress_share(examples: Sequence[Example], share: float, seed: int) -> list[Example]:
    """The examples with a random `share` of them re-dressed (same order, same count).

    Replaced, not added: each message is still seen once per epoch, so the class balance and
    the token pairs counted "in two or more training texts" stay as they were.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"redress share must be within 0..1, got {share}")
    rng = random.Random(seed)
    return [redress(ex, rng) if rng.random() < share else ex for ex in examples]


def redress(ex: Example, rng: random.Random) -> Example:
    """One example in another wrapper: plain text → email, email → other headers."""
    if ex.raw is None:
        return replace(ex, raw=text_as_email(ex.text or "", rng), text=None)
    return replace(ex, raw=rewrap_email(ex.raw, rng))


def text_as_email(text: str, rng: random.Random) -> bytes:
    """A plain text as a made-up personal email, its body plain or HTML."""
    as_html = rng.random() < 0.5
    body = _as_html(text) if as_html else text
    subtype = "html" if as_html else "plain"
    head = [*_made_up_sender_lines(rng), "Subject: ", "MIME-Version: 1.0",
            f"Content-Type: text/{subtype}; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    return ("\n".join(head) + "\n\n" + body + "\n").encode("utf-8")


def rewrap_email(raw: bytes, rng: random.Random) -> bytes:
    """The email with only its MIME headers; half the time also its subject and a made-up
    sender, date and id (as a gateway that rewrites the routing would leave it)."""
    match = _BODY_START.search(raw)
    if match is None:
        return raw  # no body: nothing to re-dress
    fields = [f for f in _FIELD_START.split(raw[: match.start()] + b"\n") if f.strip()]
    kept = [f.rstrip(b"\r\n") for f in fields if _MIME_FIELD.match(f)]
    if rng.random() < 0.5:
        subject = [f.rstrip(b"\r\n") for f in fields if _SUBJECT_FIELD.match(f)]
        kept = [line.encode("utf-8") for line in _made_up_sender_lines(rng)] + subject + kept
    newline = b"\r\n" if match.group().startswith(b"\r") else b"\n"
    return newline.join(kept) + newline * 2 + raw[match.end():]


def _made_up_sender_lines(rng: random.Random) -> list[str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    domain = rng.choice(_DOMAINS)
    day = rng.randint(1, 28)
    date = (f"{rng.choice(_DAYS)}, {day:02d} {rng.choice(_MONTHS)} {rng.randint(2004, 2026)} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 +0000")
    return [
        f"From: {first} {last} <{first.lower()}.{last.lower()}@{domain}>",
        f"To: {rng.choice(_FIRST)} <{rng.choice(_FIRST).lower()}@{rng.choice(_DOMAINS)}>",
        f"Date: {date}",
        f"Message-ID: <{rng.getrandbits(48):012x}@{domain}>",
    ]


def _as_html(text: str) -> str:
    lines = "".join(f"<div>{html.escape(line) or '<br>'}</div>\n" for line in text.splitlines())
    return f"<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n{lines}</body></html>"
