"""Re-dressing training messages (model.augment): what changes, what must not."""

from __future__ import annotations

import random

import pytest

from model.augment import redress, redress_share, rewrap_email, text_as_email
from model.data import Example, example_text
from model.email import email_to_text, parse_message

MAIL = (
    b"Received: from relay.example.net by mx.example.org\r\n"
    b"From: Shop <offers@shop.example>\r\n"
    b"Subject: Big =?utf-8?q?sale?=\r\n"
    b"X-Mailer: MassMailer 3.1\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain;\r\n charset=utf-8\r\n"
    b"\r\n"
    b"Everything must go.\r\nReply STOP to end.\r\n"
)


def _examples(n: int) -> list[Example]:
    texts = [Example(f"t{i}", "ham", "train", "sms", None, f"see you at {i}") for i in range(n)]
    mails = [Example(f"m{i}", "spam", "train", "spamassassin/spam", MAIL, None) for i in range(n)]
    return texts + mails


def test_share_replaces_in_place_and_is_seeded() -> None:
    exs = _examples(200)
    out = redress_share(exs, 0.25, seed=3)
    assert len(out) == len(exs)
    assert [e.id for e in out] == [e.id for e in exs]
    assert [e.label for e in out] == [e.label for e in exs]
    changed = sum(a is not b for a, b in zip(exs, out, strict=True))
    assert 60 <= changed <= 140  # about a quarter of 400
    again = redress_share(exs, 0.25, seed=3)
    assert [e.raw for e in again] == [e.raw for e in out]
    assert redress_share(exs, 0.0, seed=3) == exs
    assert all(a is not b for a, b in zip(exs, redress_share(exs, 1.0, seed=3), strict=True))


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="within 0..1"):
        redress_share(_examples(2), share, seed=1)


def test_text_becomes_an_email_in_plain_or_html_with_the_same_words() -> None:
    text = "Call 0800 123 now & win <£500>!\nReply YES"
    seen = set()
    for seed in range(12):
        raw = text_as_email(text, random.Random(seed))
        seen.add(parse_message(raw).get_content_type())
        model_text = email_to_text(raw)
        assert model_text.startswith("Subject:")  # judged as an email by the per-kind cut
        assert "Call 0800 123 now & win <£500>!" in model_text
        assert "Reply YES" in model_text
    assert seen == {"text/plain", "text/html"}


def test_email_keeps_its_body_and_mime_headers_and_loses_the_rest() -> None:
    for seed in range(12):
        raw = rewrap_email(MAIL, random.Random(seed))
        assert raw.endswith(b"\r\n\r\nEverything must go.\r\nReply STOP to end.\r\n")
        msg = parse_message(raw)
        assert msg.get_content_charset() == "utf-8"  # the folded field is kept whole
        assert msg["Received"] is None and msg["X-Mailer"] is None
        assert "shop.example" not in (msg["From"] or "")
        if msg["From"] is not None:  # the rewritten kind keeps the subject
            assert "sale" in email_to_text(raw).splitlines()[0]


def test_email_without_a_body_is_left_alone() -> None:
    assert rewrap_email(b"Subject: hi\r\nX-A: b\r\n", random.Random(1)) == (
        b"Subject: hi\r\nX-A: b\r\n"
    )


def test_redress_keeps_label_and_gives_the_model_an_email() -> None:
    rng = random.Random(5)
    sms = Example("s", "spam", "train", "sms", None, "WIN a prize, txt 87121")
    dressed = redress(sms, rng)
    assert dressed.label == "spam" and dressed.text is None and dressed.raw is not None
    assert "WIN a prize, txt 87121" in example_text(dressed)
